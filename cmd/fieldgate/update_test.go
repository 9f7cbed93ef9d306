package main

import (
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/board/appliance"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// TestUpdateRaucWithoutRAUC: `run -update rauc` where RAUC's D-Bus service
// cannot be reached starts and serves as usual (ready, setup works), says
// once in its log that RAUC is not available, answers the update API with
// that reason instead of an install, and stops cleanly. Two ways RAUC is
// missing: no busctl at all (PATH without it), and this machine's real
// busctl with no RAUC service (or no system bus) behind it.
func TestUpdateRaucWithoutRAUC(t *testing.T) {
	t.Run("no busctl", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		runWithoutRAUC(t)
	})
	t.Run("real busctl, no RAUC", func(t *testing.T) {
		if _, err := exec.LookPath("busctl"); err != nil {
			t.Skip("busctl (systemd) is not installed here; the case without it runs above")
		}
		if exec.Command("busctl", "--system", "status", "de.pengutronix.rauc").Run() == nil {
			t.Skip("RAUC answers on this machine's system bus")
		}
		runWithoutRAUC(t)
	})
}

func runWithoutRAUC(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	factory := filepath.Join(dir, "fieldgate.yaml")
	if err := os.WriteFile(factory, []byte(factoryYAML), 0o444); err != nil {
		t.Fatal(err)
	}
	g := startRun(t, "-config", appliance.SavedConfig(data), "-factory-config", factory, "-data", data,
		"-update", "rauc", "-mark-good-after", "1s")

	// The first-boot line (the page is up) and the one warning about RAUC,
	// in either order.
	var code, base string
	warned := 0
	deadline := time.After(30 * time.Second)
	for code == "" || warned == 0 {
		select {
		case m, ok := <-g.lines:
			if !ok {
				t.Fatal("fieldgate exited: -update rauc without RAUC must not stop the gateway")
			}
			if c, ok := m["setup_code"].(string); ok {
				code, base = c, "http://"+m["address"].(string)
			}
			if msg, _ := m["msg"].(string); strings.Contains(msg, "RAUC is not available") {
				warned++
				if m["level"] != "WARN" {
					t.Errorf("RAUC missing logged at %v, want WARN", m["level"])
				}
			}
		case <-deadline:
			t.Fatalf("within 30 s: first-boot line %v, RAUC warning %d", code != "", warned)
		}
	}

	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	ready := func() bool {
		resp, err := c.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	// The page may be up a moment before the broker and the store.
	testwait.For(t, 30*time.Second, "/readyz 200: the gateway must get ready without RAUC", ready)
	st, body := post(t, c, base+"/api/v1/setup", "", map[string]string{"password": "correct horse", "gateway_id": "site-1", "setup_code": code})
	if st != http.StatusOK {
		t.Fatalf("setup: %d %v", st, body)
	}
	csrf := body["csrf"].(string)

	// GET /api/v1/update: the reason, not a hang or a crash.
	resp, err := c.Get(base + "/api/v1/update")
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if msg, _ := got["error"].(string); resp.StatusCode != http.StatusBadGateway || !strings.Contains(msg, "RAUC is not available") {
		t.Fatalf("GET /api/v1/update without RAUC: %d %v", resp.StatusCode, got)
	}
	// An install is refused with the same reason; the gateway runs on.
	st, body = post(t, c, base+"/api/v1/update", csrf, map[string]string{"url": "https://updates.example/fieldgate.raucb"})
	if msg, _ := body["error"].(string); st < 500 || !strings.Contains(msg, "RAUC is not available") {
		t.Fatalf("POST /api/v1/update without RAUC: %d %v", st, body)
	}
	if !ready() {
		t.Fatal("/readyz not 200 after the refused update")
	}
	g.stop()
}
