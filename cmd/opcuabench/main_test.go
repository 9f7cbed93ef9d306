package main

import (
	"testing"
	"time"
)

func TestRecorder(t *testing.T) {
	r := &recorder{seen: map[string]bool{}}
	now := time.UnixMilli(10_000)
	r.add(now, "southbound/bench/p00000", []byte(`{"v":1,"ts":9000,"q":"good"}`)) // before start: only seen
	r.start()
	r.add(now, "southbound/bench/status", []byte(`{"state":"online"}`))
	r.add(now, "southbound/bench/p00000", []byte(`{"v":3,"ts":9500,"q":"good"}`))
	r.add(now, "southbound/bench/p00001", []byte(`{"v":5,"ts":9750,"q":"good"}`))
	r.add(now, "southbound/bench/p00002", []byte(`{"v":4,"q":"bad"}`))
	r.add(now, "southbound/bench/p00003", []byte(`not json`))
	lat, msgs, bad, updates := r.stop()
	if r.points() != 4 {
		t.Errorf("points = %d, want 4", r.points())
	}
	if msgs != 4 || bad != 2 || updates != 3 {
		t.Errorf("msgs %d bad %d updates %v, want 4 2 3", msgs, bad, updates)
	}
	if len(lat) != 2 || lat[0] != 500*time.Millisecond || lat[1] != 250*time.Millisecond {
		t.Errorf("latencies %v", lat)
	}
}

func TestPct(t *testing.T) {
	d := []time.Duration{5, 1, 4, 2, 3}
	for _, c := range []struct {
		p    int
		want time.Duration
	}{{0, 1}, {50, 3}, {99, 5}, {100, 5}} {
		if got := pct(d, c.p); got != c.want {
			t.Errorf("pct(%d) = %v, want %v", c.p, got, c.want)
		}
	}
	if pct(nil, 50) != 0 {
		t.Errorf("pct(nil) != 0")
	}
}
