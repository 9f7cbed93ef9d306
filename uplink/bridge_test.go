package uplink

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/quic-go/quic-go"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/testpki"
	"github.com/fieldgate/fieldgate/internal/testwait"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
	"github.com/fieldgate/fieldgate/store"
)

// publishSeq publishes perTopic QoS 1 messages with payloads 0..perTopic-1
// on each of topics, from one local client per topic, concurrently.
func publishSeq(t *testing.T, local *mqtt.Broker, topics []string, perTopic int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, topic := range topics {
		c := dial(t, local.Addr("tcp"), "pub-"+strings.ReplaceAll(topic, "/", "-"))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perTopic {
				c.publish(t, topic, 1, fmt.Sprint(i))
			}
		}()
	}
	wg.Wait()
}

func topicsN(n int) []string {
	var ts []string
	for i := range n {
		ts = append(ts, fmt.Sprintf("sensors/s%d/v", i))
	}
	return ts
}

func TestForwardOverQUICToFieldgate(t *testing.T) {
	pki := testpki.New(t, "cloud CA")
	cloud := startBroker(t, pki, nil)
	sub := dial(t, cloud.Addr("tcp"), "cloud-sub")
	sub.subscribe(t, "gateways/#", 1)

	cfg := testConfig(Server{Host: "127.0.0.1", QUICPort: port(t, cloud.Addr("quic"))})
	cfg.Transport = "quic"
	cfg.TLS.CA = pki.CAFile
	e := startEdge(t, cfg, store.OutboxOptions{})
	eventually(t, "connected over QUIC", func() bool { st := e.bridge.Status(); return st.Connected && st.Transport == TransportQUIC })

	topics := topicsN(4)
	publishSeq(t, e.broker, topics, 250)
	got := sub.collect(t, 1000)
	if dups := checkInOrder(t, got, 250); dups != 0 {
		t.Errorf("%d duplicates on a clean run", dups)
	}
	if _, ok := got["gateways/gw1/sensors/s0/v"]; !ok {
		t.Fatalf("remote topics: %v", keys(got))
	}
	eventually(t, "outbox drained", func() bool { return e.outbox.Stats().Depth == 0 })
	if st := e.bridge.Status(); st.Forwarded < 1000 {
		t.Fatalf("forwarded %d", st.Forwarded)
	}
}

func TestForwardOverTLSAndTCPToMosquitto(t *testing.T) {
	pki := testpki.New(t, "cloud CA")
	for _, transport := range []string{TransportTLS, TransportTCP} {
		t.Run(transport, func(t *testing.T) {
			var m *mosquitto
			srv := Server{Host: "127.0.0.1"}
			if transport == TransportTLS {
				m = startMosquitto(t, pki, 0)
				srv.TLSPort = m.port
			} else {
				m = startMosquitto(t, nil, 0)
				srv.TCPPort = m.port
			}
			cfg := testConfig(srv)
			cfg.Transport = transport
			cfg.TLS.CA = pki.CAFile
			e := startEdge(t, cfg, store.OutboxOptions{})
			eventually(t, "connected", func() bool { return e.bridge.Status().Connected })
			sub := dialMosquitto(t, m, pki, "cloud-sub", true)
			sub.subscribe(t, "gateways/#", 1)
			publishSeq(t, e.broker, topicsN(3), 200)
			checkInOrder(t, sub.collect(t, 600), 200)
		})
	}
}

