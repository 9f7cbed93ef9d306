package coap

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
	"golang.org/x/crypto/bcrypt"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/secret"
	"github.com/fieldgate/fieldgate/internal/testwait"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// env is a real broker and a real gateway on loopback ports.
type env struct {
	t    testing.TB
	b    *mqtt.Broker
	g    *Gateway
	addr string
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("FIELDGATE_TEST_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelError}))
}

// brokerConfig has user alice/secret and an ACL denying alice "denied/#".
func brokerConfig(t testing.TB) mqtt.Config {
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := mqtt.DefaultConfig()
	cfg.Listeners.TCP.Address = "127.0.0.1:0"
	cfg.Listeners.TLS.Enabled = false
	cfg.Listeners.WebSocket.Enabled = false
	cfg.Auth.Users = []mqtt.User{{Username: "alice", PasswordHash: secret.New(string(hash))}}
	cfg.ACL = []mqtt.ACLRule{
		{Username: "alice", Topic: "denied/#", Action: "all", Permission: "deny"},
		{Topic: "#", Action: "all", Permission: "allow"},
	}
	return cfg
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Address = "127.0.0.1:0"
	cfg.DTLS.Address = "127.0.0.1:0"
	cfg.AckTimeout = 5 * time.Second
	return cfg
}

func startEnv(t testing.TB, mutB func(*mqtt.Config), mutC func(*Config)) *env {
	t.Helper()
	return startEnvOpts(t, mutB, mutC)
}

// startEnvOpts is startEnv with options for New.
func startEnvOpts(t testing.TB, mutB func(*mqtt.Config), mutC func(*Config), opts ...Option) *env {
	t.Helper()
	return startEnvLog(t, testLogger(t), mutB, mutC, opts...)
}

// startEnvLog is startEnvOpts with the broker and gateway logging to log.
func startEnvLog(t testing.TB, log *slog.Logger, mutB func(*mqtt.Config), mutC func(*Config), opts ...Option) *env {
	t.Helper()
	bcfg := brokerConfig(t)
	if mutB != nil {
		mutB(&bcfg)
	}
	b, err := mqtt.New(bcfg, mqtt.Options{Logger: log})
	if err != nil {
		t.Fatalf("broker: %v", err)
	}
	bctx, bcancel := context.WithCancel(context.Background())
	bdone := make(chan error, 1)
	go func() { bdone <- b.Run(bctx) }()
	cfg := testConfig()
	if mutC != nil {
		mutC(&cfg)
	}
	g, err := New(cfg, b, log, opts...)
	if err != nil {
		bcancel()
		<-bdone
		t.Fatalf("gateway: %v", err)
	}
	gctx, gcancel := context.WithCancel(context.Background())
	gdone := make(chan error, 1)
	go func() { gdone <- g.Run(gctx) }()
	t.Cleanup(func() {
		gcancel()
		if err := <-gdone; err != nil {
			t.Errorf("gateway Run: %v", err)
		}
		bcancel()
		<-bdone
	})
	return &env{t: t, b: b, g: g, addr: g.Addr().String()}
}

// dial returns a go-coap UDP client of the gateway, closed at test end.
func (e *env) dial() *udpClient.Conn {
	e.t.Helper()
	cc, err := udp.Dial(e.addr)
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	e.t.Cleanup(func() { _ = cc.Close(); <-cc.Done() })
	return cc
}

// capture subscribes on the bus and returns what arrives.
func (e *env) capture(filter string) <-chan bus.Message {
	e.t.Helper()
	ch := make(chan bus.Message, 256)
	unsub, err := e.b.Subscribe(filter, func(m bus.Message) {
		select {
		case ch <- m:
		default:
		}
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(unsub)
	return ch
}

// query builds Uri-Query options.
func query(kv ...string) []message.Option {
	out := make([]message.Option, 0, len(kv))
	for _, s := range kv {
		out = append(out, message.Option{ID: message.URIQuery, Value: []byte(s)})
	}
	return out
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// do sends a request of method/type to path and returns code and payload.
func do(t testing.TB, cc *udpClient.Conn, method codes.Code, typ message.Type, path string, cf *message.MediaType, payload []byte, opts ...message.Option) (codes.Code, []byte) {
	t.Helper()
	ctx := ctxT(t)
	var req *pool.Message
	var err error
	switch method {
	case codes.POST:
		req, err = cc.NewPostRequest(ctx, path, message.TextPlain, bytes.NewReader(payload), opts...)
	case codes.PUT:
		req, err = cc.NewPutRequest(ctx, path, message.TextPlain, bytes.NewReader(payload), opts...)
	case codes.GET:
		req, err = cc.NewGetRequest(ctx, path, opts...)
	case codes.DELETE:
		req, err = cc.NewDeleteRequest(ctx, path, opts...)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer cc.ReleaseMessage(req)
	if cf != nil {
		req.SetContentFormat(*cf)
	} else if payload != nil {
		req.Remove(message.ContentFormat)
	}
	req.SetType(typ)
	resp, err := cc.Do(req)
	if err != nil {
		t.Fatalf("%v %s: %v", method, path, err)
	}
	defer cc.ReleaseMessage(resp)
	var body []byte
	if resp.Body() != nil {
		body, _ = io.ReadAll(resp.Body())
	}
	return resp.Code(), body
}

func recv(t testing.TB, ch <-chan bus.Message) bus.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
	}
	return bus.Message{}
}

func noMessage(t testing.TB, ch <-chan bus.Message, within time.Duration) {
	t.Helper()
	select {
	case m := <-ch:
		t.Fatalf("unexpected message %q on %s", m.Payload, m.Topic)
	case <-time.After(within):
	}
}

// eventually polls cond until it holds or 5 s passed.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, 5*time.Second, what, cond)
}

// numbered is a payload of n bytes in which every 8-byte line differs
// ("0000000\n0000001\n..."), so a block out of place shows.
func numbered(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%07d\n", i)
	}
	return b.Bytes()[:n]
}
