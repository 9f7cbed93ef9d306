// Command webbench measures fieldgate's setup page and admin API while the
// gateway is busy: the response times (p50/p99/max) of the page's assets and
// of the API calls the page makes, first on an idle gateway and then with
// -clients MQTT clients connected and -rate messages/s flowing, and the
// memory one open live view (a browser tab on the Live page) costs the
// gateway: -tabs Server-Sent Event streams are opened on the busy filter
// and the gateway's heap and resident memory before and after, divided by
// -tabs.
//
// The gateway is the real binary (-fieldgate), started on free loopback
// ports with a generated config and a data dir in a temporary directory;
// the MQTT clients are raw MQTT 3.1.1 sockets on 127.0.0.1 (-publishers of
// them publish QoS 0 at -rate in all, one subscribes to everything, the
// rest are idle). Requests are sent one at a time, as one browser tab
// does. The load generator shares the machine's cores with the gateway:
// read the numbers as what a technician's browser sees on a loaded box.
//
// Usage:
//
//	webbench [-fieldgate ./bin/fieldgate] [-clients 1000] [-rate 5000]
//	         [-publishers 50] [-requests 200] [-tabs 100] [-settle 3s]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "webbench:", err)
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	fieldgate  string
	clients    int
	rate       int
	publishers int
	requests   int
	tabs       int
	settle     time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("webbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.fieldgate, "fieldgate", "./bin/fieldgate", "fieldgate `binary`")
	fs.IntVar(&o.clients, "clients", 1000, "MQTT clients connected during the loaded phase")
	fs.IntVar(&o.rate, "rate", 5000, "QoS 0 messages/s published in all")
	fs.IntVar(&o.publishers, "publishers", 50, "clients that publish (of -clients)")
	fs.IntVar(&o.requests, "requests", 200, "requests per endpoint and phase")
	fs.IntVar(&o.tabs, "tabs", 100, "live views (SSE streams) opened for the memory measurement")
	fs.DurationVar(&o.settle, "settle", 3*time.Second, "wait after opening the live views before measuring")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.clients < o.publishers+1:
		return o, fmt.Errorf("-clients must be at least -publishers + 1 (a subscriber), got %d", o.clients)
	case o.publishers < 1 || o.rate < 1 || o.requests < 1:
		return o, errors.New("-publishers, -rate and -requests must be at least 1")
	case o.tabs < 1 || o.tabs > 990:
		return o, fmt.Errorf("-tabs must be between 1 and 990 (web.live_streams), got %d", o.tabs)
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "webbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	gw, err := startGateway(ctx, o, dir)
	if err != nil {
		return err
	}
	defer gw.stop()
	web, err := newWebClient(ctx, gw.webURL, filepath.Join(dir, "data"))
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "webbench: fieldgate pid %d, mqtt %s, web %s\n", gw.cmd.Process.Pid, gw.mqttAddr, gw.webURL)

	fmt.Fprintln(stderr, "webbench: idle gateway: timing requests")
	idle, err := web.timeAll(ctx, o.requests)
	if err != nil {
		return err
	}

	fmt.Fprintf(stderr, "webbench: connecting %d MQTT clients\n", o.clients)
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	ld, err := startLoad(loadCtx, gw.mqttAddr, o)
	if err != nil {
		return err
	}
	defer ld.close()
	// Let the rate settle, and measure it.
	r0 := ld.received.Load()
	if err := sleepCtx(ctx, 2*time.Second); err != nil {
		return err
	}
	measured := float64(ld.received.Load()-r0) / 2
	fmt.Fprintf(stderr, "webbench: %.0f messages/s reach the subscriber; timing requests\n", measured)
	loaded, err := web.timeAll(ctx, o.requests)
	if err != nil {
		return err
	}

	fmt.Fprintf(stderr, "webbench: opening %d live views on bench/#\n", o.tabs)
	if err := sleepCtx(ctx, o.settle); err != nil { // the garbage of 1,000 connects
		return err
	}
	mem, err := measureTabs(ctx, web, gw, o)
	if err != nil {
		return err
	}
	stopLoad()
	ld.close()

	printReport(stdout, o, measured, idle, loaded, mem)
	return nil
}

// ---- the gateway process ----

