package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// rulesConfig is the e2e config with a rules section (sql indented for a
// YAML block).
func rulesConfig(g *gateway, threshold, fn string) string {
	return gatewayConfig(g.dataDir, g.port, "") + `rules:
  - id: hot-boiler
    enabled: true
    sql: |
      SELECT payload.v AS t, topic
      FROM "southbound/boiler/temp"
      WHERE ` + fn + `(payload.v) > ` + threshold + `
    actions:
      - republish: {topic: "alarms/${topic}", qos: 1, payload: '{"t": ${t}}'}
`
}

// TestE2ERules: a threshold rule republishes through the binary; a SIGHUP
// with a changed threshold applies live; one with a bad rule is refused
// with the position of the fault and the running rule stays.
func TestE2ERules(t *testing.T) {
	t.Parallel()
	threshold := "80"
	fn := "abs"
	g := startGatewayWith(t, "", func(g *gateway) string { return rulesConfig(g, threshold, fn) })
	s := g.sub(t, "-q", "1", "-t", "alarms/#", "-C", "2", "-W", "20")
	g.mustPub("-q", "1", "-t", "southbound/boiler/temp", "-m", `{"v": 70}`)
	g.mustPub("-q", "1", "-t", "southbound/boiler/temp", "-m", `{"v": 90}`)

	// a live change: the threshold goes up to 95
	threshold = "95"
	g.writeFile(rulesConfig(g, threshold, fn))
	g.signal(syscall.SIGHUP)
	if !g.waitLog("config reloaded", 1, 10*time.Second) {
		t.Fatalf("no reload logged:\n%s", g.log)
	}
	g.mustPub("-q", "1", "-t", "southbound/boiler/temp", "-m", `{"v": 90}`)
	g.mustPub("-q", "1", "-t", "southbound/boiler/temp", "-m", `{"v": 99}`)
	got := s.wait(25 * time.Second)
	want := []string{`{"t": 90}`, `{"t": 99}`}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("alarms %q, want %q", got, want)
	}

	// a bad rule: refused with its position, the running rule stays
	fn = "avgg"
	g.writeFile(rulesConfig(g, threshold, fn))
	g.signal(syscall.SIGHUP)
	if !g.waitLog(`rules[0].sql: line 3, col 7: unknown function \"avgg\"`, 1, 10*time.Second) {
		t.Fatalf("bad rule not refused with its position:\n%s", g.log)
	}
	s = g.sub(t, "-q", "1", "-t", "alarms/#", "-C", "1", "-W", "20")
	g.mustPub("-q", "1", "-t", "southbound/boiler/temp", "-m", `{"v": 100}`)
	if got := s.wait(25 * time.Second); len(got) != 1 || got[0] != `{"t": 100}` {
		t.Fatalf("after the refused reload: %q", got)
	}
}

