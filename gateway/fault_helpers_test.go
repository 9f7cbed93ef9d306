package gateway_test

// Helpers of the fault-injection suite (fault_e2e_test.go): the binary
// built with the tag faultinject, a gateway whose uplink drains to a real
// mosquitto (the cloud), QoS 1 publishers that remember what the gateway
// acknowledged, the check that all of it reached the cloud in order, a
// black-holing TCP proxy, and readers of /metrics and $SYS.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldgate/fieldgate/internal/clock"
	"github.com/fieldgate/fieldgate/internal/peertest"
)

// faultBin is cmd/fieldgate built with the tag faultinject (its wall clock
// can be shifted through clock.OffsetFileEnv), at most once per run.
var faultBin = sync.OnceValues(func() (string, error) {
	return buildBinary("fieldgate-fault", "-tags", "faultinject")
})

// faultSetup describes one gateway of the suite.
type faultSetup struct {
	// cloudPort is the TCP port the uplink drains to (mosquitto, or a
	// proxy in front of it).
	cloudPort int
	// dataDir, when set, replaces the gateway's data dir (a tmpfs).
	dataDir string
	// extra is YAML added at the top level (board:, southbound:).
	extra string
	// uplinkExtra is YAML added to the uplink section (indented by 2).
	uplinkExtra string
	// stopBudget is gateway.stop_budget (default 10s).
	stopBudget string
}

// faultGateway is a gateway of the suite: the process (see gateway in
// e2e_test.go), its page's address (for /metrics and /readyz) and the
// file that holds its clock's offset.
type faultGateway struct {
	*gateway
	web       string // host:port of the page, /metrics and /readyz
	clockFile string
}

// startFaultGateway starts the faultinject binary on a config from s: TCP
// MQTT, the page on loopback with /metrics open, and an uplink over plain
// TCP forwarding sensors/# to the cloud as gateways/edge1/sensors/...
func startFaultGateway(t *testing.T, s faultSetup) *faultGateway {
	t.Helper()
	requireTools(t)
	path, err := faultBin()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fg := &faultGateway{web: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))), clockFile: filepath.Join(dir, "clock-offset")}
	// The binary runs through a script that sets the clock's variable and
	// execs it: the process signalled and measured is fieldgate itself.
	wrapper := filepath.Join(dir, "fieldgate")
	script := fmt.Sprintf("#!/bin/sh\n%s=%q exec %q \"$@\"\n", clock.OffsetFileEnv, fg.clockFile, path)
	if err := os.WriteFile(wrapper, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	fg.gateway = startGatewayBin(t, wrapper, false, "", func(g *gateway) string {
		if s.dataDir != "" {
			g.dataDir = s.dataDir
		}
		return fg.config(g, s)
	})
	return fg
}

// config renders the config file of s for g.
func (fg *faultGateway) config(g *gateway, s faultSetup) string {
	budget := s.stopBudget
	if budget == "" {
		budget = "10s"
	}
	return fmt.Sprintf(`version: 1
gateway: {id: edge1, data_dir: %q, stop_budget: %s}
log: {level: info}
web: {enabled: true, address: %q, metrics_auth: false, mdns: false}
mqttsn: {enabled: false}
coap: {enabled: false}
broker:
  sys_interval: 1s
  listeners:
    tcp: {enabled: true, address: "127.0.0.1:%d"}
    websocket: {enabled: false}
uplink:
  enabled: true
  transport: tcp
  servers: [{host: 127.0.0.1, tcp_port: %d}]
  keepalive: 2s
  backoff_min: 100ms
  backoff_max: 1s
  connect_timeout: 2s
  path_probe: 500ms
  forward:
    - {filter: "sensors/#", remote_topic: "gateways/{gateway_id}/{topic}", qos: 1}
%s%s`, g.dataDir, budget, fg.web, g.port, s.cloudPort, indent(s.uplinkExtra, "  "), s.extra)
}

// rewrite replaces the config file with one for s (it takes effect at the
// next start).
func (fg *faultGateway) rewrite(s faultSetup) {
	fg.writeFile(fg.config(fg.gateway, s))
}

// indent prefixes every line of s with p.
func indent(s, p string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		b.WriteString(p + line)
	}
	if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") {
		b.WriteString("\n")
	}
	return b.String()
}

// setClockOffset shifts the gateway's wall clock by d (atomically: the
// process may read the file at any moment).
func (fg *faultGateway) setClockOffset(t *testing.T, d time.Duration) {
	t.Helper()
	tmp := fg.clockFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(d.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, fg.clockFile); err != nil {
		t.Fatal(err)
	}
}

