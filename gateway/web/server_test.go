package web

import (
	"github.com/fieldgate/fieldgate/gateway/config"

	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/secret"
	"github.com/fieldgate/fieldgate/internal/testwait"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
	"github.com/fieldgate/fieldgate/uplink"
)

const testPassword = "correct horse battery"

// harness is a running server with a fake backend.
type harness struct {
	t       *testing.T
	srv     *Server
	b       *fakeBackend
	base    string
	dataDir string
	clock   *fakeClock
}

type fakeClock struct {
	mu   sync.Mutex
	now  time.Time
	real bool // follow the wall clock (for the browser tests)
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.real {
		return time.Now()
	}
	return c.now
}

func (c *fakeClock) useReal() {
	c.mu.Lock()
	c.real = true
	c.mu.Unlock()
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Address = "127.0.0.1:0"
	cfg.MDNS = false // TestMDNSAdvertise turns it on
	return cfg
}

func start(t *testing.T, cfg Config, b *fakeBackend) *harness {
	t.Helper()
	if b == nil {
		b = newFakeBackend()
	}
	h := &harness{t: t, b: b, dataDir: t.TempDir(), clock: &fakeClock{now: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}}
	srv, err := New(cfg, b, Options{DataDir: h.dataDir, Version: "test", BcryptCost: bcrypt.MinCost, Now: h.clock.Now,
		Logger: slogTo(b.ring)})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	h.base = "http://" + srv.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return h
}

// client is a browser: a cookie jar and the CSRF token it was given.
type client struct {
	h    *harness
	c    *http.Client
	csrf string
	// bearer, when set, authenticates instead of the cookie.
	bearer string
}

func (h *harness) client() *client {
	jar, _ := cookiejar.New(nil)
	return &client{h: h, c: &http.Client{Jar: jar, Timeout: 10 * time.Second}}
}

// do sends a request; body is JSON-encoded unless it is a string.
func (c *client) do(method, path string, body any) (int, map[string]any, http.Header) {
	c.h.t.Helper()
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd, ct = strings.NewReader(b), "application/yaml"
	default:
		data, _ := json.Marshal(b)
		rd, ct = bytes.NewReader(data), "application/json"
	}
	req, _ := http.NewRequest(method, c.h.base+path, rd)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if c.csrf != "" {
		req.Header.Set("X-CSRF-Token", c.csrf)
	}
	if c.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &m); err != nil {
			c.h.t.Fatalf("%s %s: bad JSON %q", method, path, raw)
		}
	} else {
		m = map[string]any{"raw": string(raw)}
	}
	return resp.StatusCode, m, resp.Header
}

// setUp runs the first boot setup and returns a logged-in client.
func (h *harness) setUp() *client {
	h.t.Helper()
	c := h.client()
	code, body, _ := c.do("POST", "/api/v1/setup", map[string]string{"password": testPassword, "gateway_id": "plant-7", "setup_code": h.setupCode()})
	if code != 200 {
		h.t.Fatalf("setup: %d %v", code, body)
	}
	c.csrf = body["csrf"].(string)
	return c
}