// TestE2ERulesWindowToCloud: readings averaged per device over 2 s windows
// by a rule, sent with the uplink action, arrive at a second broker (the
// cloud, mosquitto) through the outbox.
func TestE2ERulesWindowToCloud(t *testing.T) {
	t.Parallel()
	requireTools(t)
	cloud := startCloud(t)
	web := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	g := startGatewayWith(t, "", func(g *gateway) string {
		return fmt.Sprintf(`version: 1
gateway: {id: edge1, data_dir: %q}
log: {level: info}
web: {enabled: true, address: %q, metrics_auth: false, mdns: false}
mqttsn: {enabled: false}
coap: {enabled: false}
broker:
  listeners:
    tcp: {enabled: true, address: "127.0.0.1:%d"}
    websocket: {enabled: false}
uplink:
  enabled: true
  transport: tcp
  servers: [{host: 127.0.0.1, tcp_port: %d}]
  backoff_min: 100ms
  backoff_max: 1s
  forward:
    - {filter: "sites/#", remote_topic: "gateways/{gateway_id}/{topic}", qos: 1}
rules:
  - id: avg
    enabled: true
    sql: |
      SELECT topic(2) AS device, avg(payload.value) AS avg, count(*) AS n
      FROM "modbus/+/temp"
      GROUP BY topic(2), TUMBLINGWINDOW(ss, 2)
    actions:
      - uplink: {topic: "sites/${gateway_id}/avg/${device}", qos: 1}
`, g.dataDir, web, g.port, cloud.port)
	})
	sub := exec.Command("stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", strconv.Itoa(cloud.port), "-d", "-q", "1", "-v", "-t", "gateways/edge1/sites/edge1/avg/#")
	out := &syncBuffer{}
	sub.Stdout, sub.Stderr = out, out
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Process.Kill(); _ = sub.Wait() }()
	// Generous: the whole -race suite shares two cores with this test.
	if !waitFor(45*time.Second, func() bool { return strings.Contains(out.String(), "Subscribed (mid:") }) {
		t.Fatalf("mosquitto_sub on the cloud did not subscribe within 45 s:\n%s", out)
	}
	for _, r := range []struct{ dev, v string }{{"d1", "10"}, {"d2", "4"}, {"d1", "20"}} {
		g.mustPub("-q", "1", "-t", "modbus/"+r.dev+"/temp", "-m", `{"value":`+r.v+`}`)
	}
	// The readings may straddle a window boundary: d1's first window then
	// holds 10 alone, or 10 and 20.
	d1 := func(s string) bool {
		return strings.Contains(s, `gateways/edge1/sites/edge1/avg/d1 {"avg":15,"device":"d1","n":2}`) ||
			strings.Contains(s, `gateways/edge1/sites/edge1/avg/d1 {"avg":10,"device":"d1","n":1}`)
	}
	d2 := `gateways/edge1/sites/edge1/avg/d2 {"avg":4,"device":"d2","n":1}`
	if !waitFor(30*time.Second, func() bool { s := out.String(); return d1(s) && strings.Contains(s, d2) }) {
		t.Fatalf("cloud received:\n%s\ngateway log:\n%s", out, g.log)
	}
	// the counters are on /metrics
	var metrics string
	ok := waitFor(10*time.Second, func() bool {
		resp, err := http.Get("http://" + web + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		metrics = string(b)
		return strings.Contains(metrics, `fieldgate_rules_passed{rule="avg"} 3`) &&
			strings.Contains(metrics, `fieldgate_rules_action_success{action="0",kind="uplink",rule="avg"}`)
	})
	if !ok {
		t.Fatalf("rules metrics missing:\n%s", grepLines(metrics, "fieldgate_rules"))
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			b.WriteString(line)
		}
	}
	return b.String()
}

// rulesWebConfig is a config with the broker on g's port, the page (for
// /metrics, without auth) on web and the rules YAML given (a list, at the
// top level under "rules:").
func rulesWebConfig(g *gateway, web, rules string) string {
	return fmt.Sprintf(`version: 1
gateway: {id: edge1, data_dir: %q}
log: {level: info}
web: {enabled: true, address: %q, metrics_auth: false, mdns: false}
mqttsn: {enabled: false}
coap: {enabled: false}
broker:
  listeners:
    tcp: {enabled: true, address: "127.0.0.1:%d"}
    websocket: {enabled: false}
rules:
%s`, g.dataDir, web, g.port, rules)
}

// scrapeMetrics returns the value of each sample of /metrics on web whose
// line starts with one of prefixes, by its full name with labels.
func scrapeMetrics(web string, prefixes ...string) (map[string]float64, error) {
	resp, err := http.Get("http://" + web + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(b)) {
		name, val, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(name, p) {
				if v, err := strconv.ParseFloat(val, 64); err == nil {
					out[name] = v
				}
			}
		}
	}
	return out, nil
}

// numberLines is n lines `{"n":i}` for i from first, for mosquitto_pub -l.
func numberLines(first, n int) string {
	var b strings.Builder
	for i := first; i < first+n; i++ {
		fmt.Fprintf(&b, "{\"n\":%d}\n", i)
	}
	return b.String()
}

// hookServer is the web hook of TestE2ERulesHTTPDown30s: it records the n
// of every body it receives, in order, and can go down (its listener and
// connections closed) and come back on the same address.
type hookServer struct {
	t    *testing.T
	addr string

	mu    sync.Mutex
	got   []int
	srv   *http.Server
	block int           // the request that closes the server in flight (its n), -1: none
	hit   chan struct{} // closed when the request block arrived
}

