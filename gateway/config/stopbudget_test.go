package config

import (
	"strings"
	"testing"
	"time"
)

// TestStopBudget checks gateway.stop_budget's default and range.
func TestStopBudget(t *testing.T) {
	if got := Default().Gateway.StopBudget; got != 10*time.Second {
		t.Fatalf("default stop_budget = %s, want 10s", got)
	}
	for _, tc := range []struct {
		v  time.Duration
		ok bool
	}{{0, true}, {time.Second, true}, {10 * time.Minute, true}, {500 * time.Millisecond, false}, {time.Hour, false}} {
		c := Default()
		c.Gateway.StopBudget = tc.v
		err := c.Validate()
		if tc.ok != (err == nil) || err != nil && !strings.Contains(err.Error(), "gateway.stop_budget") {
			t.Errorf("stop_budget %s: Validate = %v", tc.v, err)
		}
	}
}