func TestFirstBootAndLogin(t *testing.T) {
	h := start(t, testConfig(), nil)
	c := h.client()
	_, s, _ := c.do("GET", "/api/v1/session", nil)
	if s["setup_required"] != true || s["logged_in"] != false {
		t.Fatalf("session before setup: %v", s)
	}
	// Nothing but setup works before it.
	if code, _, _ := c.do("GET", "/api/v1/status", nil); code != 401 {
		t.Fatalf("status before setup: %d", code)
	}
	if code, body, _ := c.do("POST", "/api/v1/setup", map[string]string{"password": "short", "setup_code": h.setupCode()}); code != 400 || !strings.Contains(body["fields"].([]any)[0].(map[string]any)["field"].(string), "password") {
		t.Fatalf("short password: %d %v", code, body)
	}
	c = h.setUp()
	if h.b.Config().Gateway.ID != "plant-7" {
		t.Fatalf("gateway id not applied: %q", h.b.Config().Gateway.ID)
	}
	if code, _, _ := c.do("GET", "/api/v1/status", nil); code != 200 {
		t.Fatalf("status after setup: %d", code)
	}
	// A second setup is refused.
	other := h.client()
	if code, _, _ := other.do("POST", "/api/v1/setup", map[string]string{"password": "another password"}); code != 409 {
		t.Fatalf("second setup: %d", code)
	}
	// The auth file holds a bcrypt hash, never the password, readable by us only.
	data, err := os.ReadFile(filepath.Join(h.dataDir, authFile))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(testPassword)) || !bytes.Contains(data, []byte("$2a$")) {
		t.Fatalf("auth file: %s", data)
	}
	if st, _ := os.Stat(filepath.Join(h.dataDir, authFile)); st.Mode().Perm() != 0o600 {
		t.Fatalf("auth file mode %v", st.Mode())
	}
	// Login, logout.
	if code, _, _ := other.do("POST", "/api/v1/login", map[string]string{"password": "wrong"}); code != 401 {
		t.Fatalf("wrong password: %d", code)
	}
	code, body, hdr := other.do("POST", "/api/v1/login", map[string]string{"password": testPassword})
	if code != 200 {
		t.Fatalf("login: %d %v", code, body)
	}
	cookie := hdr.Get("Set-Cookie")
	for _, want := range []string{"HttpOnly", "SameSite=Strict", Cookie + "="} {
		if !strings.Contains(cookie, want) {
			t.Errorf("cookie %q lacks %s", cookie, want)
		}
	}
	other.csrf = body["csrf"].(string)
	if code, _, _ := other.do("POST", "/api/v1/logout", nil); code != 200 {
		t.Fatalf("logout: %d", code)
	}
	if code, _, _ := other.do("GET", "/api/v1/status", nil); code != 401 {
		t.Fatalf("status after logout: %d", code)
	}
	// A restart keeps the password: a new server on the same data dir.
	srv2, err := New(testConfig(), h.b, Options{DataDir: h.dataDir, BcryptCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.ln.Close()
	if !srv2.auth.hasPassword() || !srv2.auth.checkPassword(testPassword) {
		t.Fatal("password lost across restart")
	}
}

func TestSessionExpiry(t *testing.T) {
	cfg := testConfig()
	cfg.SessionTTL = time.Hour
	h := start(t, cfg, nil)
	c := h.setUp()
	h.clock.Add(59 * time.Minute)
	if code, _, _ := c.do("GET", "/api/v1/status", nil); code != 200 {
		t.Fatalf("active session: %d", code)
	}
	h.clock.Add(61 * time.Minute)
	if code, _, _ := c.do("GET", "/api/v1/status", nil); code != 401 {
		t.Fatalf("idle session: %d", code)
	}
}

func TestCSRF(t *testing.T) {
	h := start(t, testConfig(), nil)
	c := h.setUp()
	good := c.csrf
	for _, tok := range []string{"", "wrong"} {
		c.csrf = tok
		code, _, _ := c.do("PUT", "/api/v1/broker/users/alice", map[string]string{"password": "pw"})
		if code != 403 {
			t.Errorf("csrf %q: %d, want 403", tok, code)
		}
		if code, _, _ := c.do("DELETE", "/api/v1/clients/sensor-1", nil); code != 403 {
			t.Errorf("csrf %q disconnect: %d", tok, code)
		}
	}
	if h.b.applied != 1 { // the setup's gateway id only
		t.Fatalf("a change went through without CSRF: %d applies", h.b.applied)
	}
	c.csrf = good
	if code, _, _ := c.do("DELETE", "/api/v1/clients/sensor-1", nil); code != 200 {
		t.Fatalf("disconnect with csrf: %d", code)
	}
	// Logout without the token does nothing.
	c.csrf = ""
	if code, _, _ := c.do("POST", "/api/v1/logout", nil); code != 403 {
		t.Fatalf("logout without csrf: %d", code)
	}
	// JSON only: a form post from another site cannot log in.
	req, _ := http.NewRequest("POST", h.base+"/api/v1/login", strings.NewReader("password=x"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("form login: %d", resp.StatusCode)
	}
}

func TestLoginRateLimit(t *testing.T) {
	cfg := testConfig()
	cfg.LoginFreeAttempts = 3
	cfg.LoginDelay = time.Second
	cfg.LoginDelayMax = 8 * time.Second
	h := start(t, cfg, nil)
	h.setUp()
	c := h.client()
	wrong := map[string]string{"password": "guess"}
	for i := range 3 {
		if code, _, _ := c.do("POST", "/api/v1/login", wrong); code != 401 {
			t.Fatalf("attempt %d: %d", i, code)
		}
	}
	// The 4th wrong one costs 1s, then 2s, 4s, 8s, 8s.
	for _, want := range []int{1, 2, 4, 8, 8} {
		code, body, hdr := c.do("POST", "/api/v1/login", wrong)
		if code != 429 || hdr.Get("Retry-After") != itoa(want) {
			t.Fatalf("want 429 after %ds, got %d %v %q", want, code, body, hdr.Get("Retry-After"))
		}
		// Even the right password is refused while waiting.
		if code, _, _ := c.do("POST", "/api/v1/login", map[string]string{"password": testPassword}); code != 429 {
			t.Fatalf("right password during the wait: %d", code)
		}
		h.clock.Add(time.Duration(want) * time.Second)
	}
	if code, _, _ := c.do("POST", "/api/v1/login", map[string]string{"password": testPassword}); code != 200 {
		t.Fatalf("after the wait: %d", code)
	}
	// Success clears the address.
	if code, _, _ := c.do("POST", "/api/v1/login", wrong); code != 401 {
		t.Fatalf("after success: %d", code)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestLimiterBounded(t *testing.T) {
	l := newLimiter(0, time.Second, time.Minute)
	now := time.Now()
	for i := range maxLimiterEntries * 3 {
		l.reserve(net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)).String(), now)
	}
	if len(l.m) > maxLimiterEntries {
		t.Fatalf("%d addresses remembered", len(l.m))
	}
}

func TestBearerTokenAndMetrics(t *testing.T) {
	h := start(t, testConfig(), nil)
	c := h.setUp()
	anon := h.client()
	if code, _, _ := anon.do("GET", "/metrics", nil); code != 401 {
		t.Fatalf("metrics without auth: %d", code)
	}
	code, body, _ := c.do("POST", "/api/v1/tokens", map[string]string{"name": "prometheus", "scope": "admin"})
	if code != 201 {
		t.Fatalf("create token: %d %v", code, body)
	}
	tok := body["token"].(string)
	script := h.client()
	script.bearer = tok
	code, body, _ = script.do("GET", "/metrics", nil)
	if code != 200 || !strings.Contains(body["raw"].(string), "go_goroutines") || !strings.Contains(body["raw"].(string), "fieldgate_web_requests_total") {
		t.Fatalf("metrics with token: %d %.300v", code, body)
	}
	// Tokens need no CSRF: they are not sent by browsers on their own.
	if code, _, _ := script.do("PUT", "/api/v1/broker/users/alice", map[string]string{"password": "pw"}); code != 200 {
		t.Fatalf("change with token: %d", code)
	}
	// The list never shows the token or its hash; the file holds a hash only.
	_, list, _ := c.do("GET", "/api/v1/tokens", nil)
	raw, _ := json.Marshal(list)
	data, _ := os.ReadFile(filepath.Join(h.dataDir, authFile))
	if bytes.Contains(raw, []byte(tok)) || bytes.Contains(raw, []byte(hashToken(tok))) || bytes.Contains(data, []byte(tok)) {
		t.Fatalf("token leaked: %s / %s", raw, data)
	}
	id := list["tokens"].([]any)[0].(map[string]any)["id"].(string)
	if code, _, _ := c.do("DELETE", "/api/v1/tokens/"+id, nil); code != 200 {
		t.Fatalf("delete token: %d", code)
	}
	if code, _, _ := script.do("GET", "/api/v1/status", nil); code != 401 {
		t.Fatalf("deleted token still works: %d", code)
	}
	script.bearer = "fgt_forged"
	if code, _, _ := script.do("GET", "/api/v1/status", nil); code != 401 {
		t.Fatalf("forged token: %d", code)
	}
}

func TestMetricsOpen(t *testing.T) {
	cfg := testConfig()
	cfg.MetricsAuth = false
	h := start(t, cfg, nil)
	if code, _, _ := h.client().do("GET", "/metrics", nil); code != 200 {
		t.Fatalf("open metrics: %d", code)
	}
}

func TestHealthAndReady(t *testing.T) {
	h := start(t, testConfig(), nil)
	c := h.client()
	if code, _, _ := c.do("GET", "/healthz", nil); code != 200 {
		t.Fatalf("healthz: %d", code)
	}
	if code, _, _ := c.do("GET", "/readyz", nil); code != 200 {
		t.Fatalf("readyz: %d", code)
	}
	h.b.mu.Lock()
	h.b.ready = false
	h.b.mu.Unlock()
	if code, _, _ := c.do("GET", "/readyz", nil); code != 503 {
		t.Fatalf("readyz not ready: %d", code)
	}
}

// secretUplink is a config with every kind of secret set.
func withSecrets(b *fakeBackend) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("alicepw"), bcrypt.MinCost)
	b.cfg.Uplink.Password = secret.New("cloud-secret-pw")
	b.cfg.Uplink.Username = "gw"
	b.cfg.Broker.Auth.Users = []mqtt.User{{Username: "alice", PasswordHash: secret.New(string(hash))}, {Username: "bob", PasswordHash: secret.New(string(hash) + "")}}
}

