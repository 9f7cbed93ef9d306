package mqttsn

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/testwait"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// waitFor bounds every wait of the tests.
const waitFor = 5 * time.Second

// env is a broker and a gateway on loopback, stopped at test end.
type env struct {
	b *mqtt.Broker
	g *Gateway
}

// testLogger sends logs to t.Log (shown for failing tests only).
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("FIELDGATE_TEST_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if _, fuzz := t.(*testing.F); fuzz {
		// *testing.F may not be used while its fuzz function runs.
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// testConfig is the default gateway config on loopback with fast retries.
func testConfig() Config {
	c := DefaultConfig()
	c.Address = "127.0.0.1:0"
	c.RetryInterval = 200 * time.Millisecond
	c.RetryCount = 2
	c.PredefinedTopics = []PredefinedTopic{{ID: 1, Topic: "predef/one"}, {ID: 2, Topic: "predef/two"}}
	return c
}

// startEnv starts a broker (changed by mb) and a gateway (changed by mg).
func startEnv(t testing.TB, mb func(*mqtt.Config), mg func(*Config)) *env {
	t.Helper()
	return startEnvOpts(t, mb, mg)
}

// startEnvOpts is startEnv with options for New.
func startEnvOpts(t testing.TB, mb func(*mqtt.Config), mg func(*Config), opts ...Option) *env {
	t.Helper()
	log := testLogger(t)
	bc := mqtt.DefaultConfig()
	bc.Listeners.TCP.Address = "127.0.0.1:0"
	bc.Listeners.TLS.Enabled = false
	bc.Listeners.WebSocket.Enabled = false
	if mb != nil {
		mb(&bc)
	}
	b, err := mqtt.New(bc, mqtt.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	bctx, bcancel := context.WithCancel(context.Background())
	bdone := make(chan error, 1)
	go func() { bdone <- b.Run(bctx) }()

	gc := testConfig()
	if mg != nil {
		mg(&gc)
	}
	g, err := New(gc, b, log, opts...)
	if err != nil {
		bcancel()
		<-bdone
		t.Fatal(err)
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
	return &env{b: b, g: g}
}

// watch subscribes on the bus to filter and returns what arrives.
func (e *env) watch(t testing.TB, filter string) <-chan bus.Message {
	t.Helper()
	ch := make(chan bus.Message, 1000)
	unsub, err := e.b.Subscribe(filter, func(m bus.Message) {
		if strings.HasPrefix(m.Topic, "$") {
			return
		}
		select {
		case ch <- m:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unsub)
	return ch
}

// next waits for one message.
func next(t testing.TB, ch <-chan bus.Message) bus.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(waitFor):
		t.Fatal("no message")
		return bus.Message{}
	}
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, waitFor, what, cond)
}

// snClient is a minimal MQTT-SN v1.2 client written from the
// specification, speaking over its own UDP socket.
type snClient struct {
	t    testing.TB
	conn *net.UDPConn
	gw   *net.UDPAddr
	node []byte // behind a forwarder: the wireless node id, and conn is the forwarder's
}

// dial opens a client socket towards the gateway.
func (e *env) dial(t testing.TB) *snClient {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &snClient{t: t, conn: conn, gw: e.g.Addr().(*net.UDPAddr)}
}

// dialForwarder returns one client per wireless node id, all behind one
// forwarder socket (spec section 5.5): what each sends is encapsulated.
func (e *env) dialForwarder(t testing.TB, nodes ...string) []*snClient {
	t.Helper()
	fwd := e.dial(t)
	cs := make([]*snClient, len(nodes))
	for i, n := range nodes {
		cs[i] = &snClient{t: t, conn: fwd.conn, gw: fwd.gw, node: []byte(n)}
	}
	return cs
}

func (c *snClient) send(p Packet) {
	c.t.Helper()
	var b []byte
	if c.node != nil {
		var err error
		if b, err = Wrap(nil, Encapsulation{NodeID: c.node}, nil); err != nil {
			c.t.Fatal(err)
		}
	}
	b, err := Encode(b, p)
	if err != nil {
		c.t.Fatal(err)
	}
	c.raw(b)
}

func (c *snClient) raw(b []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDP(b, c.gw); err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next packet within d, or false.
func (c *snClient) recv(d time.Duration) (Packet, bool) {
	c.t.Helper()
	buf := make([]byte, 70000)
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	n, _, err := c.conn.ReadFromUDP(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return Packet{}, false
		}
		c.t.Fatal(err)
	}
	msg := buf[:n]
	enc, inner, wrapped, err := Unwrap(msg)
	switch {
	case err != nil:
		c.t.Fatalf("gateway sent a bad encapsulation % x: %v", msg, err)
	case wrapped != (c.node != nil):
		c.t.Fatalf("encapsulated %v, want %v: % x", wrapped, c.node != nil, msg)
	case wrapped && string(enc.NodeID) != string(c.node):
		c.t.Fatalf("encapsulated for node %q, want %q", enc.NodeID, c.node)
	case wrapped:
		msg = inner
	}
	p, err := Decode(msg)
	if err != nil {
		c.t.Fatalf("gateway sent an undecodable datagram % x: %v", msg, err)
	}
	return p, true
}

// expect returns the next packet and fails unless it has type typ.
func (c *snClient) expect(typ MsgType) Packet {
	c.t.Helper()
	p, ok := c.recv(waitFor)
	if !ok {
		c.t.Fatalf("no %s", typ)
	}
	if p.Type != typ {
		c.t.Fatalf("got %s %+v, want %s", p.Type, p, typ)
	}
	return p
}

// silent fails if a packet arrives within d.
func (c *snClient) silent(d time.Duration) {
	c.t.Helper()
	if p, ok := c.recv(d); ok {
		c.t.Fatalf("unexpected %s %+v", p.Type, p)
	}
}

// connect connects without a will and requires CONNACK accepted.
func (c *snClient) connect(id string, clean bool, keepAlive uint16) {
	c.t.Helper()
	c.send(Packet{Type: TypeConnect, Flags: Flags{CleanSession: clean}, ProtocolID: 1, Duration: keepAlive, ClientID: id})
	if ack := c.expect(TypeConnack); ack.ReturnCode != Accepted {
		c.t.Fatalf("CONNACK 0x%02x", ack.ReturnCode)
	}
}

// register registers a topic name and returns its id.
func (c *snClient) register(name string, msgID uint16) uint16 {
	c.t.Helper()
	c.send(Packet{Type: TypeRegister, MsgID: msgID, TopicName: name})
	ack := c.expect(TypeRegack)
	if ack.ReturnCode != Accepted || ack.MsgID != msgID || ack.TopicID == 0 {
		c.t.Fatalf("REGACK %+v", ack)
	}
	return ack.TopicID
}

// subscribe subscribes to a topic name and returns the SUBACK.
func (c *snClient) subscribe(name string, qos int8, msgID uint16) Packet {
	c.t.Helper()
	c.send(Packet{Type: TypeSubscribe, Flags: Flags{QoS: qos}, MsgID: msgID, TopicName: name})
	ack := c.expect(TypeSuback)
	if ack.ReturnCode != Accepted || ack.MsgID != msgID {
		c.t.Fatalf("SUBACK %+v", ack)
	}
	return ack
}
