package uplink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldgate/fieldgate/internal/peertest"
	"github.com/fieldgate/fieldgate/internal/testpki"
	"github.com/fieldgate/fieldgate/internal/testwait"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
	"github.com/fieldgate/fieldgate/store"
)

// The test harness: a local broker with an outbox and a bridge (the
// gateway), and cloud brokers to bridge to: another fieldgate broker (with
// a QUIC listener) in the test process, or Debian's mosquitto (TCP, TLS) in
// a child process.

const waitFor = 10 * time.Second

// testOutbox adapts store.Outbox to Outbox, as the gateway does.
type testOutbox struct{ q *store.Outbox }

func (o testOutbox) Append(ctx context.Context, data []byte, expiry time.Time) (uint64, error) {
	seq, err := o.q.Append(ctx, store.OutboxRecord{Data: data, Expiry: expiry})
	if errors.Is(err, store.ErrOutboxFull) {
		err = fmt.Errorf("%w: %w", ErrOutboxFull, err)
	}
	return seq, err
}

func (o testOutbox) AppendAsync(data []byte, expiry time.Time) error {
	return o.q.AppendAsync(store.OutboxRecord{Data: data, Expiry: expiry})
}

func (o testOutbox) Read(after uint64, max int) ([]Entry, error) {
	es, err := o.q.Read(after, max, nil)
	out := make([]Entry, len(es))
	for i, e := range es {
		out[i] = Entry{Seq: e.Seq, Data: e.Data, Appended: e.Appended}
	}
	return out, err
}

func (o testOutbox) Wait(ctx context.Context, after uint64) error { return o.q.Wait(ctx, after) }
func (o testOutbox) Ack(seqs ...uint64) error                     { return o.q.Ack(seqs...) }