func TestSecretsNeverReturned(t *testing.T) {
	b := newFakeBackend()
	withSecrets(b)
	h := start(t, testConfig(), b)
	c := h.setUp()
	secrets := []string{"cloud-secret-pw", b.cfg.Broker.Auth.Users[0].PasswordHash.Reveal(), testPassword}
	check := func(what string, data []byte) {
		for _, s := range secrets {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("%s holds secret %q", what, s)
			}
		}
	}
	for _, path := range []string{"/api/v1/config", "/api/v1/config.yaml", "/api/v1/status", "/api/v1/logs?level=debug", "/api/v1/tokens", "/api/v1/session"} {
		_, body, _ := c.do("GET", path, nil)
		raw, _ := json.Marshal(body)
		check(path, raw)
	}
	_, cfgBody, _ := c.do("GET", "/api/v1/config", nil)
	if cfgBody["uplink"].(map[string]any)["password"] != Redacted {
		t.Errorf("uplink password not shown as redacted: %v", cfgBody["uplink"].(map[string]any)["password"])
	}
	// The diagnostics bundle.
	_, zipBody, _ := c.do("GET", "/api/v1/diagnostics", nil)
	zr, err := zip.NewReader(strings.NewReader(zipBody["raw"].(string)), int64(len(zipBody["raw"].(string))))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		rc, _ := f.Open()
		data, _ := io.ReadAll(rc)
		rc.Close()
		check("diagnostics "+f.Name, data)
	}
	if strings.Join(names, ",") != "config.yaml,status.json,logs.json,versions.json" {
		t.Errorf("bundle holds %v", names)
	}
	// And the logs written meanwhile (login, config changes).
	c.do("PUT", "/api/v1/broker/users/carol", map[string]string{"password": "carol-secret-pw"})
	secrets = append(secrets, "carol-secret-pw")
	raw, _ := json.Marshal(b.ring.Logs(-8, "", 1000))
	check("logs", raw)
}

