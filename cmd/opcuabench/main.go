// Command opcuabench measures the OPC UA southbound under load: the real
// fieldgate binary subscribes to N monitored items (1 s sampling) on a
// node-opcua server (testdata/opcua, started by internal/opcuatest) whose N
// variables all change once a second, and an MQTT client subscribed to the
// gateway's broker measures change → subscriber latency from the OPC UA
// source timestamp in each payload. It prints the gateway's CPU (% of one
// core, from /proc/PID/stat) and memory (VmRSS), and the node-opcua
// server's CPU, so that a server that cannot keep up is seen as such.
//
//	opcuabench [-fieldgate ./bin/fieldgate] [-items 10000] [-sampling 1s] [-duration 30s]
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
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
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldgate/fieldgate/internal/opcuatest"
)

// metricPrefixes are the gateway metrics whose change over the measured
// time the report shows (per second), when non-zero.
var metricPrefixes = []string{"fieldgate_opcua_", "fieldgate_broker_queue"}

// targetCPU is issue 16's target for the gateway: % of one core.
const targetCPU = 25.0

// clockTicksPerSecond is USER_HZ, the unit of /proc/PID/stat's CPU times.
const clockTicksPerSecond = 100

type options struct {
	fieldgate string
	items     int
	sampling  time.Duration
	publish   time.Duration
	duration  time.Duration
	ready     time.Duration
	keep      bool
	maxNotif  int
}