// gateway is the fieldgate process under test.
type gateway struct {
	cmd      *exec.Cmd
	done     chan struct{}
	out      *gcLog
	mqttAddr string
	webURL   string
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startGateway starts the binary on a generated config and waits until
// /readyz answers 200.
func startGateway(ctx context.Context, o options, dir string) (*gateway, error) {
	bin, err := filepath.Abs(o.fieldgate)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("fieldgate binary: %w (make build, or -fieldgate PATH)", err)
	}
	mqttPort, err := freePort()
	if err != nil {
		return nil, err
	}
	webPort, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`version: 1
gateway: {id: bench, data_dir: %q}
log: {level: warn}
web: {enabled: true, address: "127.0.0.1:%d", live_streams: %d}
mqttsn: {enabled: false}
coap: {enabled: false}
broker:
  listeners:
    tcp: {enabled: true, address: "127.0.0.1:%d"}
    websocket: {enabled: false}
`, filepath.Join(dir, "data"), webPort, o.tabs+4, mqttPort)
	path := filepath.Join(dir, "fieldgate.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	g := &gateway{
		out:      &gcLog{},
		done:     make(chan struct{}),
		mqttAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(mqttPort)),
		webURL:   "http://127.0.0.1:" + strconv.Itoa(webPort),
	}
	g.cmd = exec.Command(bin, "run", "-config", path)
	g.cmd.Dir = dir
	g.cmd.Env = append(os.Environ(), "GODEBUG=gctrace=1")
	g.cmd.Stdout = g.out
	g.cmd.Stderr = g.out
	if err := g.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { _ = g.cmd.Wait(); close(g.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-g.done:
			return nil, fmt.Errorf("fieldgate exited at start: %v\n%s", g.cmd.ProcessState, g.out)
		default:
		}
		resp, err := http.Get(g.webURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return g, nil
			}
		}
		if time.Now().After(deadline) {
			g.stop()
			return nil, fmt.Errorf("fieldgate not ready after 10 s:\n%s", g.out)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			g.stop()
			return nil, err
		}
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

// rssKiB is the process's resident memory, from /proc/PID/status.
func (g *gateway) rssKiB() (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", g.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				return strconv.ParseFloat(f[0], 64)
			}
		}
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
}

// ---- the web client ----

// webClient is one logged-in browser: a session cookie and its CSRF token.
type webClient struct {
	base string
	http *http.Client
	csrf string
}

