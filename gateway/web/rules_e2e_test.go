package web

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// TestE2ERules drives the Rules tab in headless Chromium on a 390×844 phone
// (e2e/rules.mjs) against the fake backend: a rule added through the form,
// the test panel's output for a sample, an SQL error shown at the editor
// with its line:col (from the test and from saving), the rule disabled
// from the list, no sideways scroll and touch targets of at least 40 px.
func TestE2ERules(t *testing.T) {
	node := playwrightNode(t)
	b := newFakeBackend()
	h := start(t, testConfig(), b)
	h.clock.useReal()
	h.setUp()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, "e2e/rules.mjs", h.base, testPassword, t.TempDir()).CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("rules.mjs: %v", err)
	}
	c := b.Config()
	if len(c.Rules) != 1 {
		t.Fatalf("rules %+v, want hot-boiler alone", c.Rules)
	}
	r := c.Rules[0]
	if r.ID != "hot-boiler" || r.Enabled || len(r.Actions) != 1 || r.Actions[0].Republish == nil || r.Actions[0].Republish.Topic != "alarms/${topic}" || r.Actions[0].Republish.QoS != 1 {
		t.Fatalf("rule %+v (action %+v), want hot-boiler disabled with one republish to alarms/${topic}", r, r.Actions)
	}
}
