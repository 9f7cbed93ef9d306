package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/fieldgate/fieldgate/board/appliance"
	"github.com/fieldgate/fieldgate/internal/peertest"
)

// factoryYAML is a factory config on free loopback ports.
const factoryYAML = `version: 1
log: {format: json}
web: {address: "127.0.0.1:0", mdns: false}
broker:
  listeners:
    tcp: {address: "127.0.0.1:0"}
    websocket: {enabled: false}
mqttsn: {enabled: false}
coap: {enabled: false}
`

// runningGateway is `fieldgate run` in a child process whose JSON log is
// read for the first-boot line (setup code and page address).
type runningGateway struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan map[string]any
	done  chan error
}

func startRun(t *testing.T, args ...string) *runningGateway {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"run"}, args...)...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &runningGateway{t: t, cmd: cmd, lines: make(chan map[string]any, 1000), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				g.lines <- m
			}
		}
		close(g.lines)
		g.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		for range g.lines {
		}
	})
	return g
}

// firstBoot waits for the page's first-boot log line and returns the
// setup code and the page's base URL.
func (g *runningGateway) firstBoot() (code, base string) {
	g.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case m, ok := <-g.lines:
			if !ok {
				g.t.Fatal("fieldgate exited before its first-boot line")
			}
			if c, ok := m["setup_code"].(string); ok {
				return c, "http://" + m["address"].(string)
			}
		case <-deadline:
			g.t.Fatal("no first-boot line in 30s")
		}
	}
}

// stop sends SIGTERM and wants exit status 0.
func (g *runningGateway) stop() {
	g.t.Helper()
	g.cmd.Process.Signal(syscall.SIGTERM)
	for range g.lines {
	}
	if err := <-g.done; err != nil {
		g.t.Fatalf("fieldgate after SIGTERM: %v", err)
	}
}

// post sends a JSON request with the page's CSRF token.
func post(t *testing.T, c *http.Client, url, csrf string, body any) (int, map[string]any) {
	t.Helper()
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", url, bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-CSRF-Token", csrf)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}

// TestFirstBootSavedConfigAndFactoryReset is the appliance's life on its
// data directory: a first start reads the factory config and shows a
// setup code (also `fieldgate setup-code`); the setup saves the config
// under data/config (the factory file is never written); `fieldgate reset`
// refuses while the gateway runs; the page's factory reset stops the
// gateway, wipes config, login and data, and starts it again as new.
func TestFirstBootSavedConfigAndFactoryReset(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	factory := filepath.Join(dir, "etc", "fieldgate.yaml")
	os.MkdirAll(filepath.Dir(factory), 0o755)
	if err := os.WriteFile(factory, []byte(factoryYAML), 0o444); err != nil {
		t.Fatal(err)
	}
	saved := appliance.SavedConfig(data)
	g := startRun(t, "-config", saved, "-factory-config", factory, "-data", data)
	code, base := g.firstBoot()
	if out, _, st := fieldgate(t, nil, "setup-code", "-data", data); st != 0 || strings.TrimSpace(out) != code {
		t.Fatalf("setup-code: %d %q, want %q", st, out, code)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	if st, _ := post(t, c, base+"/api/v1/setup", "", map[string]string{"password": "correct horse", "gateway_id": "site-1"}); st != 403 {
		t.Fatalf("setup without code: %d", st)
	}
	st, body := post(t, c, base+"/api/v1/setup", "", map[string]string{"password": "correct horse", "gateway_id": "site-1", "setup_code": code})
	if st != 200 {
		t.Fatalf("setup: %d %v", st, body)
	}
	csrf := body["csrf"].(string)
	savedData, err := os.ReadFile(saved)
	if err != nil || !strings.Contains(string(savedData), "site-1") {
		t.Fatalf("saved config: %v\n%s", err, savedData)
	}
	if f, _ := os.ReadFile(factory); string(f) != factoryYAML {
		t.Fatal("the factory config was written")
	}
	if _, _, st := fieldgate(t, nil, "setup-code", "-data", data); st != 0 {
		t.Fatalf("setup-code after setup: %d", st)
	}
	_, errOut, st := fieldgate(t, nil, "reset", "--factory", "--yes", "-data", data)
	if st != 1 || !strings.Contains(errOut, "running") {
		t.Fatalf("reset while running: %d %q", st, errOut)
	}
	if _, err := os.Stat(saved); err != nil {
		t.Fatal("a refused reset removed the saved config")
	}
	if st, body := post(t, c, base+"/api/v1/factory-reset", csrf, map[string]string{"confirm": "site-1"}); st != 202 {
		t.Fatalf("factory reset: %d %v", st, body)
	}
	code2, base2 := g.firstBoot() // the same process, executed again
	if code2 == code {
		t.Fatal("the setup code did not change")
	}
	for _, p := range []string{saved, filepath.Join(data, "web-auth.json")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after the reset: %v", p, err)
		}
	}
	resp, err := c.Get(base2 + "/api/v1/session")
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if s["setup_required"] != true {
		t.Fatalf("session after reset: %v", s)
	}
	g.stop()

	// Stopped: the command line reset asks first, then wipes.
	if _, _, st := fieldgate(t, []byte("no\n"), "reset", "--factory", "-data", data); st != 1 {
		t.Fatalf("unconfirmed reset: %d", st)
	}
	if _, err := appliance.ReadSetupCode(data); err != nil {
		t.Fatal("an unconfirmed reset removed something")
	}
	out, errOut, st := fieldgate(t, []byte("reset\n"), "reset", "--factory", "-data", data)
	if st != 0 || !strings.Contains(out, "removed setup-code") {
		t.Fatalf("reset: %d\n%s\n%s", st, out, errOut)
	}
	if _, _, st := fieldgate(t, nil, "reset", "-data", data); st != 2 {
		t.Fatalf("reset without --factory: %d, want 2", st)
	}
}