// metrics scrapes /metrics into "name{labels}" → value (nil on error).
func (fg *faultGateway) metrics() map[string]float64 {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + fg.web + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// metric is one sample of /metrics whose key starts with prefix (a name,
// or a name and the start of its labels); ok is false when there is none.
func (fg *faultGateway) metric(prefix string) (float64, bool) {
	m := fg.metrics()
	keys := make([]string, 0, len(m))
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return 0, false
	}
	slices.Sort(keys)
	return m[keys[0]], true
}

// readyz is the status code of GET /readyz (0 when it does not answer).
func (fg *faultGateway) readyz() int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + fg.web + "/readyz")
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// cloud is Debian's mosquitto as the cloud broker, with a subscriber
// counting what the gateway forwarded (gateways/#, QoS 1).
type cloud struct {
	t    *testing.T
	port int
	conf string
	cmd  *exec.Cmd
	done chan struct{}
	sub  *mqttClient
}

// newCloud prepares mosquitto on a free port without starting it.
func newCloud(t *testing.T) *cloud {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, err = os.Stat("/usr/sbin/mosquitto"); err != nil {
			peertest.Missing(t, "mosquitto not installed", "apt-get install mosquitto")
		}
		bin = "/usr/sbin/mosquitto"
	}
	c := &cloud{t: t, port: freePort(t), conf: filepath.Join(t.TempDir(), "mosquitto.conf")}
	conf := fmt.Sprintf("allow_anonymous true\npersistence false\nmax_queued_messages 1000000\nlistener %d 127.0.0.1\n", c.port)
	if os.Geteuid() == 0 {
		conf = "user root\n" + conf
	}
	if err := os.WriteFile(c.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(bin, "-c", c.conf)
	t.Cleanup(c.stop)
	return c
}

// startCloud starts mosquitto and its subscriber.
func startCloud(t *testing.T) *cloud {
	t.Helper()
	c := newCloud(t)
	c.start()
	return c
}

// start runs mosquitto, waits for its port and subscribes to gateways/#.
func (c *cloud) start() {
	c.t.Helper()
	out := &syncBuffer{}
	c.cmd.Stdout, c.cmd.Stderr = out, out
	if err := c.cmd.Start(); err != nil {
		c.t.Fatalf("mosquitto: %v", err)
	}
	c.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(c.cmd, c.done)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port))
	if !waitFor(10*time.Second, func() bool {
		conn, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			conn.Close()
		}
		return err == nil
	}) {
		c.t.Fatalf("mosquitto does not listen on %s:\n%s", addr, out)
	}
	sub, err := connectClient(c.t, addr, "cloud-counter")
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := sub.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "gateways/#", QoS: 1}}}); err != nil {
		c.t.Fatal(err)
	}
	c.sub = sub
}

func (c *cloud) stop() {
	if c.done == nil {
		return
	}
	_ = c.cmd.Process.Kill()
	<-c.done
}

// load is a set of QoS 1 publishers (MQTT 5, paho.golang), one per topic
// sensors/pN, each publishing 0, 1, 2, ... and remembering which numbers
// the gateway acknowledged and which it refused (a reason code ≥ 0x80).
type load struct {
	t    *testing.T
	addr string
	stop chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	acked    [][]int // per publisher, in order
	next     []int   // per publisher: the next number to publish
	refused  []int   // per publisher
	codes    map[byte]int
	timeouts int // publishes without an answer (not acknowledged)
	reconns  int // reconnections after a lost connection
	lastAck  time.Time
	every    time.Duration // pause between a publisher's publishes
}

// startLoad starts n publishers on the gateway at addr, each sending one
// message every every (0: as fast as acknowledgements come).
func startLoad(t *testing.T, addr string, n int, every time.Duration) *load {
	t.Helper()
	l := &load{t: t, addr: addr, acked: make([][]int, n), next: make([]int, n), refused: make([]int, n), codes: map[byte]int{}, every: every}
	t.Cleanup(l.halt)
	return l.restart(t)
}

// restart starts the (halted) publishers again where they stopped, on new
// connections.
func (l *load) restart(t *testing.T) *load {
	t.Helper()
	l.stop = make(chan struct{})
	for p := range l.acked {
		c, err := l.dial(p)
		if err != nil {
			t.Fatal(err)
		}
		l.wg.Add(1)
		go l.run(p, c)
	}
	return l
}

// dial connects publisher p (MQTT 5, clean start, keep alive 5 s).
func (l *load) dial(p int) (*paho.Client, error) {
	conn, err := net.DialTimeout("tcp", l.addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: fmt.Sprintf("fault-pub%d", p), CleanStart: true, KeepAlive: 5}); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// run publishes until halt; a lost connection is dialled again (the
