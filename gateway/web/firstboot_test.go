package web

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/fieldgate/fieldgate/board/appliance"
)

// setupCode is the first-boot setup code the server wrote in its data dir.
func (h *harness) setupCode() string {
	h.t.Helper()
	data, err := os.ReadFile(filepath.Join(h.dataDir, appliance.SetupCodeFile))
	if err != nil {
		h.t.Fatalf("setup code: %v", err)
	}
	return strings.TrimSpace(string(data))
}

// startWith is start with a hook on the server's options.
func startWith(t *testing.T, cfg Config, b *fakeBackend, opt func(*Options)) *harness {
	t.Helper()
	h := &harness{t: t, b: b, dataDir: t.TempDir(), clock: &fakeClock{now: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}}
	o := Options{DataDir: h.dataDir, Version: "test", BcryptCost: bcrypt.MinCost, Now: h.clock.Now, Logger: slogTo(b.ring)}
	opt(&o)
	srv, err := New(cfg, b, o)
	if err != nil {
		t.Fatal(err)
	}
	h.srv, h.base = srv, "http://"+srv.Addr().String()
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

// TestSetupNeedsTheCode: the first boot is refused without the setup code,
// and with a wrong one (slowed down per address like passwords); the right
// one sets the password, and the code is gone afterwards.
func TestSetupNeedsTheCode(t *testing.T) {
	cfg := testConfig()
	cfg.LoginFreeAttempts = 3
	cfg.LoginDelay = time.Minute
	b := newFakeBackend()
	h := start(t, cfg, b)
	st, err := os.Stat(filepath.Join(h.dataDir, appliance.SetupCodeFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("setup code file: %v %v", st, err)
	}
	code := h.setupCode()
	if !strings.Contains(logText(b), code) {
		t.Errorf("the setup code is not in the log")
	}
	c := h.client()
	_, s, _ := c.do("GET", "/api/v1/session", nil)
	if s["setup_required"] != true || !strings.HasSuffix(s["setup_code_file"].(string), appliance.SetupCodeFile) {
		t.Fatalf("session: %v", s)
	}
	req := map[string]string{"password": testPassword, "gateway_id": "thief"}
	if st, body, _ := c.do("POST", "/api/v1/setup", req); st != 403 || !strings.Contains(body["error"].(string), "setup code") {
		t.Fatalf("no code: %d %v", st, body)
	}
	req["setup_code"] = "ABCDE-FGHJK"
	if st, _, _ := c.do("POST", "/api/v1/setup", req); st != 403 {
		t.Fatalf("wrong code: %d", st)
	}
	if st, _, _ := c.do("POST", "/api/v1/setup", req); st != 403 {
		t.Fatalf("third wrong code: %d", st)
	}
	// After three the next attempt waits, refused before the code is
	// checked, even when it is right.
	req["setup_code"] = code
	if st, _, hdr := c.do("POST", "/api/v1/setup", req); st != 429 || hdr.Get("Retry-After") == "" {
		t.Fatalf("right code during the wait: %d", st)
	}
	if h.srv.auth.hasPassword() || b.Config().Gateway.ID == "thief" {
		t.Fatal("a refused setup changed something")
	}
	h.clock.Add(2 * time.Minute)
	req["gateway_id"] = "plant-7"
	req["setup_code"] = strings.ToLower(strings.ReplaceAll(code, "-", " ")) // typed loosely
	if st, body, _ := c.do("POST", "/api/v1/setup", req); st != 200 {
		t.Fatalf("right code: %d %v", st, body)
	}
	if _, err := os.Stat(filepath.Join(h.dataDir, appliance.SetupCodeFile)); !os.IsNotExist(err) {
		t.Fatalf("setup code file kept after setup: %v", err)
	}
	if b.Config().Gateway.ID != "plant-7" {
		t.Fatalf("gateway id %q", b.Config().Gateway.ID)
	}
	// A restarted server after setup has no code.
	srv2, err := New(testConfig(), b, Options{DataDir: h.dataDir, BcryptCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.ln.Close()
	if srv2.gate.current() != "" {
		t.Fatal("setup code after setup")
	}
}

func logText(b *fakeBackend) string {
	var sb strings.Builder
	for _, e := range b.ring.Logs(-8, "", 1000) {
		sb.WriteString(e.Message)
		for k, v := range e.Attrs {
			sb.WriteString(" " + k + "=")
			if s, ok := v.(string); ok {
				sb.WriteString(s)
			}
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

// TestSetupLANAccess: the wizard's answer on anonymous LAN devices is
// saved with the setup; an unknown listener is refused and sets nothing.
func TestSetupLANAccess(t *testing.T) {
	b := newFakeBackend()
	h := start(t, testConfig(), b)
	c := h.client()
	_, e, _ := c.do("GET", "/api/v1/exposure", nil)
	rows := e["listeners"].([]any)
	var open []string
	for _, r := range rows {
		m := r.(map[string]any)
		if m["anonymous"] == true {
			open = append(open, m["listener"].(string))
			if m["everywhere"] != true || !slices.Contains(m["denied_to_anonymous"].([]any), any("southbound/+/+/set")) {
				t.Errorf("row %v", m)
			}
		}
	}
	if want := []string{"tcp", "websocket", "mqttsn", "coap"}; !slices.Equal(open, want) {
		t.Fatalf("anonymous on defaults: %v, want %v", open, want)
	}
	bad := map[string]any{"password": testPassword, "setup_code": h.setupCode(), "lan": map[string]any{"anonymous": true, "listeners": []string{"tcp", "telnet"}}}
	if st, body, _ := c.do("POST", "/api/v1/setup", bad); st != 400 || !strings.Contains(body["fields"].([]any)[0].(map[string]any)["field"].(string), "lan.listeners") {
		t.Fatalf("unknown listener: %d %v", st, body)
	}
	if h.srv.auth.hasPassword() {
		t.Fatal("refused setup set the password")
	}
	good := map[string]any{"password": testPassword, "setup_code": h.setupCode(), "lan": map[string]any{"anonymous": true, "listeners": []string{"mqttsn"}}}
	st, body, _ := c.do("POST", "/api/v1/setup", good)
	if st != 200 {
		t.Fatalf("setup: %d %v", st, body)
	}
	a := b.Config().Broker.Auth
	if !a.AllowAnonymous || !slices.Equal(a.AnonymousListeners, []string{"mqttsn"}) {
		t.Fatalf("auth after setup: %+v", a)
	}
	// After setup the exposure needs a login.
	if st, _, _ := h.client().do("GET", "/api/v1/exposure", nil); st != 401 {
		t.Fatalf("exposure without login after setup: %d", st)
	}
	c.csrf = body["csrf"].(string)
	_, e, _ = c.do("GET", "/api/v1/exposure", nil)
	open = nil
	for _, r := range e["listeners"].([]any) {
		if m := r.(map[string]any); m["anonymous"] == true {
			open = append(open, m["listener"].(string))
		}
	}
	if !slices.Equal(open, []string{"mqttsn"}) {
		t.Fatalf("anonymous after setup: %v", open)
	}
}

// TestFactoryResetFromThePage: the reset needs the admin and the gateway
// name typed back; then it leaves the marker and asks the process to stop.
func TestFactoryResetFromThePage(t *testing.T) {
	var stops atomic.Int32
	b := newFakeBackend()
	h := startWith(t, testConfig(), b, func(o *Options) {
		o.GatewayID = func() string { return "plant-7" }
		o.RequestStop = func() { stops.Add(1) }
	})
	if st, _, _ := h.client().do("POST", "/api/v1/factory-reset", map[string]string{"confirm": "plant-7"}); st != 401 {
		t.Fatalf("reset without login: %d", st)
	}
	c := h.setUp()
	if st, body, _ := c.do("POST", "/api/v1/factory-reset", map[string]string{"confirm": "plant-8"}); st != 400 || !strings.Contains(body["fields"].([]any)[0].(map[string]any)["error"].(string), "plant-7") {
		t.Fatalf("wrong confirmation: %d %v", st, body)
	}
	if appliance.ResetRequested(h.dataDir) || stops.Load() != 0 {
		t.Fatal("an unconfirmed reset did something")
	}
	if st, body, _ := c.do("POST", "/api/v1/factory-reset", map[string]string{"confirm": "plant-7"}); st != 202 {
		t.Fatalf("reset: %d %v", st, body)
	}
	if !appliance.ResetRequested(h.dataDir) || stops.Load() != 1 {
		t.Fatalf("reset: marker %v, stops %d", appliance.ResetRequested(h.dataDir), stops.Load())
	}
}
