package web

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestHostileTokenScopes is issue 17 item 3: every API token was full
// admin, and the docs put one in the Prometheus scrape config. Each scope
// is tried against a table of endpoints: allowed ones pass auth, the rest
// answer 403. A token stored before scopes existed stays admin.
func TestHostileTokenScopes(t *testing.T) {
	dir := t.TempDir()
	// A token made by the previous version: no scope in the file.
	legacy := tokenPrefix + "legacy-token-from-an-older-version"
	old := `{"version": 1, "tokens": [{"id": "old1", "name": "grafana", "hash": "` + hashToken(legacy) + `", "created": "2025-01-01T00:00:00Z"}]}`
	if err := os.WriteFile(filepath.Join(dir, authFile), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	fb := newFakeBackend()
	h := startOn(t, testConfig(), fb, fb, dir, Options{})
	// web-auth.json has tokens but no password: set it up.
	admin := h.setUp()

	tokens := map[string]string{"legacy": legacy}
	for _, scope := range scopes {
		code, body, _ := admin.do("POST", "/api/v1/tokens", map[string]string{"name": scope + "-token", "scope": scope})
		if code != 201 || body["info"].(map[string]any)["scope"] != scope {
			t.Fatalf("create %s token: %d %v", scope, code, body)
		}
		tokens[scope] = body["token"].(string)
	}
	if code, body, _ := admin.do("POST", "/api/v1/tokens", map[string]string{"name": "x"}); code != 400 {
		t.Fatalf("token without scope: %d %v", code, body)
	}
	if code, body, _ := admin.do("POST", "/api/v1/tokens", map[string]string{"name": "x", "scope": "root"}); code != 400 {
		t.Fatalf("token with unknown scope: %d %v", code, body)
	}
	_, list, _ := admin.do("GET", "/api/v1/tokens", nil)
	for _, tok := range list["tokens"].([]any) {
		info := tok.(map[string]any)
		if info["id"] == "old1" && info["scope"] != scopeAdmin {
			t.Fatalf("legacy token listed as %v", info)
		}
	}

	endpoints := []struct {
		method, path string
		body         any
		need         string
	}{
		{"GET", "/metrics", nil, scopeMetrics},
		{"GET", "/api/v1/status", nil, scopeRead},
		{"GET", "/api/v1/config", nil, scopeRead},
		{"GET", "/api/v1/config.yaml", nil, scopeRead},
		{"GET", "/api/v1/clients", nil, scopeRead},
		{"GET", "/api/v1/logs", nil, scopeRead},
		{"GET", "/api/v1/history", nil, scopeRead},
		{"GET", "/api/v1/diagnostics", nil, scopeRead},
		{"GET", "/api/v1/southbound/serial-ports", nil, scopeRead},
		{"GET", "/api/v1/live", nil, scopeRead},
		{"GET", "/api/v1/tokens", nil, scopeAdmin},
		{"POST", "/api/v1/tokens", map[string]string{"name": "n", "scope": "metrics"}, scopeAdmin},
		{"DELETE", "/api/v1/tokens/nosuch", nil, scopeAdmin},
		{"POST", "/api/v1/password", map[string]string{"current": "x", "new": "y"}, scopeAdmin},
		{"PUT", "/api/v1/config/web?dry_run=1", map[string]any{"mdns": false}, scopeAdmin},
		{"PUT", "/api/v1/config?dry_run=1", "version: 1\n", scopeAdmin},
		{"DELETE", "/api/v1/clients/nobody", nil, scopeAdmin},
		{"PUT", "/api/v1/broker/users/alice", map[string]string{"password": "pw"}, scopeAdmin},
		{"DELETE", "/api/v1/broker/users/nobody", nil, scopeAdmin},
		{"POST", "/api/v1/uplink/test", map[string]any{"transport": "carrier-pigeon"}, scopeAdmin},
		{"POST", "/api/v1/files/ca.pem", "not a pem", scopeAdmin},
		{"POST", "/api/v1/southbound/devices/meter/read", nil, scopeAdmin},
		{"POST", "/api/v1/southbound/devices/meter/points/p/write", map[string]any{"value": 1}, scopeAdmin},
	}
	for _, who := range []string{scopeMetrics, scopeRead, scopeAdmin, "legacy"} {
		have := who
		if who == "legacy" {
			have = scopeAdmin
		}
		cl := h.client()
		cl.bearer = tokens[who]
		for _, ep := range endpoints {
			var code int
			if ep.path == "/api/v1/live" {
				code = openStream(t, h, cl.bearer)
			} else {
				code, _, _ = cl.do(ep.method, ep.path, ep.body)
			}
			allowed := scopeAllows(have, ep.need)
			switch {
			case code == http.StatusUnauthorized:
				t.Errorf("%s token: %s %s: 401", who, ep.method, ep.path)
			case allowed && code == http.StatusForbidden:
				t.Errorf("%s token: %s %s: 403, want allowed", who, ep.method, ep.path)
			case !allowed && code != http.StatusForbidden:
				t.Errorf("%s token: %s %s: %d, want 403", who, ep.method, ep.path, code)
			}
		}
	}
	// A session is admin; the open endpoints stay open.
	if code, _, _ := admin.do("GET", "/api/v1/tokens", nil); code != 200 {
		t.Fatalf("session: %d", code)
	}
	if code, _, _ := h.client().do("GET", "/api/v1/session", nil); code != 200 {
		t.Fatalf("session info: %d", code)
	}
}

// openStream opens the live view with token and returns the status code.
func openStream(t *testing.T, h *harness, token string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", h.base+"/api/v1/live", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