// publish it was waiting for counts as not acknowledged).
func (l *load) run(p int, c *paho.Client) {
	defer l.wg.Done()
	defer func() {
		if c != nil {
			_ = c.Disconnect(&paho.Disconnect{})
		}
	}()
	topic := fmt.Sprintf("sensors/p%d", p)
	l.mu.Lock()
	first := l.next[p]
	l.mu.Unlock()
	for seq := first; ; seq++ {
		select {
		case <-l.stop:
			return
		default:
		}
		if c == nil {
			var err error
			if c, err = l.dial(p); err != nil {
				select {
				case <-l.stop:
					return
				case <-time.After(100 * time.Millisecond): // redial pace, not synchronisation
				}
				seq--
				continue
			}
			l.mu.Lock()
			l.reconns++
			l.mu.Unlock()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		r, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(strconv.Itoa(seq))})
		cancel()
		l.mu.Lock()
		l.next[p] = seq + 1
		switch {
		case r != nil && r.ReasonCode >= 0x80:
			l.refused[p]++
			l.codes[r.ReasonCode]++
		case err == nil:
			l.acked[p] = append(l.acked[p], seq)
			l.lastAck = time.Now()
		default:
			l.timeouts++
			_ = c.Disconnect(&paho.Disconnect{})
			c = nil
		}
		l.mu.Unlock()
		if l.every > 0 {
			select {
			case <-l.stop:
				return
			case <-time.After(l.every): // the publishing rate, not synchronisation
			}
		}
	}
}

// halt stops the publishers and waits for them.
func (l *load) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// total is how many publishes were acknowledged and refused.
func (l *load) total() (acked, refused int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p := range l.acked {
		acked += len(l.acked[p])
		refused += l.refused[p]
	}
	return acked, refused
}

// waitAcked waits until n more publishes than before were acknowledged.
func (l *load) waitAcked(t *testing.T, n int, d time.Duration) {
	t.Helper()
	start, _ := l.total()
	if !waitFor(d, func() bool { a, _ := l.total(); return a >= start+n }) {
		a, r := l.total()
		t.Fatalf("load: %d acknowledged within %v (wanted %d more than %d); %d refused", a, d, n, start, r)
	}
}

// delivery is what the cloud got of what the gateway acknowledged.
type delivery struct {
	acked, received, dups, missing int
	// unacked counts arrivals of numbers the gateway never acknowledged
	// (the publisher's wait for the PUBACK ended first).
	unacked int
}

// checkDelivered waits (at most d) until every acknowledged message of l
// is in the cloud, then checks the order per topic of the acknowledged
// numbers: one may come again (a duplicate, counted) but never before a
// smaller one not seen yet. Numbers never acknowledged are counted apart.
// Fails the test on loss or reordering.
func checkDelivered(t *testing.T, l *load, c *cloud, d time.Duration) delivery {
	t.Helper()
	return checkDeliveredLossy(t, l, c, d, 0)
}

// checkDeliveredLossy is checkDelivered where up to allowed messages may
// be missing because the gateway counted them lost.
func checkDeliveredLossy(t *testing.T, l *load, c *cloud, d time.Duration, allowed int) delivery {
	t.Helper()
	l.mu.Lock()
	acked := make([][]int, len(l.acked))
	for p := range l.acked {
		acked[p] = slices.Clone(l.acked[p])
	}
	l.mu.Unlock()
	var res delivery
	for p := range acked {
		res.acked += len(acked[p])
	}
	topic := func(p int) string { return fmt.Sprintf("gateways/edge1/sensors/p%d", p) }
	missing := func() int {
		n := 0
		c.sub.mu.Lock()
		defer c.sub.mu.Unlock()
		for p := range acked {
			seen := map[string]bool{}
			for _, v := range c.sub.msgs[topic(p)] {
				seen[v] = true
			}
			for _, seq := range acked[p] {
				if !seen[strconv.Itoa(seq)] {
					n++
				}
			}
		}
		return n
	}
	waitFor(d, func() bool { return missing() <= allowed })
	// What is missing now may still be on its way: give it a moment when
	// some loss is allowed (the wait above ended at the allowance).
	if allowed > 0 {
		waitFor(2*time.Second, func() bool { return missing() == 0 })
	}
	res.missing = missing()
	if res.missing > allowed {
		t.Errorf("%d of %d acknowledged messages did not reach the cloud within %v (the gateway counted %d lost)", res.missing, res.acked, d, allowed)
	}
	c.sub.mu.Lock()
	defer c.sub.mu.Unlock()
	for p := range acked {
		want := map[int]bool{}
		for _, n := range acked[p] {
			want[n] = true
		}
		seen := map[int]bool{}
		highest := -1
		for _, v := range c.sub.msgs[topic(p)] {
			res.received++
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Errorf("%s: payload %q", topic(p), v)
				continue
			}
			if !want[n] {
				// Never acknowledged (its publisher gave up waiting), yet
				// taken: it may come anywhere, it promised nothing.
				res.unacked++
				continue
			}
			switch {
			case seen[n]:
				res.dups++
			case n < highest:
				t.Errorf("%s: %d arrived after %d (out of order)", topic(p), n, highest)
			}
			seen[n] = true
			highest = max(highest, n)
		}
	}
	return res
}

