package web

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fieldgate/fieldgate/board/update"
)

// TestUpdateAPI drives an update through the API against update.StandIn,
// a stand-in for RAUC's D-Bus service (RAUC cannot run here): a URL or an
// uploaded bundle is installed, progress shows, a second install is
// refused while one runs, a bad bundle shows RAUC's error.
func TestUpdateAPI(t *testing.T) {
	var mu sync.Mutex
	var verified []string
	rauc := &update.StandIn{Verify: func(src string) error {
		mu.Lock()
		verified = append(verified, src)
		mu.Unlock()
		if data, err := os.ReadFile(src); err == nil && bytes.Contains(data, []byte("tampered")) {
			return os.ErrInvalid
		}
		return nil
	}}
	b := newFakeBackend()
	h := startWith(t, testConfig(), b, func(o *Options) { o.Updater = update.NewManager(rauc, nil, nil) })
	if st, _, _ := h.client().do("GET", "/api/v1/update", nil); st != 401 {
		t.Fatalf("update status without login: %d", st)
	}
	c := h.setUp()
	if st, body, _ := c.do("POST", "/api/v1/update", map[string]string{"url": "ftp://x/b.raucb"}); st != 400 {
		t.Fatalf("ftp URL: %d %v", st, body)
	}
	if st, body, _ := c.do("POST", "/api/v1/update", map[string]string{"url": "https://updates.example/fieldgate-1.2.raucb"}); st != 202 {
		t.Fatalf("install from URL: %d %v", st, body)
	}
	if st, _, _ := c.do("POST", "/api/v1/update", map[string]string{"url": "https://updates.example/fieldgate-1.2.raucb"}); st != 409 {
		t.Fatalf("second install: %d", st)
	}
	_, s, _ := c.do("GET", "/api/v1/update", nil)
	if s["status"].(map[string]any)["operation"] != "installing" {
		t.Fatalf("status while installing: %v", s)
	}
	for rauc.Step() {
	}
	_, s, _ = c.do("GET", "/api/v1/update", nil)
	st := s["status"].(map[string]any)
	if st["operation"] != "idle" || st["progress"].(map[string]any)["percent"] != 100.0 || st["last_error"] != nil {
		t.Fatalf("status after install: %v", s)
	}
	if code, body, _ := c.do("POST", "/api/v1/update/reboot", map[string]string{}); code != 202 || rauc.Reboots() != 1 {
		t.Fatalf("reboot: %d %v, reboots %d", code, body, rauc.Reboots())
	}

	// An upload: stored on the data directory, then installed from there.
	upload := func(body string) int {
		req, _ := http.NewRequestWithContext(context.Background(), "POST", h.base+"/api/v1/update", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("X-CSRF-Token", c.csrf)
		resp, err := c.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := upload("tampered bundle"); code != 202 {
		t.Fatalf("upload: %d", code)
	}
	for rauc.Step() {
	}
	_, s, _ = c.do("GET", "/api/v1/update", nil)
	if le, _ := s["status"].(map[string]any)["last_error"].(string); !strings.Contains(le, "check bundle") {
		t.Fatalf("tampered bundle: %v", s)
	}
	if code, _, _ := c.do("POST", "/api/v1/update/reboot", map[string]string{}); code != 409 || rauc.Reboots() != 1 {
		t.Fatalf("reboot after a failed install: %d, reboots %d", code, rauc.Reboots())
	}
	stored := filepath.Join(h.dataDir, bundleFile)
	mu.Lock()
	last := verified[len(verified)-1]
	mu.Unlock()
	if data, err := os.ReadFile(stored); err != nil || string(data) != "tampered bundle" || last != stored {
		t.Fatalf("stored bundle %q (%v), installed %q", data, err, last)
	}
	if st, _, _ := c.do("POST", "/api/v1/update", "yaml"); st != 415 {
		t.Fatalf("wrong content type: %d", st)
	}
	// Without an updater the API says so.
	h2 := start(t, testConfig(), newFakeBackend())
	c2 := h2.setUp()
	if st, _, _ := c2.do("POST", "/api/v1/update", map[string]string{"url": "https://x/b.raucb"}); st != 501 {
		t.Fatalf("no updater: %d", st)
	}
}