// dialMosquitto connects a test client to mosquitto (its TCP port is the
// only listener; with TLS the client verifies the PKI's CA).
func dialMosquitto(t *testing.T, m *mosquitto, pki *testpki.PKI, id string, clean bool) *client {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(m.plainPort))
	var conn net.Conn
	testwait.NoError(t, waitFor, func() error {
		var err error
		if conn, err = net.DialTimeout("tcp", addr, time.Second); err != nil {
			return fmt.Errorf("dial mosquitto: %w", err)
		}
		return nil
	})
	c := &client{msgs: make(chan *paho.Publish, 100000)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(p paho.PublishReceived) (bool, error) { c.msgs <- p.Packet; return true, nil },
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	cp := &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 30}
	if !clean {
		exp := uint32(3600)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &exp}
	}
	if _, err := c.Connect(ctx, cp); err != nil {
		t.Fatalf("connect to mosquitto: %v", err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

func readFile(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCloudOutageKeepsOrder(t *testing.T) {
	m := startMosquitto(t, nil, 0)
	// A persistent cloud subscriber: mosquitto keeps its session on disk
	// across the restart.
	dir := t.TempDir()
	conf := readFile(t, m.conf)
	conf = strings.Replace(conf, "persistence false", "persistence true\npersistence_location "+dir+"/\nmax_queued_messages 0", 1)
	if err := os.WriteFile(m.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	m.stop()
	m.start(t, "/usr/sbin/mosquitto")
	sub := dialMosquitto(t, m, nil, "cloud-sub", false)
	sub.subscribe(t, "gateways/#", 1)

	cfg := testConfig(Server{Host: "127.0.0.1", TCPPort: m.port})
	cfg.Transport = TransportTCP
	e := startEdge(t, cfg, store.OutboxOptions{})
	eventually(t, "connected", func() bool { return e.bridge.Status().Connected })

	topics := topicsN(2)
	c0 := dial(t, e.broker.Addr("tcp"), "pub")
	for i := range 100 {
		for _, tp := range topics {
			c0.publish(t, tp, 1, fmt.Sprint(i))
		}
	}
	// The cloud goes away (mosquitto saves its sessions on SIGTERM).
	_ = m.cmd.Process.Signal(os.Interrupt)
	_ = m.cmd.Wait()
	m.cmd = nil
	eventually(t, "disconnected", func() bool { return !e.bridge.Status().Connected })
	for i := 100; i < 400; i++ {
		for _, tp := range topics {
			c0.publish(t, tp, 1, fmt.Sprint(i))
		}
	}
	if d := e.outbox.Stats().Depth; d < 600 {
		t.Fatalf("outbox depth %d during the outage, want >= 600", d)
	}
	m.start(t, "/usr/sbin/mosquitto")
	eventually(t, "reconnected", func() bool { return e.bridge.Status().Connected })
	sub2 := dialMosquitto(t, m, nil, "cloud-sub", false)
	got := map[string][]string{}
	for k, v := range sub.collect(t, 0) {
		got[k] = v
	}
	// What arrived before the outage on the first connection, then the rest.
	first := drain(sub.msgs)
	for _, p := range first {
		got[p.Topic] = append(got[p.Topic], string(p.Payload))
	}
	rest := len(topics)*400 - len(first)
	for k, v := range sub2.collectAtLeast(t, rest) {
		got[k] = append(got[k], v...)
	}
	dups := checkInOrder(t, got, 400)
	t.Logf("outage: %d messages, %d duplicates, %d reconnects", len(topics)*400, dups, e.bridge.Status().Reconnects)
}

// drain returns what is waiting in ch without blocking.
func drain(ch chan *paho.Publish) []*paho.Publish {
	var out []*paho.Publish
	for {
		select {
		case m := <-ch:
			out = append(out, m)
		default:
			return out
		}
	}
}

// collectAtLeast collects until n messages arrived, then what follows
// within a short quiet period (duplicates).
func (c *client) collectAtLeast(t testing.TB, n int) map[string][]string {
	t.Helper()
	got := c.collect(t, n)
	for {
		select {
		case m := <-c.msgs:
			got[m.Topic] = append(got[m.Topic], string(m.Payload))
		case <-time.After(300 * time.Millisecond):
			return got
		}
	}
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// udpRelay forwards datagrams between one client and a target, or drops
// everything while blocked: a black hole for UDP on loopback.
type udpRelay struct {
	conn    *net.UDPConn
	target  *net.UDPAddr
	blocked atomic.Bool
	mu      sync.Mutex
	up      map[string]*net.UDPConn // client address → socket towards the target
}

func startRelay(t *testing.T, target string) *udpRelay {
	t.Helper()
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &udpRelay{conn: c, target: ta, up: map[string]*net.UDPConn{}}
	go r.run()
	t.Cleanup(func() {
		_ = c.Close()
		r.mu.Lock()
		for _, u := range r.up {
			_ = u.Close()
		}
		r.mu.Unlock()
	})
	return r
}

func (r *udpRelay) port() int { return r.conn.LocalAddr().(*net.UDPAddr).Port }

func (r *udpRelay) run() {
	buf := make([]byte, 65536)
	for {
		n, from, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if r.blocked.Load() {
			continue
		}
		r.mu.Lock()
		up, ok := r.up[from.String()]
		if !ok {
			up, err = net.DialUDP("udp", nil, r.target)
			if err != nil {
				r.mu.Unlock()
				continue
			}
			r.up[from.String()] = up
			go r.back(up, from)
		}
		r.mu.Unlock()
		_, _ = up.Write(buf[:n])
	}
}

func (r *udpRelay) back(up *net.UDPConn, to *net.UDPAddr) {
	buf := make([]byte, 65536)
	for {
		n, err := up.Read(buf)
		if err != nil {
			return
		}
		if r.blocked.Load() {
			continue
		}
		_, _ = r.conn.WriteToUDP(buf[:n], to)
	}
}

func TestAutoFallsBackToTLSAndReturnsToQUIC(t *testing.T) {
	pki := testpki.New(t, "cloud CA")
	cloud := startBroker(t, pki, func(c *mqtt.Config) {
		c.Listeners.TLS.Enabled = true
		c.Listeners.TLS.Address = "127.0.0.1:0"
	})
	relay := startRelay(t, cloud.Addr("quic"))
	sub := dial(t, cloud.Addr("tcp"), "cloud-sub")
	sub.subscribe(t, "gateways/#", 1)

	cfg := testConfig(Server{Host: "127.0.0.1", QUICPort: relay.port(), TLSPort: port(t, cloud.Addr("tls"))})
	cfg.Transport = "auto"
	cfg.TLS.CA = pki.CAFile
	cfg.KeepAlive = time.Second
	cfg.QUIC.IdleTimeout = 2 * time.Second
	cfg.QUIC.KeepAlive = 500 * time.Millisecond
	e := startEdge(t, cfg, store.OutboxOptions{})
	eventually(t, "connected over QUIC", func() bool { st := e.bridge.Status(); return st.Connected && st.Transport == TransportQUIC })
	c := dial(t, e.broker.Addr("tcp"), "pub")
	c.publish(t, "sensors/a", 1, "0")
	sub.collect(t, 1)

	relay.blocked.Store(true)
	blackholed := time.Now()
	testwait.NoError(t, 30*time.Second, func() error {
		if st := e.bridge.Status(); !st.Connected || st.Transport != TransportTLS {
			return fmt.Errorf("no fallback to TLS: %+v", st)
		}
		return nil
	})
	t.Logf("fell back to TLS %.1f s after UDP was black-holed (last error: %s)", time.Since(blackholed).Seconds(), e.bridge.Status().LastError)
	c.publish(t, "sensors/a", 1, "1")
	sub.collect(t, 1)

	relay.blocked.Store(false)
	restored := time.Now()
	eventually(t, "back on QUIC", func() bool { st := e.bridge.Status(); return st.Connected && st.Transport == TransportQUIC })
	t.Logf("back on QUIC %.1f s after UDP passed again", time.Since(restored).Seconds())
	c.publish(t, "sensors/a", 1, "2")
	if got := sub.collectAtLeast(t, 1); len(got["gateways/gw1/sensors/a"]) < 1 {
		t.Fatalf("nothing after the return to QUIC: %v", got)
	}
}

func TestOutboxFullPolicies(t *testing.T) {
	down := Server{Host: "127.0.0.1", TCPPort: freePort(t)} // nothing listens
	t.Run("refuse_new", func(t *testing.T) {
		cfg := testConfig(down)
		cfg.Transport = TransportTCP
		e := startEdge(t, cfg, store.OutboxOptions{MaxMessages: 10, Policy: store.RefuseNew})
		c := dial(t, e.broker.Addr("tcp"), "pub")
		refused := 0
		for i := range 15 {
			r := c.publish(t, "sensors/x", 1, fmt.Sprint(i))
			if r.ReasonCode == 0x97 {
				refused++
			}
		}
		if refused != 5 {
			t.Fatalf("%d publishes refused with 0x97, want 5", refused)
		}
		if st := e.bridge.Status(); st.Refused != 5 {
			t.Fatalf("refused counted %d", st.Refused)
		}
		if d := e.outbox.Stats().Drops.Full; d != 5 {
			t.Fatalf("outbox counted %d drops for full", d)
		}
	})
	t.Run("drop_oldest", func(t *testing.T) {
		m := startMosquitto(t, nil, 0)
		m.stop()
		cfg := testConfig(Server{Host: "127.0.0.1", TCPPort: m.port})
		cfg.Transport = TransportTCP
		e := startEdge(t, cfg, store.OutboxOptions{MaxMessages: 10})
		c := dial(t, e.broker.Addr("tcp"), "pub")
		for i := range 15 {
			if r := c.publish(t, "sensors/x", 1, fmt.Sprint(i)); r.ReasonCode != 0 {
				t.Fatalf("publish %d refused: 0x%02x", i, r.ReasonCode)
			}
		}
		if d := e.outbox.Stats().Drops.Full; d != 5 {
			t.Fatalf("outbox counted %d drops for full, want 5", d)
		}
		m.start(t, "/usr/sbin/mosquitto")
		sub := dialMosquitto(t, m, nil, "sub", true)
		sub.subscribe(t, "gateways/#", 1)
		// The subscriber may come after the bridge reconnected: publish a
		// marker and read until it.
		eventually(t, "reconnected", func() bool { return e.bridge.Status().Connected })
		c.publish(t, "sensors/x", 1, "marker")
		var seen []string
		for {
			m := recvMsg(t, sub.msgs)
			seen = append(seen, string(m.Payload))
			if string(m.Payload) == "marker" {
				break
			}
		}
		for _, p := range seen {
			if p == "0" || p == "4" {
				t.Fatalf("dropped oldest message %s was delivered: %v", p, seen)
			}
		}
	})
}

func recvMsg(t *testing.T, ch chan *paho.Publish) *paho.Publish {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(waitFor):
		t.Fatal("no message")
		return nil
	}
}

func TestDownlinkIsNotForwardedBack(t *testing.T) {
	pki := testpki.New(t, "cloud CA")
	cloud := startBroker(t, pki, nil)
	cloudSub := dial(t, cloud.Addr("tcp"), "cloud-sub")
	cloudSub.subscribe(t, "gateways/#", 1)

	cfg := testConfig(Server{Host: "127.0.0.1", QUICPort: port(t, cloud.Addr("quic"))})
	cfg.Transport = TransportQUIC
	cfg.TLS.CA = pki.CAFile
	cfg.Forward = []ForwardRule{{Filter: "#", RemoteTopic: "gateways/{gateway_id}/{topic}", QoS: 1}}
	cfg.Downlink = []DownlinkRule{{Filter: "commands/gw1/#", LocalTopic: "cmd/{suffix}", QoS: 1}}
	e := startEdge(t, cfg, store.OutboxOptions{})
	eventually(t, "connected", func() bool { return e.bridge.Status().Connected })
	local := dial(t, e.broker.Addr("tcp"), "local-sub")
	local.subscribe(t, "cmd/#", 1)

	cloudPub := dial(t, cloud.Addr("tcp"), "cloud-pub")
	// The downlink subscription is made right after the connection: retry
	// until the first command arrives.
	var m *paho.Publish
	eventually(t, "command delivered locally", func() bool {
		cloudPub.publish(t, "commands/gw1/pump/set", 1, "on")
		select {
		case m = <-local.msgs:
			return true
		case <-time.After(200 * time.Millisecond):
			return false
		}
	})
	if m.Topic != "cmd/pump/set" || string(m.Payload) != "on" {
		t.Fatalf("local command %s %q", m.Topic, m.Payload)
	}
	select {
	case back := <-cloudSub.msgs:
		t.Fatalf("downlinked message went back up as %s", back.Topic)
	case <-time.After(500 * time.Millisecond):
	}
	// A local publish on the same topic does go up.
	local.publish(t, "cmd/pump/set", 1, "local")
	if up := recvMsg(t, cloudSub.msgs); up.Topic != "gateways/gw1/cmd/pump/set" {
		t.Fatalf("local publish forwarded as %s", up.Topic)
	}
	if e.bridge.Status().Downlinked < 1 {
		t.Fatal("downlink not counted")
	}
}

func TestConnectFailuresAreClearAndLeakNothing(t *testing.T) {
	pki := testpki.New(t, "cloud CA")
	other := testpki.New(t, "another CA")
	cloud := startBroker(t, pki, func(c *mqtt.Config) {
		c.Listeners.TLS.Enabled = true
		c.Listeners.TLS.Address = "127.0.0.1:0"
	})
	// A broker that wants a password.
	locked := startBroker(t, nil, func(c *mqtt.Config) { c.Auth.AllowAnonymous = false })
	// A TCP server that accepts and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	var held []net.Conn
	var heldMu sync.Mutex
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			heldMu.Lock()
			held = append(held, c)
			heldMu.Unlock()
		}
	}()
	defer func() {
		heldMu.Lock()
		for _, c := range held {
			_ = c.Close()
		}
		heldMu.Unlock()
	}()
	// A UDP socket that swallows everything (QUIC never answers).
	blackhole, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer blackhole.Close()
	// A QUIC listener with the wrong ALPN: a fieldgate QUIC listener is
	// "mqtt"; a TLS listener offered over QUIC cannot exist, so use h3.
	h3 := startH3(t, pki)

	cases := []struct {
		name      string
		transport string
		srv       Server
		ca        string
		want      string
	}{
		{"bad certificate", TransportTLS, Server{Host: "127.0.0.1", TLSPort: port(t, cloud.Addr("tls"))}, other.CAFile, "TLS verification failed"},
		{"bad certificate over QUIC", TransportQUIC, Server{Host: "127.0.0.1", QUICPort: port(t, cloud.Addr("quic"))}, other.CAFile, "TLS verification failed"},
		{"wrong ALPN", TransportQUIC, Server{Host: "127.0.0.1", QUICPort: h3}, pki.CAFile, "ALPN"},
		{"never answers (QUIC)", TransportQUIC, Server{Host: "127.0.0.1", QUICPort: blackhole.LocalAddr().(*net.UDPAddr).Port}, pki.CAFile, "no answer"},
		{"never answers (TCP)", TransportTCP, Server{Host: "127.0.0.1", TCPPort: port(t, silent.Addr().String())}, pki.CAFile, "no answer to CONNECT"},
		{"bad credentials", TransportTCP, Server{Host: "127.0.0.1", TCPPort: port(t, locked.Addr("tcp"))}, pki.CAFile, "bad credentials"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(tc.srv)
			cfg.Transport = tc.transport
			cfg.TLS.CA = tc.ca
			cfg.ConnectTimeout = 300 * time.Millisecond
			e := startEdge(t, cfg, store.OutboxOptions{})
			eventually(t, "an error in the status", func() bool { return e.bridge.Status().LastError != "" })
			st := e.bridge.Status()
			if !strings.Contains(st.LastError, tc.want) {
				t.Fatalf("last error %q, want it to say %q", st.LastError, tc.want)
			}
			t.Logf("status: %s", st.LastError)
		})
	}

	t.Run("100 failed reconnects leak nothing", func(t *testing.T) {
		cfg := testConfig(Server{Host: "127.0.0.1", TLSPort: port(t, cloud.Addr("tls"))})
		cfg.Transport = TransportTLS
		cfg.TLS.CA = other.CAFile
		cfg.BackoffMin, cfg.BackoffMax = 10*time.Millisecond, 10*time.Millisecond
		before := runtime.NumGoroutine()
		fdsBefore := openFDs(t)
		e := startEdge(t, cfg, store.OutboxOptions{})
		failures := func(n int64) func() error {
			return func() error {
				if got := e.failures(); got < n {
					return fmt.Errorf("only %d of %d failures", got, n)
				}
				return nil
			}
		}
		testwait.NoError(t, 30*time.Second, failures(100))
		midG, midFD := runtime.NumGoroutine(), openFDs(t)
		testwait.NoError(t, 30*time.Second, failures(200))
		endG, endFD := runtime.NumGoroutine(), openFDs(t)
		t.Logf("goroutines %d → %d (after 100 failures) → %d (after 200); fds %d → %d → %d", before, midG, endG, fdsBefore, midFD, endFD)
		if endG > midG+5 {
			t.Errorf("goroutines grew from %d to %d over 100 failed reconnects", midG, endG)
		}
		if endFD > midFD+3 {
			t.Errorf("file descriptors grew from %d to %d over 100 failed reconnects", midFD, endFD)
		}
	})
}

// failures is how many connection attempts failed so far.
func (e *edge) failures() int64 { return e.bridge.failures.Load() }

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

func TestTapRefusesWhenOutboxFails(t *testing.T) {
	// A closed outbox cannot take messages: QoS 1 publishers get 0x80, and
	// nothing already accepted is lost.
	local := startBroker(t, nil, nil)
	dir := t.TempDir()
	q, err := store.OpenOutbox(store.OutboxOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(Server{Host: "127.0.0.1", TCPPort: freePort(t)})
	cfg.Enabled, cfg.Transport = true, TransportTCP
	var logs lockedBuffer
	b, err := New(cfg, Options{Bus: local, Outbox: testOutbox{q}, GatewayID: "gw1",
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c := dial(t, local.Addr("tcp"), "pub")
	if r := c.publish(t, "sensors/1", 1, "kept"); r.ReasonCode != 0 {
		t.Fatalf("first publish: 0x%02x", r.ReasonCode)
	}
	_ = q.Close()
	for range 50 { // a flood of refusals writes one line a minute
		if r := c.publish(t, "sensors/1", 1, "refused"); r.ReasonCode != bus.ErrUnavailable.Code {
			t.Fatalf("publish with a closed outbox: 0x%02x", r.ReasonCode)
		}
	}
	if n := strings.Count(logs.String(), "outbox append failed"); n != 1 {
		t.Errorf("50 refused appends logged %d lines, want 1", n)
	}
	q2, err := store.OpenOutbox(store.OutboxOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Close()
	es, _ := q2.Read(0, 10, nil)
	if len(es) != 1 {
		t.Fatalf("after reopen: %d messages, want the 1 accepted", len(es))
	}
}

// startH3 runs a QUIC server that speaks only ALPN "h3" and returns its port.
func startH3(t *testing.T, pki *testpki.PKI) int {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(pki.CertFile, pki.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h3"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			_ = c.CloseWithError(0, "")
		}
	}()
	t.Cleanup(func() { cancel(); _ = ln.Close() })
	return ln.Addr().(*net.UDPAddr).Port
}

func TestTestConnection(t *testing.T) {
	pki := testpki.New(t, "cloud CA")
	cloud := startBroker(t, pki, nil)
	cfg := testConfig(Server{Host: "127.0.0.1", QUICPort: port(t, cloud.Addr("quic"))})
	cfg.Transport = TransportQUIC
	cfg.TLS.CA = pki.CAFile
	if err := TestConnection(context.Background(), cfg, "gw1"); err != nil {
		t.Fatalf("good settings: %v", err)
	}
	cfg.TLS.CA = testpki.New(t, "other CA").CAFile
	err := TestConnection(context.Background(), cfg, "gw1")
	if err == nil || !strings.Contains(err.Error(), "TLS verification failed") {
		t.Fatalf("bad CA: %v", err)
	}
}

// rebind gives every client a new socket towards the target, as a NAT or a
// changed address would: the server sees the connection come from a new
// address.
func (r *udpRelay) rebind() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, u := range r.up {
		_ = u.Close()
		delete(r.up, k)
	}
}

// TestQUICSurvivesAddressChange: the gateway's address seen by the cloud
// changes mid-connection (NAT rebinding, a new cellular address): QUIC
// migrates the connection, the MQTT session goes on without a reconnect.
func TestQUICSurvivesAddressChange(t *testing.T) {
	pki := testpki.New(t, "cloud CA")
	cloud := startBroker(t, pki, nil)
	relay := startRelay(t, cloud.Addr("quic"))
	sub := dial(t, cloud.Addr("tcp"), "cloud-sub")
	sub.subscribe(t, "gateways/#", 1)
	cfg := testConfig(Server{Host: "127.0.0.1", QUICPort: relay.port()})
	cfg.Transport = TransportQUIC
	cfg.TLS.CA = pki.CAFile
	e := startEdge(t, cfg, store.OutboxOptions{})
	eventually(t, "connected over QUIC", func() bool { return e.bridge.Status().Connected })
	c := dial(t, e.broker.Addr("tcp"), "pub")
	for i := range 50 {
		c.publish(t, "sensors/m", 1, fmt.Sprint(i))
	}
	sub.collect(t, 50)
	relay.rebind()
	for i := 50; i < 100; i++ {
		c.publish(t, "sensors/m", 1, fmt.Sprint(i))
	}
	got := sub.collect(t, 50)
	if n := len(got["gateways/gw1/sensors/m"]); n != 50 {
		t.Fatalf("after the address change: %d messages", n)
	}
	if st := e.bridge.Status(); st.Reconnects != 0 || !st.Connected {
		t.Fatalf("the connection did not survive the address change: %+v", st)
	}
}

// lockedBuffer is a log sink safe for the bridge's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
