package gateway_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
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