func newHookServer(t *testing.T) *hookServer {
	h := &hookServer{t: t, block: -1, hit: make(chan struct{})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = l.Addr().String()
	h.serve(l)
	t.Cleanup(func() { h.down() })
	return h
}

func (h *hookServer) serve(l net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(h.handle), ReadHeaderTimeout: 10 * time.Second}
	h.mu.Lock()
	h.srv = srv
	h.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
}

func (h *hookServer) handle(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	var v struct{ N *int }
	if err == nil {
		err = json.Unmarshal(b, &v)
	}
	if err != nil || v.N == nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.got = append(h.got, *v.N)
	block := *v.N == h.block
	if block {
		h.block = -1 // once: its retry is answered
	}
	h.mu.Unlock()
	if block {
		// in flight: the server goes down before it answers
		close(h.hit)
		<-r.Context().Done()
		return
	}
}

// down closes the listener and every connection (a request in flight gets
// no answer).
func (h *hookServer) down() {
	h.mu.Lock()
	srv := h.srv
	h.srv = nil
	h.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// up listens again on the same address.
func (h *hookServer) up() {
	var l net.Listener
	var err error
	// the port was ours a moment ago; another process taking it meanwhile is
	// unlikely but not impossible
	if !waitFor(10*time.Second, func() bool { l, err = net.Listen("tcp", h.addr); return err == nil }) {
		h.t.Fatalf("listen again on %s: %v", h.addr, err)
	}
	h.serve(l)
}

func (h *hookServer) received() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int(nil), h.got...)
}

// TestE2ERulesHTTPDown30s: an http action whose hook is down for 30 s
// loses nothing. The hook receives a few requests, goes down while it
// holds one (its listener and connections closed, no answer), messages are
// published meanwhile, and it comes back on the same port 30 s later:
// every output arrives, in order, the only repeat allowed being the
// request that was in flight (at-least-once), and /metrics shows the
// retries and no drop.
func TestE2ERulesHTTPDown30s(t *testing.T) {
	t.Parallel()
	const first, during1, during2 = 5, 10, 10
	total := first + during1 + during2
	hook := newHookServer(t)
	hook.block = first - 1
	web := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	g := startGatewayWith(t, "", func(g *gateway) string {
		return rulesWebConfig(g, web, fmt.Sprintf(`  - id: hook
    enabled: true
    sql: SELECT payload.n AS n FROM "hook/in"
    actions:
      - http: {url: "http://%s/hook", timeout: 5s}
`, hook.addr))
	})
	pubLines := func(first, n int) {
		t.Helper()
		if out, err := g.pub(strings.NewReader(numberLines(first, n)), "-q", "1", "-t", "hook/in", "-l"); err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
	}
	metrics := func() map[string]float64 {
		m, err := scrapeMetrics(web, "fieldgate_rules_")
		if err != nil {
			return nil
		}
		return m
	}
	const (
		retries = `fieldgate_rules_action_retries{action="0",kind="http",rule="hook"}`
		success = `fieldgate_rules_action_success{action="0",kind="http",rule="hook"}`
		aDrop   = `fieldgate_rules_action_dropped{action="0",kind="http",rule="hook"}`
		aFail   = `fieldgate_rules_action_failed{action="0",kind="http",rule="hook"}`
		rDrop   = `fieldgate_rules_dropped{rule="hook"}`
	)

	pubLines(0, first)
	select {
	case <-hook.hit:
	case <-time.After(30 * time.Second):
		t.Fatalf("the hook received %v, not the request %d, within 30 s", hook.received(), first-1)
	}
	hook.down()
	downAt := time.Now()
	pubLines(first, during1)
	var m map[string]float64
	if !waitFor(25*time.Second, func() bool { m = metrics(); return m[retries] >= 3 }) {
		t.Fatalf("no retries counted while the hook is down: %v", m)
	}
	pubLines(first+during1, during2)
	// the outage the issue asks for: 30 s of a hook that refuses connections
	time.Sleep(time.Until(downAt.Add(30 * time.Second)))
	if got := hook.received(); len(got) != first {
		t.Fatalf("while down the hook received %v", got)
	}
	hook.up()
	upAt := time.Now()
	// the backoff doubles up to 30 s, so the next try may be that far away
	if !waitFor(60*time.Second, func() bool { m = metrics(); return m[success] >= float64(total) }) {
		t.Fatalf("after the hook came back: received %v, metrics %v", hook.received(), m)
	}
	t.Logf("down %v; all delivered %v after the hook came back; retries %v", upAt.Sub(downAt).Round(time.Second), time.Since(upAt).Round(100*time.Millisecond), m[retries])

	// at-least-once: every n in order; a repeat only of the request in
	// flight, right after itself
	got := hook.received()
	var dedup []int
	repeats := 0
	for i, n := range got {
		if i > 0 && n == got[i-1] {
			repeats++
			if n != first-1 {
				t.Errorf("%d repeated, but only %d was in flight: %v", n, first-1, got)
			}
			continue
		}
		dedup = append(dedup, n)
	}
	for i := range total {
		if i >= len(dedup) || dedup[i] != i {
			t.Fatalf("the hook received %v, want 0..%d in order (one repeat of %d allowed)", got, total-1, first-1)
		}
	}
	t.Logf("the hook received %d requests for %d outputs (%d repeat)", len(got), total, repeats)
	if len(dedup) != total || repeats > 1 {
		t.Fatalf("the hook received %v: %d repeats", got, repeats)
	}
	if m[success] != float64(total) || m[aDrop] != 0 || m[aFail] != 0 || m[rDrop] != 0 || m[retries] < 5 {
		t.Fatalf("metrics: success %v (want %d), action dropped %v, failed %v, rule dropped %v (want 0), retries %v (want ≥ 5)",
			m[success], total, m[aDrop], m[aFail], m[rDrop], m[retries])
	}
}