func TestRedactedUploadKeepsSecrets(t *testing.T) {
	b := newFakeBackend()
	withSecrets(b)
	h := start(t, testConfig(), b)
	c := h.setUp()
	before := b.Config()
	_, y, _ := c.do("GET", "/api/v1/config.yaml", nil)
	// Reorder the users and change something else: secrets follow the names.
	text := strings.Replace(y["raw"].(string), "sys_interval: 10s", "sys_interval: 20s", 1)
	code, body, _ := c.do("PUT", "/api/v1/config", text)
	if code != 200 {
		t.Fatalf("upload: %d %v", code, body)
	}
	after := b.Config()
	if after.Broker.SysInterval != 20*time.Second {
		t.Fatalf("change not applied: %v", after.Broker.SysInterval)
	}
	if after.Uplink.Password != before.Uplink.Password || after.Broker.Auth.Users[1].PasswordHash != before.Broker.Auth.Users[1].PasswordHash {
		t.Fatalf("secrets not restored: %+v", after.Uplink)
	}
	// Reordered users keep their own hash.
	users := map[string]any{"username": "bob", "password_hash": Redacted}
	m, _ := configMap(before)
	m["broker"].(map[string]any)["auth"].(map[string]any)["users"] = []any{users}
	data, _ := json.Marshal(m)
	if code, body, _ := c.do("PUT", "/api/v1/config", string(data)); code != 200 {
		t.Fatalf("json upload: %d %v", code, body)
	}
	if u := b.Config().Broker.Auth.Users; len(u) != 1 || u[0].PasswordHash != before.Broker.Auth.Users[1].PasswordHash {
		t.Fatalf("bob's hash: %+v", u)
	}
	// A new uplink password replaces the old one.
	up, _ := configMap(b.Config())
	sec := up["uplink"].(map[string]any)
	sec["password"] = "new-cloud-pw"
	if code, body, _ := c.do("PUT", "/api/v1/config/uplink", sec); code != 200 {
		t.Fatalf("uplink section: %d %v", code, body)
	}
	if b.Config().Uplink.Password.Reveal() != "new-cloud-pw" {
		t.Fatal("new password not taken")
	}
}