func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn + 4 // quiet: failures are expected in many tests
	if os.Getenv("FIELDGATE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// broker starts an in-process broker on loopback (TCP; QUIC too when pki
// is given) and stops it at test end.
func startBroker(t testing.TB, pki *testpki.PKI, mutate func(*mqtt.Config)) *mqtt.Broker {
	t.Helper()
	cfg := mqtt.DefaultConfig()
	cfg.Listeners.TCP.Address = "127.0.0.1:0"
	cfg.Listeners.WebSocket.Enabled = false
	if pki != nil {
		cfg.Listeners.TLS.TLSFiles = mqtt.TLSFiles{Cert: pki.CertFile, Key: pki.KeyFile, MinVersion: "1.2"}
		cfg.Listeners.QUIC.Enabled = true
		cfg.Listeners.QUIC.Address = "127.0.0.1:0"
	}
	if mutate != nil {
		mutate(&cfg)
	}
	b, err := mqtt.New(cfg, mqtt.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("broker: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return b
}

// edge is the gateway under test: broker, outbox and bridge.
type edge struct {
	broker *mqtt.Broker
	outbox *store.Outbox
	bridge *Bridge
	cancel context.CancelFunc
	done   chan struct{}
}

// startEdge starts a gateway whose uplink has cfg (Enabled is set).
func startEdge(t testing.TB, cfg Config, obox store.OutboxOptions) *edge {
	t.Helper()
	e := &edge{broker: startBroker(t, nil, nil)}
	if obox.Dir == "" {
		obox.Dir = filepath.Join(t.TempDir(), "outbox")
	}
	q, err := store.OpenOutbox(obox)
	if err != nil {
		t.Fatalf("outbox: %v", err)
	}
	e.outbox = q
	cfg.Enabled = true
	e.bridge, err = New(cfg, Options{Bus: e.broker, Outbox: testOutbox{q}, GatewayID: "gw1", Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("bridge: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	go func() { defer close(e.done); _ = e.bridge.Run(ctx) }()
	t.Cleanup(e.stop)
	return e
}

func (e *edge) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	<-e.done
	e.bridge.Close()
	_ = e.outbox.Close()
	e.cancel = nil
}

// testConfig is an uplink config for fast tests: short timeouts and
// backoff, forward everything under sensors/ to gateways/gw1/...
func testConfig(servers ...Server) Config {
	c := DefaultConfig()
	c.Servers = servers
	c.ConnectTimeout = time.Second
	c.BackoffMin = 50 * time.Millisecond
	c.BackoffMax = 500 * time.Millisecond
	c.QUICProbe = time.Second
	c.KeepAlive = 5 * time.Second
	c.QUIC.IdleTimeout = 10 * time.Second
	c.QUIC.KeepAlive = time.Second
	c.Forward = []ForwardRule{{Filter: "sensors/#", RemoteTopic: "gateways/{gateway_id}/{topic}", QoS: 1}}
	return c
}

// port returns the port of a host:port address.
func port(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// client is an MQTT 5 test client (paho.golang, one goroutine at a time)
// with a channel of what it receives.
type client struct {
	*paho.Client
	msgs chan *paho.Publish
}

func dial(t testing.TB, addr, id string) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, waitFor)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c := &client{msgs: make(chan *paho.Publish, 100000)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(p paho.PublishReceived) (bool, error) { c.msgs <- p.Packet; return true, nil },
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

func (c *client) subscribe(t testing.TB, filter string, qos byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}}); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
}

func (c *client) publish(t testing.TB, topic string, qos byte, payload string) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	r, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
	if err != nil && (r == nil || r.ReasonCode < 0x80) {
		t.Fatalf("publish %s: %v", topic, err)
	}
	return r // a refusal comes back with its reason code
}

// collect reads n messages from c, failing after waitFor without progress,
// and returns their payloads grouped by topic.
func (c *client) collect(t testing.TB, n int) map[string][]string {
	t.Helper()
	got := map[string][]string{}
	for i := 0; i < n; i++ {
		select {
		case m := <-c.msgs:
			got[m.Topic] = append(got[m.Topic], string(m.Payload))
		case <-time.After(waitFor):
			t.Fatalf("received %d of %d messages", i, n)
		}
	}
	return got
}

// checkInOrder checks that each topic's payloads are 0..n-1 in order, each
// at least once, and returns the number of duplicates.
func checkInOrder(t testing.TB, got map[string][]string, perTopic int) int {
	t.Helper()
	dups := 0
	for topic, ps := range got {
		next := 0
		for _, p := range ps {
			n, err := strconv.Atoi(p)
			if err != nil {
				t.Fatalf("%s: payload %q", topic, p)
			}
			switch {
			case n == next:
				next++
			case n < next:
				dups++ // a resend after a reconnect
			default:
				t.Fatalf("%s: got %d, expected %d (lost or out of order)", topic, n, next)
			}
		}
		if next != perTopic {
			t.Fatalf("%s: got %d of %d", topic, next, perTopic)
		}
	}
	return dups
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, waitFor, what, cond)
}

// mosquitto is Debian's broker in a child process.
type mosquitto struct {
	cmd  *exec.Cmd
	conf string
	port int
	// plainPort is a second, plain TCP listener for test clients when port
	// is TLS (paho.golang splits packets across concurrent writes, which
	// corrupts a TLS stream).
	plainPort int
	mu        sync.Mutex
}

// startMosquitto runs mosquitto with the given listener lines on a free
// port (tls: with the PKI's server certificate).
func startMosquitto(t testing.TB, pki *testpki.PKI, port int) *mosquitto {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, err = os.Stat("/usr/sbin/mosquitto"); err != nil {
			peertest.Missing(t, "mosquitto not installed", "apt-get install mosquitto")
		}
		bin = "/usr/sbin/mosquitto"
	}
	if port == 0 {
		port = freePort(t)
	}
	var b strings.Builder
	plain := port
	if pki != nil {
		plain = freePort(t)
	}
	fmt.Fprintf(&b, "user root\nallow_anonymous true\npersistence false\nlistener %d 127.0.0.1\n", plain)
	if pki != nil {
		fmt.Fprintf(&b, "listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n", port, pki.CAFile, pki.CertFile, pki.KeyFile)
	}
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &mosquitto{conf: conf, port: port, plainPort: plain}
	m.start(t, bin)
	t.Cleanup(m.stop)
	return m
}

func (m *mosquitto) start(t testing.TB, bin string) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cmd = exec.Command(bin, "-c", m.conf)
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("mosquitto: %v", err)
	}
	eventually(t, "mosquitto listening", func() bool {
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port)))
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
}

func (m *mosquitto) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil && m.cmd.Process != nil {
		_ = m.cmd.Process.Kill()
		_ = m.cmd.Wait()
		m.cmd = nil
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