// TestE2ERulesFailingRule: a rule that fails on every message leaves the
// broker working: all N QoS 1 messages reach the subscriber, the rule's
// failed counter is N, and the error is logged rate-limited (at most one
// line per 10 s, with the count of those suppressed). The throughput
// with and without such a rule is measured by cmd/rulesbench, not here.
func TestE2ERulesFailingRule(t *testing.T) {
	t.Parallel()
	const n = 500
	web := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	g := startGatewayWith(t, "", func(g *gateway) string {
		return rulesWebConfig(g, web, `  - id: fails
    enabled: true
    sql: SELECT payload.n * 'x' AS v FROM "load/#"
    actions:
      - log: {}
`)
	})
	s := g.sub(t, "-q", "1", "-t", "load/#", "-C", strconv.Itoa(n), "-W", "60")
	start := time.Now()
	if out, err := g.pub(strings.NewReader(numberLines(0, n)), "-q", "1", "-t", "load/in", "-l"); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	got := s.wait(70 * time.Second)
	if len(got) != n {
		t.Fatalf("the subscriber received %d of %d messages", len(got), n)
	}
	for i, p := range got {
		if p != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("message %d is %q", i, p)
		}
	}
	const failed = `fieldgate_rules_failed{rule="fails"}`
	var m map[string]float64
	if !waitFor(30*time.Second, func() bool {
		var err error
		m, err = scrapeMetrics(web, "fieldgate_rules_")
		return err == nil && m[failed] >= n
	}) {
		t.Fatalf("metrics: %v", m)
	}
	elapsed := time.Since(start)
	if m[failed] != n || m[`fieldgate_rules_matched{rule="fails"}`] != n || m[`fieldgate_rules_passed{rule="fails"}`] != 0 {
		t.Fatalf("metrics: %v, want %d matched and failed", m, n)
	}
	// rate-limited: one line, then at most one per 10 s per rule
	var lines []string
	for line := range strings.Lines(grepLines(g.log.String(), "rule evaluation failed")) {
		lines = append(lines, line)
	}
	limit := 1 + int(elapsed/(10*time.Second))
	if len(lines) < 1 || len(lines) > limit {
		t.Fatalf("%d lines logged for %d failures in %v, want 1..%d:\n%s", len(lines), n, elapsed, limit, strings.Join(lines, ""))
	}
	if !strings.Contains(lines[0], "fails") {
		t.Errorf("the line does not name the rule: %s", lines[0])
	}
	t.Logf("%d failures, %d log lines in %v", n, len(lines), elapsed.Round(time.Millisecond))
}