// holeProxy forwards TCP connections from a loopback port to target until
// it is told to black-hole: then it stops forwarding and stops reading in
// both directions, and answers nothing, but closes no socket (no FIN, no
// RST), as a path that drops every packet. New connections are accepted
// (the kernel completes the handshake) and held silent the same way. heal
// closes the held connections and forwards again.
type holeProxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu    sync.Mutex
	holed bool
	gate  chan struct{} // closed when the hole heals
	conns []net.Conn    // every connection, both sides
	wg    sync.WaitGroup
}

// startHoleProxy listens on a free loopback port in front of target.
func startHoleProxy(t *testing.T, target string) *holeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holeProxy{t: t, ln: ln, target: target, gate: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *holeProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *holeProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		holed, gate := p.holed, p.gate
		p.mu.Unlock()
		if holed {
			// Held: never read, never answered, closed when the hole heals.
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				<-gate
				c.Close()
			}()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// pipe copies from src to dst until either fails; once the proxy is
// black-holed it drops what it read and reads no more, leaving both
// sockets open until the hole heals.
func (p *holeProxy) pipe(src, dst net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		holed, gate := p.holed, p.gate
		p.mu.Unlock()
		if holed {
			<-gate
			src.Close()
			dst.Close()
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// blackhole starts dropping everything.
func (p *holeProxy) blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holed = true
}

// heal closes what was held and forwards new connections again.
func (p *holeProxy) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.holed {
		p.holed = false
		close(p.gate)
		p.gate = make(chan struct{})
	}
}

func (p *holeProxy) close() {
	p.ln.Close()
	p.heal()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// statusWatch is an MQTT 5 client on the gateway that keeps every message
// of the topics it subscribed, with its arrival time.
type statusWatch struct {
	*paho.Client
	mu   sync.Mutex
	msgs []watched
}

type watched struct {
	topic, payload string
	at             time.Time
}

// watch subscribes to filters on the gateway at addr.
func watch(t *testing.T, addr string, filters ...string) *statusWatch {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	w := &statusWatch{}
	w.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(p paho.PublishReceived) (bool, error) {
			w.mu.Lock()
			w.msgs = append(w.msgs, watched{topic: p.Packet.Topic, payload: string(p.Packet.Payload), at: time.Now()})
			w.mu.Unlock()
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := w.Connect(ctx, &paho.Connect{ClientID: fmt.Sprintf("watch-%d", time.Now().UnixNano()), CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	var subs []paho.SubscribeOptions
	for _, f := range filters {
		subs = append(subs, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	if _, err := w.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Disconnect(&paho.Disconnect{}) })
	return w
}

// first waits (at most d) for a message on topic after since whose payload
// contains want, and returns when it arrived.
func (w *statusWatch) first(topic, want string, since time.Time, d time.Duration) (time.Time, error) {
	var at time.Time
	ok := waitFor(d, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, m := range w.msgs {
			if m.topic == topic && !m.at.Before(since) && strings.Contains(m.payload, want) {
				at = m.at
				return true
			}
		}
		return false
	})
	if !ok {
		return time.Time{}, fmt.Errorf("no message on %s containing %q within %v", topic, want, d)
	}
	return at, nil
}

// payloads returns what arrived on topic, in order.
func (w *statusWatch) payloads(topic string) []watched {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []watched
	for _, m := range w.msgs {
		if m.topic == topic {
			out = append(out, m)
		}
	}
	return out
}

// procCPU is the CPU time (user + system) the process pid has used.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces) in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, errors.New("procCPU: malformed stat")
	}
	f := strings.Fields(string(b)[i+1:])
	if len(f) < 13 {
		return 0, errors.New("procCPU: short stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / hz, nil
}

// ptyPending returns how many bytes wait, unread, in the input queue of
// the pty at path (TIOCINQ): a request the device on that end has not read
// yet. It opens its own descriptor, so the pty's owner is not disturbed.
func ptyPending(path string) (int, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("pty %s: %w", path, err)
	}
	var n int32
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n)))
	}); err != nil {
		return 0, fmt.Errorf("pty %s: %w", path, err)
	}
	if errno != 0 {
		return 0, fmt.Errorf("TIOCINQ on %s: %w", path, errno)
	}
	return int(n), nil
}
