package web

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// TestE2EParts drives the Overview card "Parts" and the "restart needed"
// marker in headless Chromium (e2e/parts.mjs) against the fake backend: the
// parts' states in words, the marker after a listener change (saved here)
// on every page,
// the confirm dialog of "Restart now" (dismissed: nothing; accepted: one
// restart, the marker gone).
func TestE2EParts(t *testing.T) {
	node := playwrightNode(t)
	b := newFakeBackend()
	h := start(t, testConfig(), b)
	h.clock.useReal()
	c := h.setUp()
	m, _ := configMap(b.Config())
	m["broker"].(map[string]any)["listeners"].(map[string]any)["tcp"].(map[string]any)["address"] = ":1999"
	if code, body, _ := c.do("PUT", "/api/v1/config", m); code != 200 {
		t.Fatalf("PUT config: %d %v", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, "e2e/parts.mjs", h.base, testPassword, t.TempDir()).CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("parts.mjs: %v", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.restarts != 1 || len(b.pending) != 0 {
		t.Fatalf("restarts %d, pending %v: want one restart, nothing pending", b.restarts, b.pending)
	}
}
