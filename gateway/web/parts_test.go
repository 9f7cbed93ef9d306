package web

import (
	"strings"
	"testing"
	"time"
)

// Restart pretends the gateway restarted: the running config is the saved
// one again.
func (f *fakeBackend) Restart() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restarts++
	f.pending = nil
	return nil
}

// restartStatus reports the settings saved since the last Restart that
// need one (the caller holds f.mu).
func (f *fakeBackend) restartStatus() RestartStatus {
	st := RestartStatus{Needed: len(f.pending) > 0, Parts: []string{}, Keys: []PendingSetting{}}
	for _, k := range f.pending {
		part, _, _ := strings.Cut(k, ".")
		st.Keys = append(st.Keys, PendingSetting{Key: k, Part: part})
		if len(st.Parts) == 0 || st.Parts[len(st.Parts)-1] != part {
			st.Parts = append(st.Parts, part)
		}
	}
	return st
}

// fakeParts are a healthy broker probe and an uplink that restarted.
func fakeParts() []PartStatus {
	return []PartStatus{
		{Name: "probe", State: "running", Healthy: true, LastProgress: time.Now().Add(-time.Second), Bound: Duration(5 * time.Second)},
		{Name: "uplink", State: "backoff", Healthy: true, Restarts: 2, LastError: "dial tcp: connection refused"},
	}
}

// TestRestartPending: a change that needs a restart shows as pending in GET
// /status (which parts, which keys) until POST /restart; the restart needs
// the admin (a CSRF token for a session, scope admin for a token).
func TestRestartPending(t *testing.T) {
	h := start(t, testConfig(), nil)
	c := h.setUp()
	status := func() map[string]any {
		t.Helper()
		code, st, _ := c.do("GET", "/api/v1/status", nil)
		if code != 200 {
			t.Fatalf("status: %d %v", code, st)
		}
		return st
	}
	st := status()
	if r := st["restart"].(map[string]any); r["needed"] != false || len(r["parts"].([]any)) != 0 {
		t.Fatalf("restart before any change: %v", r)
	}
	parts := st["parts"].([]any)
	if len(parts) != 2 || parts[0].(map[string]any)["bound"] != "5s" || parts[1].(map[string]any)["restarts"] != 2.0 {
		t.Fatalf("parts: %v", parts)
	}

	m, _ := configMap(h.b.Config())
	m["broker"].(map[string]any)["listeners"].(map[string]any)["tcp"].(map[string]any)["address"] = ":1999"
	if code, body, _ := c.do("PUT", "/api/v1/config", m); code != 200 || body["restart"].([]any)[0] != "broker.listeners" {
		t.Fatalf("apply: %d %v", code, body)
	}
	r := status()["restart"].(map[string]any)
	if r["needed"] != true || r["parts"].([]any)[0] != "broker" || r["keys"].([]any)[0].(map[string]any)["key"] != "broker.listeners" {
		t.Fatalf("restart after a listener change: %v", r)
	}

	// A read token and a session without its CSRF token cannot restart.
	code, body, _ := c.do("POST", "/api/v1/tokens", map[string]string{"name": "dash", "scope": "read"})
	if code != 201 {
		t.Fatalf("token: %d %v", code, body)
	}
	reader := h.client()
	reader.bearer = body["token"].(string)
	if code, _, _ := reader.do("POST", "/api/v1/restart", nil); code != 403 {
		t.Fatalf("restart with a read token: %d", code)
	}
	noCSRF := *c
	noCSRF.csrf = ""
	if code, _, _ := noCSRF.do("POST", "/api/v1/restart", nil); code != 403 {
		t.Fatalf("restart without CSRF: %d", code)
	}
	if h.b.restarts != 0 {
		t.Fatal("a refused restart restarted")
	}
	if code, body, _ := c.do("POST", "/api/v1/restart", nil); code != 202 || body["restarting"] != true {
		t.Fatalf("restart: %d %v", code, body)
	}
	if h.b.restarts != 1 {
		t.Fatalf("restarts %d", h.b.restarts)
	}
	if r := status()["restart"].(map[string]any); r["needed"] != false {
		t.Fatalf("restart still needed after the restart: %v", r)
	}
}