func TestValidationErrorsPerField(t *testing.T) {
	h := start(t, testConfig(), nil)
	c := h.setUp()
	applied := h.b.applied
	tests := []struct {
		name, method, path string
		body               any
		fields             []string
	}{
		{"uplink section", "PUT", "/api/v1/config/uplink", map[string]any{"enabled": true, "transport": "carrier-pigeon", "inflight": 0}, []string{"uplink.servers", "uplink.transport", "uplink.inflight"}},
		{"unknown key", "PUT", "/api/v1/config/uplink", map[string]any{"colour": "red"}, []string{"uplink.colour"}},
		{"wrong type", "PUT", "/api/v1/config/broker", map[string]any{"sys_interval": "soon"}, []string{"broker.sys_interval"}},
		{"yaml file", "PUT", "/api/v1/config", "version: 1\nbroker:\n  limits:\n    max_packet_size: 5\n", []string{"broker.limits.max_packet_size"}},
		{"bad version", "PUT", "/api/v1/config", "version: 7\n", []string{"version"}},
		{"bad yaml", "PUT", "/api/v1/config", "version: 1\n  : [\n", []string{""}},
		{"token name", "POST", "/api/v1/tokens", map[string]string{"name": ""}, []string{"name"}},
		{"live filter", "GET", "/api/v1/live?filter=a/%23/b", nil, []string{"filter"}},
		{"logs level", "GET", "/api/v1/logs?level=loud", nil, []string{"level"}},
		{"file", "POST", "/api/v1/files/ca.pem", "not a pem", []string{"file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := c.do(tc.method, tc.path, tc.body)
			if code != 400 {
				t.Fatalf("%d %v", code, body)
			}
			var got []string
			for _, f := range body["fields"].([]any) {
				got = append(got, f.(map[string]any)["field"].(string))
			}
			for _, want := range tc.fields {
				found := false
				for _, g := range got {
					found = found || strings.HasPrefix(g, want)
				}
				if !found {
					t.Errorf("no error for %q in %v", want, body["fields"])
				}
			}
		})
	}
	if h.b.applied != applied {
		t.Fatal("an invalid config was applied")
	}
	// Dry run validates without applying; restart needs are reported.
	m, _ := configMap(h.b.Config())
	m["broker"].(map[string]any)["listeners"].(map[string]any)["tcp"].(map[string]any)["address"] = ":1999"
	data, _ := json.Marshal(m)
	if code, body, _ := c.do("PUT", "/api/v1/config?dry_run=1", string(data)); code != 200 || body["valid"] != true || h.b.applied != applied {
		t.Fatalf("dry run: %d %v", code, body)
	}
	code, body, _ := c.do("PUT", "/api/v1/config", string(data))
	if code != 200 || body["restart"].([]any)[0] != "broker.listeners" {
		t.Fatalf("apply: %d %v", code, body)
	}
}

