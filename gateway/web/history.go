package web

import (
	"context"
	"net/http"
	"runtime"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/fieldgate/fieldgate/board"
)

// The Overview's history: one sample of its numbers every historyEvery for
// historySpan, in a ring of fixed size kept in memory (a restart empties
// it). GET /api/v1/history?range=15m|1h|6h|24h returns at most
// historyPoints samples of a range, averaged in buckets, so that the page
// draws the same chart after a reload and on another device.

const (
	historyEvery  = 5 * time.Second
	historySpan   = 24 * time.Hour
	historyLen    = int(historySpan / historyEvery) // 17,280 samples of 40 bytes: 675 KiB
	historyPoints = 360                             // the most a range returns
)

// historyRanges are the ranges the page offers.
var historyRanges = map[string]time.Duration{"15m": 15 * time.Minute, "1h": time.Hour, "6h": 6 * time.Hour, "24h": 24 * time.Hour}

// HistorySample is one point of the Overview's history.
type HistorySample struct {
	// Time is when the sample was taken.
	Time time.Time `json:"t"`
	// In and Out are the broker's messages received and sent per second
	// since the sample before.
	In  float64 `json:"in"`
	Out float64 `json:"out"`
	// Clients is the number of connected clients of every protocol.
	Clients float64 `json:"clients"`
	// CPU is the gateway process's CPU use since the sample before, in
	// percent of one core.
	CPU float64 `json:"cpu"`
	// Memory is the gateway process's resident set (or, without a board,
	// the memory the Go runtime holds), in bytes.
	Memory int64 `json:"memory"`
	// Outbox is the number of messages waiting for the cloud.
	Outbox float64 `json:"outbox"`
}

// histSample is a sample as the ring stores it: 40 bytes.
type histSample struct {
	unix    int64
	in, out float32
	clients uint32
	cpu     float32
	memory  uint64
	outbox  uint64
}

// history is the ring of samples and what the next rate is computed from.
type history struct {
	mu   sync.Mutex
	ring []histSample
	next int  // where the next sample goes
	full bool // the ring has wrapped
	// The counters at the sample before.
	prevT           time.Time
	prevIn, prevOut int64
	prevCPU         time.Duration
	havePrev        bool
	cpuTime         func() time.Duration // the process's CPU time so far
	memory          func() uint64        // fallback when the board has no RSS
	maxPoint        int                  // the most samples since returns
}

func newHistory() *history {
	return &history{ring: make([]histSample, historyLen), cpuTime: processCPU, memory: goMemory, maxPoint: historyPoints}
}

// sample records st taken at now. The first call only remembers the
// counters: a rate needs two.
func (h *history) sample(now time.Time, st Status) {
	cpu := h.cpuTime()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.havePrev && !now.After(h.prevT) {
		return
	}
	defer func() {
		h.prevT, h.prevIn, h.prevOut, h.prevCPU, h.havePrev = now, st.MessagesIn, st.MessagesOut, cpu, true
	}()
	if !h.havePrev {
		return
	}
	dt := now.Sub(h.prevT).Seconds()
	rate := func(n, prev int64) float32 {
		if n < prev { // counters started again
			return 0
		}
		return float32(float64(n-prev) / dt)
	}
	clients := 0
	for _, n := range st.Clients {
		clients += n
	}
	mem := uint64(0)
	switch hl := st.Board["health"].(type) {
	case board.Health:
		mem = hl.ProcessRSS
	case *board.Health:
		if hl != nil {
			mem = hl.ProcessRSS
		}
	}
	if mem == 0 {
		mem = h.memory()
	}
	s := histSample{unix: now.Unix(), in: rate(st.MessagesIn, h.prevIn), out: rate(st.MessagesOut, h.prevOut),
		clients: uint32(clients), memory: mem, outbox: uint64(max(st.Outbox.Messages, 0))}
	if cpu >= h.prevCPU {
		s.cpu = float32(100 * (cpu - h.prevCPU).Seconds() / dt)
	}
	h.ring[h.next] = s
	h.next = (h.next + 1) % len(h.ring)
	if h.next == 0 {
		h.full = true
	}
}

// since returns the samples taken after from, oldest first, averaged in
// buckets of equal time so that at most h.maxPoint come back.
func (h *history) since(from, now time.Time) []HistorySample {
	h.mu.Lock()
	var in []histSample
	n, start := h.next, 0
	if h.full {
		n, start = len(h.ring), h.next
	}
	for i := range n {
		s := h.ring[(start+i)%len(h.ring)]
		if s.unix > from.Unix() {
			in = append(in, s)
		}
	}
	h.mu.Unlock()
	out := []HistorySample{}
	if len(in) == 0 {
		return out
	}
	bs := max(int64(now.Sub(from)/time.Second)/int64(h.maxPoint), 1) // bucket, in seconds
	for i := 0; i < len(in); {
		end := (in[i].unix - from.Unix()) / bs
		var sum HistorySample
		var mem float64
		var ts int64
		k := 0
		for ; i < len(in) && (in[i].unix-from.Unix())/bs == end; i++ {
			s := in[i]
			ts += s.unix
			sum.In += float64(s.in)
			sum.Out += float64(s.out)
			sum.Clients += float64(s.clients)
			sum.CPU += float64(s.cpu)
			mem += float64(s.memory)
			sum.Outbox += float64(s.outbox)
			k++
		}
		f := float64(k)
		out = append(out, HistorySample{Time: time.Unix(ts/int64(k), 0).UTC(),
			In: round2(sum.In / f), Out: round2(sum.Out / f), Clients: round2(sum.Clients / f),
			CPU: round2(sum.CPU / f), Memory: int64(mem / f), Outbox: round2(sum.Outbox / f)})
	}
	return out
}

// round2 rounds to two decimals: what a chart needs, without float noise
// in the JSON.
func round2(v float64) float64 {
	return float64(int64(v*100+0.5)) / 100
}

// runHistory samples the status every historyEvery until ctx is done.
func (s *Server) runHistory(ctx context.Context) {
	tick := time.NewTicker(historyEvery)
	defer tick.Stop()
	s.hist.sample(s.now(), s.b.Status())
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.hist.sample(s.now(), s.b.Status())
		}
	}
}

// getHistory is GET /api/v1/history?range=15m|1h|6h|24h (default 15m).
func (s *Server) getHistory(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("range")
	if name == "" {
		name = "15m"
	}
	d, ok := historyRanges[name]
	if !ok {
		writeFields(w, "invalid query", FieldError{Field: "range", Error: "must be 15m, 1h, 6h or 24h"})
		return
	}
	now := s.now()
	writeJSON(w, http.StatusOK, map[string]any{"range": name, "every": historyEvery.Seconds(), "samples": s.hist.since(now.Add(-d), now)})
}

// goMemory is the memory the Go runtime holds from the system.
func goMemory() uint64 {
	m := []metrics.Sample{{Name: "/memory/classes/total:bytes"}}
	metrics.Read(m)
	if m[0].Value.Kind() == metrics.KindUint64 {
		return m[0].Value.Uint64()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Sys
}