// TestSavedConfigThatNoLongerLoads: a saved config the binary cannot read
// (a newer version's, after a rollback) is set aside, and the factory
// config keeps the page reachable.
func TestSavedConfigThatNoLongerLoads(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	factory := filepath.Join(dir, "factory.yaml")
	os.WriteFile(factory, []byte(factoryYAML), 0o644)
	saved := appliance.SavedConfig(data)
	os.MkdirAll(filepath.Dir(saved), 0o700)
	os.WriteFile(saved, []byte("version: 1\nfuture_section: {}\n"), 0o600)
	g := startRun(t, "-config", saved, "-factory-config", factory, "-data", data)
	g.firstBoot()
	if b, err := os.ReadFile(saved + ".rejected"); err != nil || !strings.Contains(string(b), "future_section") {
		t.Fatalf("rejected config: %v", err)
	}
	g.stop()
	// Without a factory config it is an error, as before.
	os.WriteFile(saved, []byte("version: 1\nfuture_section: {}\n"), 0o600)
	if _, errOut, st := fieldgate(t, nil, "run", "-config", saved, "-data", data); st != 1 || !strings.Contains(errOut, "future_section") {
		t.Fatalf("bad saved config without factory: %d %q", st, errOut)
	}
}

// TestAnonymousSetRefusedOnDefaults: on the default auth settings an
// anonymous client may publish readings but not southbound write commands
// (southbound/<device>/<point>/set, broker.auth.anonymous_deny_publish),
// which an authenticated user may; measured with mosquitto's clients.
func TestAnonymousSetRefusedOnDefaults(t *testing.T) {
	pub := peertest.Need(t, "mosquitto_pub", "mosquitto-clients")
	sub := peertest.Need(t, "mosquitto_sub", "mosquitto-clients")
	hash, err := bcrypt.GenerateFromPassword([]byte("ops-secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "fieldgate.yaml")
	users := "broker:\n  auth:\n    users: [{username: ops, password_hash: \"" + string(hash) + "\"}]\n"
	os.WriteFile(cfgPath, []byte(strings.Replace(factoryYAML, "broker:\n", users, 1)), 0o600)
	g := startRun(t, "-config", cfgPath, "-data", filepath.Join(dir, "data"))
	var port string
	waitLine(t, g, func(m map[string]any) bool {
		addr, ok := m["mqtt_tcp"].(string)
		if ok {
			_, port, _ = strings.Cut(addr, "127.0.0.1:")
		}
		return ok
	})

	// An authenticated watcher of every set topic.
	watch := exec.Command(sub, "-h", "127.0.0.1", "-p", port, "-V", "mqttv5", "-u", "ops", "-P", "ops-secret", "-q", "1", "-t", "southbound/#", "-t", "sensors/#", "-v")
	stdout, _ := watch.StdoutPipe()
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer watch.Process.Kill()
	got := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			got <- sc.Text()
		}
		close(got)
	}()
	expect := func(prefix string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case l, ok := <-got:
				if !ok {
					t.Fatalf("mosquitto_sub ended before %q", prefix)
				}
				if strings.HasPrefix(l, "southbound/") && strings.Contains(l, "/set anonymous") {
					t.Fatalf("an anonymous set command reached the subscriber: %q", l)
				}
				if strings.HasPrefix(l, prefix) {
					return
				}
			case <-timeout:
				t.Fatalf("no %q line from mosquitto_sub in 10s", prefix)
			}
		}
	}
	publish := func(user, topic, msg string) (string, error) {
		args := []string{"-h", "127.0.0.1", "-p", port, "-V", "mqttv5", "-q", "1", "-t", topic, "-m", msg}
		if user != "" {
			args = append(args, "-u", user, "-P", "ops-secret")
		}
		out, err := exec.Command(pub, args...).CombinedOutput()
		return string(out), err
	}
	// The watcher is subscribed once a probe reaches it.
	subscribed := false
	for i := 0; i < 50 && !subscribed; i++ {
		publish("ops", "sensors/probe", "x")
		select {
		case l := <-got:
			subscribed = strings.HasPrefix(l, "sensors/probe")
		case <-time.After(200 * time.Millisecond):
		}
	}
	if !subscribed {
		t.Fatal("mosquitto_sub never got a probe")
	}
	out, err := publish("", "southbound/plc1/valve/set", "anonymous")
	if err == nil && !strings.Contains(out, "Not authorized") {
		t.Fatalf("anonymous set command: accepted (%q)", out)
	}
	t.Logf("anonymous set command refused: %v %s", err, strings.TrimSpace(out))
	if out, err := publish("", "sensors/boiler/temp", "71.5"); err != nil {
		t.Fatalf("anonymous reading refused: %v %s", err, out)
	}
	expect("sensors/boiler/temp 71.5")
	if out, err := publish("ops", "southbound/plc1/valve/set", "ops"); err != nil {
		t.Fatalf("authenticated set command: %v %s", err, out)
	}
	expect("southbound/plc1/valve/set ops")
	g.stop()
}

// waitLine waits for a log line of g for which f is true.
func waitLine(t *testing.T, g *runningGateway, f func(map[string]any) bool) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case m, ok := <-g.lines:
			if !ok {
				t.Fatal("fieldgate exited")
			}
			if f(m) {
				return
			}
		case <-timeout:
			t.Fatal("log line not seen in 30s")
		}
	}
}
