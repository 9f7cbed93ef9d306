package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// webSession is a browser session on a gateway's page.
type webSession struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

func newWebSession(t *testing.T, base string) *webSession {
	jar, _ := cookiejar.New(nil)
	return &webSession{t: t, base: base, c: &http.Client{Jar: jar, Timeout: 10 * time.Second}}
}

// do sends body as JSON and decodes the JSON answer.
func (s *webSession) do(method, path string, body any) (int, map[string]any) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, s.base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	if s.csrf != "" {
		req.Header.Set("X-CSRF-Token", s.csrf)
	}
	resp, err := s.c.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// TestE2ERestartNow runs the binary with its page and asks for a restart
// the way the page's "Restart now" does, after saving a setting that needs
// one. Outside systemd the process executes itself again: the same process
// id, a second "fieldgate started", the page back, nothing pending and the
// saved value running. Under systemd ($INVOCATION_ID set) it exits 0 for
// Restart=always to start it again.
func TestE2ERestartNow(t *testing.T) {
	t.Setenv("INVOCATION_ID", "") // not under systemd, even if the tests are
	t.Setenv("NOTIFY_SOCKET", "")
	webAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	g := startWebGateway(t, webAddr)
	base := "http://" + webAddr
	pageUp := func() bool {
		c, err := net.DialTimeout("tcp", webAddr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	if !waitFor(10*time.Second, pageUp) {
		t.Fatal("the page does not accept")
	}
	code, err := os.ReadFile(filepath.Join(g.dataDir, "setup-code"))
	if err != nil {
		t.Fatal(err)
	}
	const password = "correct horse battery"
	s := newWebSession(t, base)
	st, body := s.do("POST", "/api/v1/setup", map[string]string{"password": password, "gateway_id": "site-9", "setup_code": strings.TrimSpace(string(code))})
	if st != 200 {
		t.Fatalf("setup: %d %v", st, body)
	}
	s.csrf = body["csrf"].(string)
	st, body = s.do("PUT", "/api/v1/config/broker.sys_interval", "3s")
	if st != 200 || fmt.Sprint(body["restart"]) != "[broker.sys_interval]" {
		t.Fatalf("PUT sys_interval: %d %v", st, body)
	}
	pending := func(s *webSession) string {
		t.Helper()
		st, body := s.do("GET", "/api/v1/status", nil)
		if st != 200 {
			t.Fatalf("status: %d %v", st, body)
		}
		return fmt.Sprint(body["restart"].(map[string]any)["parts"])
	}
	if p := pending(s); p != "[broker]" {
		t.Fatalf("pending parts %s, want [broker]", p)
	}

	pid := g.cmd.Process.Pid
	start := time.Now()
	if st, body := s.do("POST", "/api/v1/restart", nil); st != 202 {
		t.Fatalf("restart: %d %v", st, body)
	}
	if !g.waitLog("fieldgate started", 2, 20*time.Second) || !g.running() {
		t.Fatalf("no second start in the same process (running %v)", g.running())
	}
	took := time.Since(start)
	if !waitFor(10*time.Second, pageUp) {
		t.Fatal("the page is not back after the restart")
	}
	if g.cmd.Process.Pid != pid || !strings.Contains(g.log.String(), "restarting: executing fieldgate again") {
		t.Fatal("the restart did not execute the binary again in the same process")
	}
	again := newWebSession(t, base)
	if st, body := again.do("POST", "/api/v1/login", map[string]string{"password": password}); st != 200 {
		t.Fatalf("login after the restart: %d %v", st, body)
	}
	if p := pending(again); p != "[]" {
		t.Fatalf("pending after the restart: %s", p)
	}
	_, cfg := again.do("GET", "/api/v1/config", nil)
	if got := cfg["broker"].(map[string]any)["sys_interval"]; got != "3s" {
		t.Fatalf("sys_interval %v after the restart", got)
	}

	// Under systemd: exit 0, for Restart=always.
	t.Setenv("INVOCATION_ID", "e2e")
	if code, _ := g.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	g.start()
	if !waitFor(10*time.Second, pageUp) {
		t.Fatal("the page does not accept")
	}
	s = newWebSession(t, base)
	st, body = s.do("POST", "/api/v1/login", map[string]string{"password": password})
	if st != 200 {
		t.Fatalf("login: %d %v", st, body)
	}
	s.csrf = body["csrf"].(string)
	exitStart := time.Now()
	if st, body := s.do("POST", "/api/v1/restart", nil); st != 202 {
		t.Fatalf("restart: %d %v", st, body)
	}
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		t.Fatal("under systemd, the process did not exit for the restart")
	}
	exitTook := time.Since(exitStart)
	if c := g.cmd.ProcessState.ExitCode(); c != 0 {
		t.Fatalf("exit %d for the restart under systemd, want 0", c)
	}
	t.Logf("restart now: re-executed and serving again in %v (same pid); under systemd exited 0 in %v", took.Round(time.Millisecond), exitTook.Round(time.Millisecond))
}

// TestE2EWebRestart drives the page of the real binary in headless
// Chromium at 390×844 (gateway/web/e2e/restart.mjs): the Overview's
// history keeps its range and series across a reload; "read before save"
// of a device that does not answer says so in words at the address input;
// "Restart now" shows a countdown, "still not back" past the page's bound
// while its requests are dropped, then the login and the same tab once
// the binary, executed again, answers. Its screenshots go to
// docs/screenshots/ when FIELDGATE_SCREENSHOTS is set.
func TestE2EWebRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	node, e2eDir := requireBrowser(t)
	shots := screenshotDir(t)
	t.Setenv("INVOCATION_ID", "") // not under systemd: the binary executes itself again
	t.Setenv("NOTIFY_SOCKET", "")
	webAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	g := startWebGateway(t, webAddr)
	if !waitFor(10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", webAddr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatal("the page does not accept")
	}
	code, err := os.ReadFile(filepath.Join(g.dataDir, "setup-code"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	closed := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))) // nothing listens there
	cmd := exec.CommandContext(ctx, node, filepath.Join(e2eDir, "restart.mjs"), "http://"+webAddr, shots, closed)
	cmd.Env = append(os.Environ(), "FIELDGATE_SETUP_CODE="+strings.TrimSpace(string(code)))
	cmd.Dir = e2eDir
	runPageScript(t, cmd, nil)
	if !g.waitLog("fieldgate started", 2, 10*time.Second) {
		t.Fatal("the page's restart did not start the gateway again")
	}
}

// startWebGateway starts the real binary with the page on webAddr, MQTT on
// TCP only and a 5 s stop budget.
func startWebGateway(t *testing.T, webAddr string) *gateway {
	t.Helper()
	return startGatewayWith(t, "", func(g *gateway) string {
		return fmt.Sprintf(`version: 1
gateway: {data_dir: %q, stop_budget: 5s}
web: {enabled: true, address: %q, mdns: false}
mqttsn: {enabled: false}
coap: {enabled: false}
broker:
  listeners:
    tcp: {enabled: true, address: "127.0.0.1:%d"}
    websocket: {enabled: false}
`, g.dataDir, webAddr, g.port)
	})
}