func main() {
	var o options
	flag.StringVar(&o.fieldgate, "fieldgate", "./bin/fieldgate", "fieldgate `binary` (make build)")
	flag.IntVar(&o.items, "items", 10000, "monitored items (server variables, all changing every second)")
	flag.DurationVar(&o.sampling, "sampling", time.Second, "sampling interval of each monitored item")
	flag.DurationVar(&o.publish, "publish", time.Second, "the server's publishing interval (opcua interval:)")
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "measured time")
	flag.DurationVar(&o.ready, "ready", 5*time.Minute, "how long to wait for every item's first value")
	flag.IntVar(&o.maxNotif, "server-max-notifications", 0, "the server's limit of notifications per PublishResponse (0: node-opcua's default, 1000)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (logs, configs)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "opcuabench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "opcuabench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(os.Stderr, "opcuabench: keeping", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	// The node-opcua server.
	peerDir := filepath.Join(dir, "peer")
	if err := os.Mkdir(peerDir, 0o700); err != nil {
		return err
	}
	t0 := time.Now()
	srv, err := opcuatest.Launch(peerDir, opcuatest.Options{
		BenchVariables: o.items, BenchInterval: time.Second, MaxNotificationsPerPublish: o.maxNotif,
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Fprintf(os.Stderr, "opcuabench: node-opcua server %s (pid %d) up in %s\n", srv.Endpoint(), srv.PID(), time.Since(t0).Round(time.Millisecond))

	// The gateway.
	gw, err := startGateway(o, dir, srv)
	if err != nil {
		return err
	}
	defer gw.stop()
	gwStart := time.Now()

	// The MQTT subscriber.
	rec := &recorder{seen: make(map[string]bool, o.items)}
	conn, err := net.Dial("tcp", gw.mqttAddr)
	if err != nil {
		return fmt.Errorf("mqtt dial: %w", err)
	}
	client := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			rec.add(time.Now(), pr.Packet.Topic, pr.Packet.Payload)
			return true, nil
		}}})
	if _, err := client.Connect(ctx, &paho.Connect{ClientID: "opcuabench", CleanStart: true, KeepAlive: 30}); err != nil {
		return fmt.Errorf("mqtt connect: %w", err)
	}
	defer func() { _ = client.Disconnect(&paho.Disconnect{}) }()
	if _, err := client.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "southbound/bench/+", QoS: 0}}}); err != nil {
		return fmt.Errorf("mqtt subscribe: %w", err)
	}

	// Wait for every item's first value: the session, the subscription and
	// its 10,000 monitored items are set up.
	for {
		n := rec.points()
		if n >= o.items {
			break
		}
		select {
		case <-gw.done:
			return fmt.Errorf("fieldgate exited: %v\n%s", gw.cmd.ProcessState, tail(gw.out.String(), 4000))
		default:
		}
		if time.Since(gwStart) > o.ready {
			return fmt.Errorf("only %d of %d items delivered a value after %s\n%s", n, o.items, o.ready, tail(gw.out.String(), 4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	setup := time.Since(gwStart)
	time.Sleep(2 * time.Second)

	// Measure.
	gwCPU0, err := cpuTicks(gw.cmd.Process.Pid)
	if err != nil {
		return err
	}
	srvCPU0, err := cpuTicks(srv.PID())
	if err != nil {
		return err
	}
	met0, err := gw.metrics(metricPrefixes...)
	if err != nil {
		return err
	}
	rec.start()
	m0 := time.Now()
	var rssMax int64
	for time.Since(m0) < o.duration {
		if rss, err := rssKiB(gw.cmd.Process.Pid); err == nil {
			rssMax = max(rssMax, rss)
		}
		time.Sleep(time.Second)
	}
	lat, msgs, bad, updates := rec.stop()
	wall := time.Since(m0)
	met1, err := gw.metrics(metricPrefixes...)
	if err != nil {
		return err
	}
	gwCPU1, err := cpuTicks(gw.cmd.Process.Pid)
	if err != nil {
		return err
	}
	srvCPU1, err := cpuTicks(srv.PID())
	if err != nil {
		return err
	}
	rssEnd, err := rssKiB(gw.cmd.Process.Pid)
	if err != nil {
		return err
	}
	srvRSS, _ := rssKiB(srv.PID())
	gwCPU := cpuPercent(gwCPU1-gwCPU0, wall)
	srvCPU := cpuPercent(srvCPU1-srvCPU0, wall)
	// The changes the server made while measuring: its update count went
	// through `updates` values (its timer may run late on a busy machine).
	expected := float64(o.items) * updates

	fmt.Printf("opcuabench: %d monitored items, sampling %s, publishing %s, security None, measured %s\n",
		o.items, o.sampling, o.publish, wall.Round(time.Millisecond))
	maxNotif := "1000 (node-opcua's default)"
	if o.maxNotif > 0 {
		maxNotif = strconv.Itoa(o.maxNotif)
	}
	fmt.Printf("every server variable changes once a second; server sends at most %s notifications per publish;\n", maxNotif)
	fmt.Printf("subscriber on southbound/bench/+ (QoS 0)\n\n")
	fmt.Printf("%-46s %14s %10s %s\n", "metric", "measured", "target", "")
	row := func(name, got, target string, ok bool) {
		verdict := ""
		if target != "-" {
			verdict = "FAIL"
			if ok {
				verdict = "ok"
			}
		}
		fmt.Printf("%-46s %14s %10s %s\n", name, got, target, verdict)
	}
	row("gateway CPU, % of one core", fmt.Sprintf("%.1f%%", gwCPU), fmt.Sprintf("< %.0f%%", targetCPU), gwCPU < targetCPU)
	row("gateway RSS, end / max (MiB)", fmt.Sprintf("%.1f / %.1f", float64(rssEnd)/1024, float64(rssMax)/1024), "-", true)
	row("server variable changes per second", fmt.Sprintf("%.0f", expected/wall.Seconds()), "-", true)
	row("values received per second", fmt.Sprintf("%.0f", float64(msgs)/wall.Seconds()), "-", true)
	row("values received, % of server changes", fmt.Sprintf("%.1f%%", 100*float64(msgs)/expected), "-", true)
	row("payloads without a usable ts", strconv.Itoa(bad), "-", true)
	row("change -> MQTT subscriber p50", pct(lat, 50).Round(time.Millisecond).String(), "-", true)
	row("change -> MQTT subscriber p99", pct(lat, 99).Round(time.Millisecond).String(), "-", true)
	row("change -> MQTT subscriber max", pct(lat, 100).Round(time.Millisecond).String(), "-", true)
	row("start -> every item delivered once", setup.Round(100*time.Millisecond).String(), "-", true)
	row("node-opcua server CPU, % of one core", fmt.Sprintf("%.1f%%", srvCPU), "-", true)
	row("node-opcua server RSS (MiB)", fmt.Sprintf("%.1f", float64(srvRSS)/1024), "-", true)
	var names []string
	for k := range met1 {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if d := met1[k] - met0[k]; d != 0 {
			row(k+", per second", fmt.Sprintf("%.0f", d/wall.Seconds()), "-", true)
		}
	}
	fmt.Printf("\nlatency = receive time - OPC UA source timestamp: it includes the server's sampling\n")
	fmt.Printf("(up to one sampling interval) and publishing (up to one publishing interval) delays.\n")
	if srvCPU > 80 {
		fmt.Printf("the node-opcua server used %.0f%% of a core: at this load it, not the gateway, limits the rate.\n", srvCPU)
	}
	if rate := expected / wall.Seconds(); rate < 0.9*float64(o.items) {
		fmt.Printf("the node-opcua server changed its variables %.0f times a second, not %d: its 1 s timer ran late\n", rate, o.items)
		fmt.Printf("(one node thread, %.0f%% of a core, on a busy machine): the server is the bottleneck here.\n", srvCPU)
	}
	return nil
}

// recorder keeps what the MQTT subscriber saw.
type recorder struct {
	mu        sync.Mutex
	seen      map[string]bool
	measuring bool
	lat       []time.Duration
	msgs      int
	bad       int
	values    int // payloads with a v
	minV      float64
	maxV      float64
}

func (r *recorder) add(now time.Time, topic string, payload []byte) {
	if strings.HasSuffix(topic, "/status") {
		return
	}
	var p struct {
		V  float64     `json:"v"`
		TS json.Number `json:"ts"`
	}
	ts := int64(-1)
	parsed := json.Unmarshal(payload, &p) == nil
	if parsed {
		if v, err := p.TS.Int64(); err == nil {
			ts = v
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen[topic] = true
	if !r.measuring {
		return
	}
	r.msgs++
	// v is the server's update count: the spread of v seen is how many
	// times the server changed its variables while measuring.
	if parsed {
		if r.values == 0 || p.V < r.minV {
			r.minV = p.V
		}
		r.maxV = max(r.maxV, p.V)
		r.values++
	}
	if ts <= 0 {
		r.bad++
		return
	}
	r.lat = append(r.lat, now.Sub(time.UnixMilli(ts)))
}

func (r *recorder) points() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

func (r *recorder) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.measuring = true
}

func (r *recorder) stop() (lat []time.Duration, msgs, bad int, updates float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.measuring = false
	if r.values > 0 {
		updates = r.maxV - r.minV + 1
	}
	return r.lat, r.msgs, r.bad, updates
}

// gateway is the fieldgate process under test.
type gateway struct {
	cmd      *exec.Cmd
	done     chan struct{}
	out      *syncBuffer
	mqttAddr string
	webURL   string
}

// metrics returns the gateway's /metrics samples whose names start with
// one of prefixes, keyed by name and labels.
func (g *gateway) metrics(prefixes ...string) (map[string]float64, error) {
	resp, err := http.Get(g.webURL + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("get /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get /metrics: %s", resp.Status)
	}
	out := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || !slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(line, p) }) {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// startGateway writes a config with one OPC UA server of o.items points
// and starts the binary on it.
func startGateway(o options, dir string, srv *opcuatest.Server) (*gateway, error) {
	bin, err := filepath.Abs(o.fieldgate)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("fieldgate binary: %w (make build, or -fieldgate PATH)", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	webPort, err := freePort()
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(dir, "data")
	// Trust the server's certificate as the page's "Trust this server"
	// would (security None does not need it; a policy would).
	trustDir := filepath.Join(dataDir, "opcua", "trusted")
	if err := os.MkdirAll(trustDir, 0o700); err != nil {
		return nil, err
	}
	sum := sha1.Sum(srv.CertDER)
	if err := os.WriteFile(filepath.Join(trustDir, strings.ToUpper(hex.EncodeToString(sum[:]))+".der"), srv.CertDER, 0o600); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `version: 1
gateway: {id: opcuabench, data_dir: %q}
log: {level: warn}
web: {enabled: true, address: "127.0.0.1:%d", metrics_auth: false}
mqttsn: {enabled: false}
coap: {enabled: false}
broker:
  listeners:
    tcp: {enabled: true, address: "127.0.0.1:%d"}
    websocket: {enabled: false}
southbound:
  opcua:
    servers:
      - name: bench
        endpoint: %q
        security: {policy: None, mode: None}
        interval: %s
        points:
`, dataDir, webPort, port, srv.Endpoint(), o.publish)
	for i := range o.items {
		fmt.Fprintf(&b, "          - {name: p%05d, node: %q, sampling_interval: %s}\n", i, opcuatest.BenchNode(i), o.sampling)
	}
	path := filepath.Join(dir, "fieldgate.yaml")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		return nil, err
	}
	g := &gateway{
		out: &syncBuffer{}, done: make(chan struct{}),
		mqttAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		webURL:   "http://127.0.0.1:" + strconv.Itoa(webPort),
	}
	g.cmd = exec.Command(bin, "run", "-config", path)
	g.cmd.Dir = dir
	g.cmd.Stdout = g.out
	g.cmd.Stderr = g.out
	if err := g.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { _ = g.cmd.Wait(); close(g.done) }()
	// Ready when the broker accepts a connection.
	for deadline := time.Now().Add(30 * time.Second); ; {
		select {
		case <-g.done:
			return nil, fmt.Errorf("fieldgate exited at start: %v\n%s", g.cmd.ProcessState, tail(g.out.String(), 4000))
		default:
		}
		c, err := net.Dial("tcp", g.mqttAddr)
		if err == nil {
			c.Close()
			return g, nil
		}
		if time.Now().After(deadline) {
			g.stop()
			return nil, fmt.Errorf("fieldgate broker not listening after 30 s:\n%s", tail(g.out.String(), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the process (SIGTERM, then SIGKILL after 10 s).
func (g *gateway) stop() {
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.done
	}
}

// syncBuffer is the gateway's output, written by exec's copier.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// cpuTicks returns the user+system CPU time of process pid, in clock
// ticks, from /proc/PID/stat.
func cpuTicks(pid int) (int64, error) {
	path := fmt.Sprintf("/proc/%d/stat", pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read CPU time: %w", err)
	}
	// Fields after the command name (in parentheses, may hold spaces):
	// utime and stime are the 12th and 13th.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse %s: no ')'", path)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("parse %s: %d fields", path, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	return u + s, nil
}

func cpuPercent(ticks int64, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return 100 * float64(ticks) / clockTicksPerSecond / wall.Seconds()
}

// rssKiB returns VmRSS of process pid in KiB.
func rssKiB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	return 0, errors.New("no VmRSS")
}

// pct is the p-th percentile of d (0 when empty).
func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
