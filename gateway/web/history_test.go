package web

import (
	"testing"
	"time"
	"unsafe"

	"github.com/fieldgate/fieldgate/board"
)

// TestHistoryBounded: the ring of a day of samples fits in 1 MiB.
func TestHistoryBounded(t *testing.T) {
	if size := int(unsafe.Sizeof(histSample{})) * historyLen; size > 1<<20 {
		t.Fatalf("the history holds %d bytes, more than 1 MiB", size)
	}
}

// TestHistorySamples: rates come from two samples, counters that start
// again give 0, CPU is a share of one core, memory is the board's RSS when
// it has one, a full ring keeps the newest samples, and a range comes back
// oldest first in at most maxPoint averaged buckets.
func TestHistorySamples(t *testing.T) {
	cpu := time.Duration(0)
	h := newHistory()
	h.ring = make([]histSample, 10)
	h.maxPoint = 4
	h.cpuTime = func() time.Duration { return cpu }
	h.memory = func() uint64 { return 7 << 20 }
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	st := Status{Clients: map[string]int{"tcp": 2, "mqttsn": 1}, Outbox: OutboxStatus{Messages: 4}}
	h.sample(t0, st) // only the counters
	if got := h.since(t0.Add(-time.Hour), t0); len(got) != 0 {
		t.Fatalf("a first sample without a rate: %v", got)
	}
	st.MessagesIn, st.MessagesOut = 50, 10
	cpu = 500 * time.Millisecond
	h.sample(t0.Add(5*time.Second), st)
	h.sample(t0.Add(5*time.Second), st) // the same instant again: ignored
	got := h.since(t0, t0.Add(5*time.Second))
	want := HistorySample{Time: t0.Add(5 * time.Second), In: 10, Out: 2, Clients: 3, CPU: 10, Memory: 7 << 20, Outbox: 4}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("samples %+v, want %+v", got, want)
	}

	st.MessagesIn = 0 // a restart of the counters
	st.Board = map[string]any{"health": board.Health{ProcessRSS: 30 << 20}}
	h.sample(t0.Add(10*time.Second), st)
	got = h.since(t0.Add(9*time.Second), t0.Add(10*time.Second))
	if len(got) != 1 || got[0].In != 0 || got[0].Memory != 30<<20 || got[0].CPU != 0 {
		t.Fatalf("after the counters started again: %+v", got)
	}

	// 20 more samples into a ring of 10: the newest 10 remain.
	for i := range 20 {
		st.MessagesIn += 5
		h.sample(t0.Add(time.Duration(15+5*i)*time.Second), st)
	}
	end := t0.Add(110 * time.Second)
	all := h.since(end.Add(-time.Hour), end)
	if len(all) == 0 || len(all) > h.maxPoint {
		t.Fatalf("%d points for the last hour, want 1..%d", len(all), h.maxPoint)
	}
	for i, s := range all {
		if i > 0 && !s.Time.After(all[i-1].Time) {
			t.Fatalf("not oldest first: %+v", all)
		}
	}
	recent := h.since(end.Add(-time.Minute), end)
	if recent[0].Time.Before(t0.Add(65*time.Second)) || recent[0].In != 1 {
		t.Fatalf("the last minute: %+v", recent)
	}
	if all[0].Time.Before(t0.Add(65 * time.Second)) {
		t.Fatalf("samples older than the ring's ten survived: %+v", all)
	}
}

// TestHistoryAPI: GET /api/v1/history answers for a session and a read
// token, refuses an unknown range, and the server samples on its own.
func TestHistoryAPI(t *testing.T) {
	h := start(t, testConfig(), nil)
	c := h.setUp()
	t0 := h.clock.Now()
	h.srv.hist.sample(t0.Add(time.Second), h.b.Status())
	h.b.mu.Lock()
	h.b.msgs += 100
	h.b.mu.Unlock()
	h.srv.hist.sample(t0.Add(6*time.Second), h.b.Status())
	h.clock.mu.Lock()
	h.clock.now = t0.Add(7 * time.Second)
	h.clock.mu.Unlock()
	for _, r := range []string{"", "15m", "1h", "6h", "24h"} {
		code, body, _ := c.do("GET", "/api/v1/history?range="+r, nil)
		samples, _ := body["samples"].([]any)
		if code != 200 || len(samples) == 0 {
			t.Fatalf("range %q: %d %v", r, code, body)
		}
		found := false
		for _, x := range samples {
			s := x.(map[string]any)
			found = found || s["in"] == 20.0 && s["out"] == 10.0 && s["clients"] == 1.0
		}
		if !found && r == "15m" {
			t.Fatalf("range %q: no sample of 20 in/s, 10 out/s, 1 client: %v", r, samples)
		}
	}
	code, body, _ := c.do("GET", "/api/v1/history?range=2d", nil)
	if code != 400 || body["fields"].([]any)[0].(map[string]any)["field"] != "range" {
		t.Fatalf("an unknown range: %d %v", code, body)
	}
}
