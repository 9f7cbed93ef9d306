package main

import (
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	d := []time.Duration{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5}, {0.99, 10}, {1, 10}, {0, 1}} {
		if got := quantile(d, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if quantile(nil, 0.5) != 0 {
		t.Error("quantile of nothing is not 0")
	}
}

func TestParseGCTrace(t *testing.T) {
	c, ok := parseGCTrace("gc 7 @1.514s 0%: 0.061+4.7+0.007 ms clock, 0.12+0.037/0.43/0.57+0.014 ms cpu, 3->3->1 MB, 4 MB goal, 2 MB stacks, 0 MB globals, 2 P")
	if !ok || c.liveMB != 1 || c.stacks != 2 {
		t.Errorf("got %+v %v", c, ok)
	}
	if _, ok := parseGCTrace(`time=2026 level=INFO msg="gc"`); ok {
		t.Error("a log line parsed as a GC trace")
	}
}
