package web

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/bus"
)

// TestE2E drives the page in headless Chromium with Playwright
// (e2e/e2e.mjs) against a server with the fake backend, and saves a
// screenshot of each page (in docs/screenshots/ when FIELDGATE_SCREENSHOTS
// is set, else in a temporary directory). It needs Debian's chromium and
// `npm ci` in e2e/; without them it is skipped, or fails when CI is set.
func TestE2E(t *testing.T) {
	node := playwrightNode(t)
	shots := t.TempDir()
	if os.Getenv("FIELDGATE_SCREENSHOTS") != "" {
		var err error
		if shots, err = filepath.Abs("../../docs/screenshots"); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.LoginFreeAttempts = 3
	cfg.LoginDelay = 30 * time.Second
	b := newFakeBackend()
	h := start(t, cfg, b)
	h.clock.useReal() // the page compares times with the browser's clock

	// Messages flow on the bus while the browser watches.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			b.publish(bus.Message{Topic: "plant/line1/temp", Payload: []byte(`{"celsius":21.5,"n":` + itoa(i) + `}`), QoS: 1, Origin: "southbound", Time: time.Now()})
			b.publish(bus.Message{Topic: "plant/line1/raw", Payload: []byte{0x01, 0x03, 0x04, 0xff, 0x00}, Origin: "plc", Time: time.Now()})
			b.mu.Lock()
			b.msgs += 2
			b.mu.Unlock()
		}
	}()

	ctxRun, cancelRun := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancelRun()
	cmd := exec.CommandContext(ctxRun, node, "e2e/e2e.mjs", h.base, shots)
	cmd.Env = append(os.Environ(), "FIELDGATE_SETUP_CODE="+h.setupCode())
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
}