func TestModbusAndUplinkActions(t *testing.T) {
	h := start(t, testConfig(), nil)
	c := h.setUp()
	code, body, _ := c.do("POST", "/api/v1/southbound/devices/meter/read", nil)
	if code != 200 || body["points"].([]any)[0].(map[string]any)["value"] != 230.5 {
		t.Fatalf("read now: %d %v", code, body)
	}
	if code, _, _ := c.do("POST", "/api/v1/southbound/devices/ghost/read", nil); code != 502 {
		t.Fatalf("read ghost: %d", code)
	}
	if code, _, _ := c.do("POST", "/api/v1/southbound/devices/meter/points/setpoint/write", map[string]any{"value": 21.5}); code != 200 || h.b.written[0] != "meter/setpoint" {
		t.Fatalf("write: %d %v", code, h.b.written)
	}
	if code, body, _ := c.do("GET", "/api/v1/southbound/serial-ports", nil); code != 200 || len(body["ports"].([]any)) != 1 {
		t.Fatalf("serial ports: %d %v", code, body)
	}
	up, _ := configMap(h.b.Config())
	sec := up["uplink"].(map[string]any)
	sec["servers"] = []any{map[string]any{"host": "cloud.invalid", "tls_port": 8883, "quic_port": 14567}}
	code, body, _ = c.do("POST", "/api/v1/uplink/test", sec)
	if code != 200 || body["ok"] != false || !strings.Contains(body["error"].(string), "DNS") {
		t.Fatalf("uplink test: %d %v", code, body)
	}
	if h.b.Config().Uplink.Servers != nil {
		t.Fatal("uplink test applied the settings")
	}
	// Upload a certificate.
	pemData, err := os.ReadFile(filepath.Join("testdata", "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	code, body, _ = c.do("POST", "/api/v1/files/uplink-ca.pem", string(pemData))
	if code != 200 || body["kind"] != "certificate" {
		t.Fatalf("upload: %d %v", code, body)
	}
	if got, _ := os.ReadFile(body["path"].(string)); !bytes.Equal(got, pemData) {
		t.Fatal("uploaded file differs")
	}
	if code, _, _ := c.do("POST", "/api/v1/files/..%2Fescape.pem", string(pemData)); code != 400 && code != 404 {
		t.Fatalf("path escape: %d", code)
	}
}

func TestLiveStream(t *testing.T) {
	h := start(t, testConfig(), nil)
	c := h.setUp()
	req, _ := http.NewRequest("GET", h.base+"/api/v1/live?filter=sensors/%2B/temp", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := c.c.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	waitFor(t, func() bool { return h.b.subscribers() == 1 })
	h.b.publish(bus.Message{Topic: "sensors/a/temp", Payload: []byte(`{"v":21.5}`), QoS: 1, Time: time.Now()})
	h.b.publish(bus.Message{Topic: "sensors/a/humidity", Payload: []byte(`50`)})
	h.b.publish(bus.Message{Topic: "sensors/b/temp", Payload: []byte{0xff, 0x00, 0x01}})
	ev := readEvent(t, bufio.NewReader(resp.Body))
	var got []liveMessage
	for len(got) < 2 {
		got = append(got, ev.Messages...)
		if len(got) < 2 {
			ev = readEvent(t, bufio.NewReader(resp.Body))
		}
	}
	if got[0].Topic != "sensors/a/temp" || *got[0].Text != `{"v":21.5}` || got[1].Topic != "sensors/b/temp" || !bytes.Equal(got[1].Base64, []byte{0xff, 0, 1}) {
		t.Fatalf("got %+v", got)
	}
	cancel()
	waitFor(t, func() bool { return h.b.subscribers() == 0 })
}

func TestLiveStreamBounded(t *testing.T) {
	cfg := testConfig()
	cfg.LiveStreams = 1
	h := start(t, cfg, nil)
	c := h.setUp()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", h.base+"/api/v1/live", nil)
	resp, err := c.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	waitFor(t, func() bool { return h.b.subscribers() == 1 })
	if code, _, _ := c.do("GET", "/api/v1/live", nil); code != 503 {
		t.Fatalf("second stream: %d", code)
	}
	// A flood is dropped and counted, never queued without bound.
	for i := range 10 * liveQueue {
		h.b.publish(bus.Message{Topic: "t", Payload: []byte{byte(i)}})
	}
	br := bufio.NewReader(resp.Body)
	for {
		if ev := readEvent(t, br); ev.Dropped > 0 {
			break
		}
	}
}

func readEvent(t *testing.T, br *bufio.Reader) liveBatchEvent {
	t.Helper()
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read event: %v", err)
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			var ev liveBatchEvent
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				t.Fatal(err)
			}
			return ev
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testwait.For(t, 5*time.Second, "the condition", cond)
}

func TestBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig()
	cfg.Address = ln.Addr().String()
	if _, err := New(cfg, newFakeBackend(), Options{DataDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("busy port: %v", err)
	}
}

func TestStaticPage(t *testing.T) {
	h := start(t, testConfig(), nil)
	c := h.client()
	for _, p := range []string{"/", "/app.js", "/app.css"} {
		code, body, hdr := c.do("GET", p, nil)
		if code != 200 || len(body["raw"].(string)) < 100 {
			t.Fatalf("%s: %d", p, code)
		}
		if !strings.Contains(hdr.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Fatalf("%s: no CSP", p)
		}
		if strings.Contains(body["raw"].(string), "http://") || strings.Contains(body["raw"].(string), "https://") {
			t.Errorf("%s refers to an outside URL", p)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := Config{Address: "nope", TLS: config.WebTLS{Cert: "x.pem"}, SessionTTL: time.Second, LoginFreeAttempts: -1, LiveStreams: 0}
	err := bad.Validate()
	for _, want := range []string{"address:", "tls.key:", "session_ttl:", "login_free_attempts:", "login_delay:", "live_streams:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("no %q in %v", want, err)
		}
	}
}

// TestBrokerBackedLiveView runs the live view over the real broker: a
// message published on the bus reaches the SSE stream.
func TestBrokerBackedLiveView(t *testing.T) {
	mc := mqtt.DefaultConfig()
	mc.Listeners.TCP.Address = "127.0.0.1:0"
	mc.Listeners.WebSocket.Enabled = false
	broker, err := mqtt.New(mc, mqtt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- broker.Run(ctx) }()
	defer func() { cancel(); <-done }()

	b := newFakeBackend()
	var subs sync.WaitGroup
	subs.Add(1)
	b.sub = func(filter string, h bus.Handler) (func(), error) {
		defer subs.Done()
		return broker.Subscribe(filter, h)
	}
	h := start(t, testConfig(), b)
	c := h.setUp()
	req, _ := http.NewRequestWithContext(ctx, "GET", h.base+"/api/v1/live?filter=plant/%23", nil)
	resp, err := c.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	subs.Wait()
	if err := broker.Publish(ctx, bus.Message{Topic: "plant/line1/speed", Payload: []byte("42"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	ev := readEvent(t, bufio.NewReader(resp.Body))
	if len(ev.Messages) != 1 || ev.Messages[0].Topic != "plant/line1/speed" || *ev.Messages[0].Text != "42" {
		t.Fatalf("got %+v", ev)
	}
	_ = uplink.Status{}
}