// newWebClient sets the first admin password (the gateway is new, its
// setup code in dataDir) and keeps the session.
func newWebClient(ctx context.Context, base, dataDir string) (*webClient, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, err
	}
	c := &webClient{base: base, http: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
	code, err := os.ReadFile(filepath.Join(dataDir, "setup-code"))
	if err != nil {
		return nil, fmt.Errorf("setup code: %w", err)
	}
	body := strings.NewReader(fmt.Sprintf(`{"password": "webbench-password", "setup_code": %q}`, strings.TrimSpace(string(code))))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/setup", body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	defer resp.Body.Close()
	var s struct {
		CSRF string `json:"csrf"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("setup: %s (%v)", resp.Status, err)
	}
	c.csrf = s.CSRF
	return c, nil
}

// endpoint is one request the page makes.
type endpoint struct {
	name   string
	method string
	path   string
	body   string
}

// endpoints are the page's assets and the API calls behind its pages.
var endpoints = []endpoint{
	{"page: index.html", "GET", "/", ""},
	{"page: app.js", "GET", "/app.js", ""},
	{"api: session", "GET", "/api/v1/session", ""},
	{"api: status (overview, every 2 s)", "GET", "/api/v1/status", ""},
	{"api: config", "GET", "/api/v1/config", ""},
	{"api: clients (broker page)", "GET", "/api/v1/clients", ""},
	{"api: logs (200)", "GET", "/api/v1/logs?max=200", ""},
	{"api: check a config section", "PUT", "/api/v1/config/broker.limits?dry_run=1", `{"max_packet_size": 1048576}`},
	{"metrics", "GET", "/metrics", ""},
}

// timing is the response times of one endpoint.
type timing struct {
	p50, p99, max time.Duration
	bytes         int
}

// timeAll times every endpoint, n requests each, one at a time.
func (c *webClient) timeAll(ctx context.Context, n int) ([]timing, error) {
	out := make([]timing, len(endpoints))
	for i, e := range endpoints {
		d := make([]time.Duration, 0, n)
		size := 0
		for range n {
			start := time.Now()
			b, err := c.do(ctx, e)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", e.method, e.path, err)
			}
			d = append(d, time.Since(start))
			size = len(b)
		}
		out[i] = timing{p50: quantile(d, 0.50), p99: quantile(d, 0.99), max: quantile(d, 1), bytes: size}
	}
	return out, nil
}

func (c *webClient) do(ctx context.Context, e endpoint) ([]byte, error) {
	var body io.Reader
	if e.body != "" {
		body = strings.NewReader(e.body)
	}
	req, err := http.NewRequestWithContext(ctx, e.method, c.base+e.path, body)
	if err != nil {
		return nil, err
	}
	if e.method != http.MethodGet {
		req.Header.Set("X-CSRF-Token", c.csrf)
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

// quantile returns the q-quantile (0..1) of d, nearest rank; d is sorted.
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(math.Ceil(q*float64(len(d)))) - 1
	return d[max(0, min(i, len(d)-1))]
}

// ---- live views ----

// memory is what the open live views cost.
type memory struct {
	before, with, after gcSample
	events              int64 // SSE batches received while open
	messages            int64 // messages in them
	dropped             int64 // the streams' dropped counters, summed
	open                time.Duration
}

// gcSample is the gateway's memory as its garbage collector reports it
// (GODEBUG=gctrace=1): the heap live after marking and the goroutine
// stacks, in MB, medians over the GC cycles of a window, and the resident
// memory (KiB, median of samples).
type gcSample struct {
	liveMB, stacksMB float64
	cycles           int
	rssKiB           float64
}

// gcLog receives the gateway's output: it parses the gctrace lines and
// keeps the last lines of the rest for error messages.
type gcLog struct {
	mu     sync.Mutex
	cycles []gcCycle
	tail   []string
	part   []byte
}

// gcCycle is one gctrace line.
type gcCycle struct {
	at             time.Time
	liveMB, stacks float64
}

func (l *gcLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		line := string(l.part[:i])
		l.part = l.part[i+1:]
		if c, ok := parseGCTrace(line); ok {
			c.at = time.Now()
			l.cycles = append(l.cycles, c)
			continue
		}
		l.tail = append(l.tail, line)
		if len(l.tail) > 20 {
			l.tail = l.tail[1:]
		}
	}
	return len(p), nil
}

func (l *gcLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.tail, "\n")
}

// since returns the cycles reported after t.
func (l *gcLog) since(t time.Time) []gcCycle {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []gcCycle
	for _, c := range l.cycles {
		if c.at.After(t) {
			out = append(out, c)
		}
	}
	return out
}

// parseGCTrace reads "gc 7 @1.2s 3%: ..., 12->13->6 MB, 14 MB goal, 0 MB
// stacks, 0 MB globals, 2 P": the live heap (6) and the stacks.
func parseGCTrace(line string) (gcCycle, bool) {
	if !strings.HasPrefix(line, "gc ") {
		return gcCycle{}, false
	}
	var c gcCycle
	for part := range strings.SplitSeq(line, ", ") {
		f := strings.Fields(part)
		switch {
		case len(f) == 2 && f[1] == "MB" && strings.Count(f[0], "->") == 2:
			v, err := strconv.ParseFloat(f[0][strings.LastIndex(f[0], "->")+2:], 64)
			if err != nil {
				return gcCycle{}, false
			}
			c.liveMB = v
		case len(f) == 3 && f[1] == "MB" && f[2] == "stacks":
			v, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return gcCycle{}, false
			}
			c.stacks = v
		}
	}
	return c, true
}

// median of v (sorted in place); 0 for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// sample watches the gateway for at least 3 s and 2 GC cycles (at most
// 60 s: with 1,000 connections the heap goal is large and cycles are
// seconds apart): the medians of the live heap and stacks over those
// cycles, and of the resident memory.
func sample(ctx context.Context, gw *gateway) (gcSample, error) {
	start := time.Now()
	var rs []float64
	for {
		r, err := gw.rssKiB()
		if err != nil {
			return gcSample{}, err
		}
		rs = append(rs, r)
		cycles := gw.out.since(start)
		if time.Since(start) >= 3*time.Second && len(cycles) >= 2 {
			var live, stacks []float64
			for _, c := range cycles {
				live, stacks = append(live, c.liveMB), append(stacks, c.stacks)
			}
			return gcSample{liveMB: median(live), stacksMB: median(stacks), cycles: len(live), rssKiB: median(rs)}, nil
		}
		if time.Since(start) > time.Minute {
			return gcSample{}, fmt.Errorf("%d GC cycles in 60 s: is GODEBUG=gctrace=1 honoured?", len(cycles))
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return gcSample{}, err
		}
	}
}

// measureTabs opens o.tabs live views on the busy filter, reads them as a
// browser would, and samples the gateway's memory before, with and after.
func measureTabs(ctx context.Context, web *webClient, gw *gateway, o options) (memory, error) {
	var m memory
	var err error
	if m.before, err = sample(ctx, gw); err != nil {
		return m, err
	}
	tabsCtx, closeTabs := context.WithCancel(ctx)
	defer closeTabs()
	var events, messages, dropped atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, o.tabs)
	for range o.tabs {
		req, err := http.NewRequestWithContext(tabsCtx, "GET", web.base+"/api/v1/live?filter=bench/%23", nil)
		if err != nil {
			return m, err
		}
		// No client timeout on a stream: it ends with tabsCtx.
		stream := &http.Client{Jar: web.http.Jar}
		resp, err := stream.Do(req)
		if err != nil {
			return m, fmt.Errorf("open live view: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return m, fmt.Errorf("open live view: %s: %s", resp.Status, bytes.TrimSpace(b))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer resp.Body.Close()
			var last int64
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 0, 4<<10), 4<<20)
			for sc.Scan() {
				data, ok := strings.CutPrefix(sc.Text(), "data: ")
				if !ok {
					continue
				}
				var b struct {
					Messages []json.RawMessage `json:"messages"`
					Dropped  int64             `json:"dropped"`
				}
				if err := json.Unmarshal([]byte(data), &b); err != nil {
					errc <- fmt.Errorf("live view: bad event: %w", err)
					return
				}
				events.Add(1)
				messages.Add(int64(len(b.Messages)))
				dropped.Add(b.Dropped - last)
				last = b.Dropped
			}
		}()
	}
	opened := time.Now()
	if err := sleepCtx(ctx, o.settle); err != nil {
		return m, err
	}
	if m.with, err = sample(ctx, gw); err != nil {
		return m, err
	}
	m.events, m.messages, m.dropped = events.Load(), messages.Load(), dropped.Load()
	m.open = time.Since(opened)
	closeTabs()
	wg.Wait()
	select {
	case err := <-errc:
		return m, err
	default:
	}
	if err := sleepCtx(ctx, time.Second); err != nil {
		return m, err
	}
	m.after, err = sample(ctx, gw)
	return m, err
}

// ---- MQTT load ----

// load is the MQTT clients: idle ones, publishers and one subscriber.
type load struct {
	conns    []net.Conn
	received atomic.Int64 // PUBLISH packets the subscriber got
	wg       sync.WaitGroup
	once     sync.Once
}

// startLoad connects o.clients clients and starts publishing.
func startLoad(ctx context.Context, addr string, o options) (*load, error) {
	ld := &load{}
	dial := func(id string) (net.Conn, error) {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return nil, err
		}
		ld.conns = append(ld.conns, c)
		if _, err := c.Write(connectPacket(id)); err != nil {
			return nil, err
		}
		ack := make([]byte, 4)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, ack); err != nil {
			return nil, fmt.Errorf("%s: CONNACK: %w", id, err)
		}
		_ = c.SetReadDeadline(time.Time{})
		if ack[0] != 0x20 || ack[3] != 0 {
			return nil, fmt.Errorf("%s: CONNACK % x", id, ack)
		}
		return c, nil
	}
	// The subscriber: everything the publishers send.
	sub, err := dial("bench-sub")
	if err != nil {
		ld.close()
		return nil, err
	}
	if _, err := sub.Write(subscribePacket("bench/#")); err != nil {
		ld.close()
		return nil, err
	}
	ld.wg.Add(1)
	go func() {
		defer ld.wg.Done()
		countPublishes(bufio.NewReaderSize(sub, 64<<10), &ld.received)
	}()
	for i := range o.clients - o.publishers - 1 {
		c, err := dial(fmt.Sprintf("bench-idle-%d", i))
		if err != nil {
			ld.close()
			return nil, err
		}
		ld.wg.Add(1)
		go func() { defer ld.wg.Done(); _, _ = io.Copy(io.Discard, c) }()
	}
	perTick := float64(o.rate) / float64(o.publishers) / 100 // every 10 ms
	for i := range o.publishers {
		c, err := dial(fmt.Sprintf("bench-pub-%d", i))
		if err != nil {
			ld.close()
			return nil, err
		}
		topic := fmt.Sprintf("bench/line%d/meter%d", i%10, i)
		ld.wg.Add(2)
		go func() { defer ld.wg.Done(); _, _ = io.Copy(io.Discard, c) }()
		go func() {
			defer ld.wg.Done()
			publish(ctx, c, topic, perTick)
		}()
	}
	return ld, nil
}

// close disconnects every client and waits for their goroutines.
func (ld *load) close() {
	ld.once.Do(func() {
		for _, c := range ld.conns {
			c.Close()
		}
		ld.wg.Wait()
	})
}

// publish sends perTick QoS 0 messages every 10 ms (fractions carry over)
// until ctx is done or the connection fails.
func publish(ctx context.Context, c net.Conn, topic string, perTick float64) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var owed float64
	var buf []byte
	for n := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		owed += perTick
		buf = buf[:0]
		for ; owed >= 1; owed-- {
			n++
			payload := fmt.Sprintf(`{"v":%d.5,"ts":%d,"q":"good"}`, n%1000, time.Now().UnixMilli())
			buf = publishPacket(buf, topic, payload)
		}
		if len(buf) > 0 {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}
}

// countPublishes reads MQTT packets and counts the PUBLISHes until the
// connection ends.
func countPublishes(r *bufio.Reader, n *atomic.Int64) {
	for {
		h, err := r.ReadByte()
		if err != nil {
			return
		}
		size, err := binary.ReadUvarint(r) // MQTT's remaining length is a base-128 varint
		if err != nil {
			return
		}
		if _, err := r.Discard(int(size)); err != nil {
			return
		}
		if h>>4 == 3 {
			n.Add(1)
		}
	}
}

// MQTT 3.1.1 packets.

func appendString(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
}

func appendPacket(b []byte, header byte, body []byte) []byte {
	b = append(b, header)
	b = binary.AppendUvarint(b, uint64(len(body)))
	return append(b, body...)
}

// connectPacket is a CONNECT with a clean session and no keep alive (idle
// clients send nothing for the whole run).
func connectPacket(id string) []byte {
	body := appendString(nil, "MQTT")
	body = append(body, 4, 0x02, 0, 0)
	body = appendString(body, id)
	return appendPacket(nil, 0x10, body)
}

func subscribePacket(filter string) []byte {
	body := binary.BigEndian.AppendUint16(nil, 1)
	body = appendString(body, filter)
	body = append(body, 0)
	return appendPacket(nil, 0x82, body)
}

func publishPacket(b []byte, topic, payload string) []byte {
	body := appendString(nil, topic)
	body = append(body, payload...)
	return appendPacket(b, 0x30, body)
}

// ---- report ----

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }

func printReport(w io.Writer, o options, rate float64, idle, loaded []timing, m memory) {
	fmt.Fprintf(w, "\nResponse times, ms (%d requests each, one at a time)\n", o.requests)
	fmt.Fprintf(w, "loaded: %d MQTT clients connected, %.0f QoS 0 messages/s in (target %d) and out\n\n", o.clients, rate, o.rate)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "request\tbytes\tidle p50\tidle p99\tloaded p50\tloaded p99\tloaded max\t")
	for i, e := range endpoints {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", e.name, loaded[i].bytes, ms(idle[i].p50), ms(idle[i].p99), ms(loaded[i].p50), ms(loaded[i].p99), ms(loaded[i].max))
	}
	tw.Flush()

	n := float64(o.tabs)
	fmt.Fprintf(w, "\nLive view memory: %d streams on bench/# (%.0f messages/s match)\n", o.tabs, rate)
	fmt.Fprintf(w, "(live heap and stacks: medians over at least 2 GC cycles, from GODEBUG=gctrace=1; %d, %d and %d cycles)\n\n", m.before.cycles, m.with.cycles, m.after.cycles)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "gateway memory\tbefore\twith tabs\tafter closing\tper tab (KiB)\t")
	fmt.Fprintf(tw, "live heap (MB)\t%.0f\t%.0f\t%.0f\t%.0f\t\n", m.before.liveMB, m.with.liveMB, m.after.liveMB, (m.with.liveMB-m.before.liveMB)*1024/n)
	fmt.Fprintf(tw, "goroutine stacks (MB)\t%.0f\t%.0f\t%.0f\t%.0f\t\n", m.before.stacksMB, m.with.stacksMB, m.after.stacksMB, (m.with.stacksMB-m.before.stacksMB)*1024/n)
	fmt.Fprintf(tw, "resident (MB)\t%.1f\t%.1f\t%.1f\t%.0f\t\n", m.before.rssKiB/1024, m.with.rssKiB/1024, m.after.rssKiB/1024, (m.with.rssKiB-m.before.rssKiB)/n)
	tw.Flush()
	fmt.Fprintf(w, "\nWhile open: %d events with %d messages reached the tabs (%.0f messages/s per tab), %d not shown (counted as dropped).\n",
		m.events, m.messages, float64(m.messages)/n/m.open.Seconds(), m.dropped)
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
