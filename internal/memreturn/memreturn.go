// Package memreturn gives the heap back to the operating system after a
// storm of peers has come or gone.
//
// The Go runtime frees garbage only at its next collection, and its
// background scavenger hands freed pages back to the OS slowly (about 1 %
// of a core's time). After thousands of connections close, the process
// keeps their memory resident for minutes: on a 2 GiB board that is memory
// other processes, and the next storm, cannot have. A storm of arrivals
// leaves the same behind: the garbage of thousands of handshakes and the
// stacks of the goroutines that served them until their connections went
// idle and parked (protocols/mqtt/park.go). A Returner reads the number of
// connected peers once a second; when it has fallen far below its highest
// value since the last return, or risen far above its lowest (StormPeers,
// or StormFraction of the larger), and has then held steady for SteadyFor
// (the storm is over), it calls runtime/debug.FreeOSMemory: one collection
// and every free page returned.
// Returns are spaced by what they cost: after a return that took d, the
// next waits at least d/MaxShare (and MinInterval), so returns never use
// more than MaxShare of a core, however the count flaps; and a storm of
// arrivals followed by its departures a few seconds later (a benchmark, a
// site's network coming back and failing again) gets both returns.
//
// Measured with 19,000 idle MQTT connections (docs/bench.md, issue 18):
// after they arrive, a return takes the broker from about 6 to under 4 KiB
// resident per connection; after they leave, from 249 to about 40 MiB.
//
// How it works with the memory budget (internal/membudget) and GOMEMLIMIT:
// the budget counts the bytes peers make the gateway hold, as the holders
// declare them, and refuses what is past it; it never looks at the heap.
// When peers leave, their holders release their share of the budget at
// once, but the heap the runtime keeps for them stays resident until a
// collection and the scavenger. That is the gap the Returner closes. The
// gateway does not set the runtime's memory limit (gateway.memory_budget_mb
// is not GOMEMLIMIT); if GOMEMLIMIT is set in the environment, the runtime
// collects more often and scavenges eagerly only as the heap nears that
// limit. FreeOSMemory returns memory whatever the limit, and neither
// changes the limit nor the budget.
package memreturn

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/fieldgate/fieldgate/internal/clock"
)

// The trigger. A return is due when the count of peers is at least
// StormPeers below its highest value since the last return, or at least
// MinStormPeers and StormFraction of that highest value below it; and the
// count has moved by no more than SteadyPeers from one check to the next
// for SteadyFor; and the last return is at least MinInterval ago, and its
// cost divided by MaxShare.
const (
	// StormPeers is a fall in peers that is a storm whatever the count
	// (at ~10 KiB per idle MQTT connection, about 10 MiB of heap).
	StormPeers = 1000
	// StormFraction is the share of the highest count that is a storm
	// when it falls (from 400 peers to 300, say).
	StormFraction = 0.25
	// MinStormPeers is the smallest fall that is a storm by StormFraction:
	// fewer peers than that leave too little to be worth a collection.
	MinStormPeers = 100
	// SteadyPeers is how far the count may move between two checks and
	// still count as steady (a few clients coming and going).
	SteadyPeers = 50
	// SteadyFor is how long the count must be steady: the storm is over.
	SteadyFor = time.Second
	// CheckEvery is how often the count is read.
	CheckEvery = time.Second
	// MinInterval is the least time between two returns.
	MinInterval = 2 * time.Second
	// MaxShare is the share of one core returns may use over time: after
	// a return that took d, the next waits d/MaxShare. A return costs a
	// collection: 17–434 ms for a 60–100 MiB heap on the loaded 2-core
	// development machine, more on an ARM board; 434 ms keeps the next
	// one 22 s away.
	MaxShare = 0.02
)

// Options build a Returner. Zero values pick the defaults.
type Options struct {
	// Peers returns how many peers are connected now (required). It is
	// called once per check from the Returner's goroutine and must be
	// cheap.
	Peers func() int64
	// Clock tells the time the trigger's intervals are measured on
	// (default clock.Real, whose times carry the monotonic reading).
	Clock clock.Clock
	// Logger receives one line per return (default: discarded).
	Logger *slog.Logger
	// Return gives the memory back (default debug.FreeOSMemory; tests).
	Return func()
	// Every is how often Run checks (default CheckEvery).
	Every time.Duration
	// MinInterval is the least time between two returns (default
	// MinInterval).
	MinInterval time.Duration
}

// Returner watches the count of peers and returns memory after storms.
// Its Run is one long-lived part of the gateway.
type Returner struct {
	peers       func() int64
	clk         clock.Clock
	log         *slog.Logger
	free        func()
	every       time.Duration
	minInterval time.Duration

	// The trigger's state, used only by the goroutine that runs check.
	started    bool
	peak       int64     // the highest count since the last return
	trough     int64     // the lowest count since the last return
	last       int64     // the count at the last check
	moved      time.Time // when the count last moved by more than SteadyPeers
	lastReturn time.Time // zero: never
	nextReturn time.Time // the earliest time of the next return

	returns       atomic.Int64
	returnedBytes atomic.Int64
	lastUnixNano  atomic.Int64
	peakPeers     atomic.Int64 // peak, for Stats
	lastCheck     atomic.Int64 // Unix ns of the last check, for Progress
}

// New returns a Returner; it does nothing until Run.
func New(o Options) *Returner {
	r := &Returner{
		peers:       o.Peers,
		clk:         o.Clock,
		log:         o.Logger,
		free:        o.Return,
		every:       o.Every,
		minInterval: o.MinInterval,
	}
	if r.peers == nil {
		r.peers = func() int64 { return 0 }
	}
	if r.clk == nil {
		r.clk = clock.Real{}
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.free == nil {
		r.free = debug.FreeOSMemory
	}
	if r.every <= 0 {
		r.every = CheckEvery
	}
	if r.minInterval <= 0 {
		r.minInterval = MinInterval
	}
	return r
}

// Run checks the count every CheckEvery until ctx is done, then returns
// nil. A return in progress finishes first (67–348 ms for a 100 MiB heap
// on the development machine).
func (r *Returner) Run(ctx context.Context) error {
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.check()
		}
	}
}

// check reads the count and returns memory if a return is due.
func (r *Returner) check() {
	now, n := r.clk.Now(), r.peers()
	defer func() { r.lastCheck.Store(r.clk.Now().UnixNano()) }()
	due := r.due(now, n)
	from := r.peak // a fall from the peak, or else a rise from the trough
	if !storm(r.peak, n) {
		from = r.trough
	}
	if due {
		r.peak, r.trough, r.lastReturn = n, n, now
		took := r.returnMemory(from, n)
		r.nextReturn = now.Add(max(r.minInterval, time.Duration(float64(took)/MaxShare)))
	}
	r.peakPeers.Store(r.peak)
}

// due updates the trigger with the count n read at now and reports
// whether a return is due.
func (r *Returner) due(now time.Time, n int64) bool {
	if !r.started {
		r.started = true
		r.peak, r.trough, r.last, r.moved = n, n, n, now
		return false
	}
	if d := n - r.last; d > SteadyPeers || d < -SteadyPeers {
		r.moved = now
	}
	r.last = n
	r.peak = max(r.peak, n)
	r.trough = min(r.trough, n)
	if now.Sub(r.moved) < SteadyFor {
		return false // the storm goes on
	}
	if !storm(r.peak, n) && !storm(n, r.trough) {
		return false
	}
	// Held back, the return stays due: it runs at the first steady
	// check past nextReturn.
	return r.lastReturn.IsZero() || !now.Before(r.nextReturn)
}

// storm reports whether a change between peak and n (n < peak: a fall
// from peak, or a rise from n to peak) is a storm.
func storm(peak, n int64) bool {
	fall := peak - n
	return fall >= StormPeers || (fall >= MinStormPeers && float64(fall) >= StormFraction*float64(peak))
}

// returnMemory gives the memory back after the count went from from to n,
// logs what it did and returns how long it took (on the Returner's clock).
func (r *Returner) returnMemory(from, n int64) time.Duration {
	before := readMem()
	start := r.clk.Now()
	r.free()
	took := r.clk.Now().Sub(start)
	after := readMem()
	returned := max(after.released-before.released, 0)
	r.returns.Add(1)
	r.returnedBytes.Add(returned)
	r.lastUnixNano.Store(time.Now().UnixNano())
	r.log.Info("memory returned to the OS after a storm of peers",
		"peers_before", from, "peers", n,
		"rss_before_bytes", before.rss, "rss_after_bytes", after.rss,
		"heap_in_use_before_bytes", before.inUse, "heap_in_use_after_bytes", after.inUse,
		"heap_released_bytes", after.released, "returned_bytes", returned,
		"took", took.Round(time.Microsecond))
	return took
}

// Stats are the Returner's counters.
type Stats struct {
	// Returns counts the memory returns made.
	Returns int64
	// ReturnedBytes sums what the returns gave back: the growth of the
	// heap's released bytes across each.
	ReturnedBytes int64
	// LastReturn is when the last return was made (zero: never).
	LastReturn time.Time
	// PeakPeers is the highest count of peers seen since the last return:
	// the count a fall is measured from.
	PeakPeers int64
}

// Progress returns when the last check ended (zero: none yet), for the
// supervisor's progress bound: a Returner whose checks stop (a count or a
// return that hangs) is stuck.
func (r *Returner) Progress() time.Time {
	if ns := r.lastCheck.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// ProgressBound is how old Progress may get: a check runs every
// CheckEvery and a return takes well under a second (17–434 ms measured).
const ProgressBound = 30 * time.Second

// Stats reads the counters.
func (r *Returner) Stats() Stats {
	s := Stats{Returns: r.returns.Load(), ReturnedBytes: r.returnedBytes.Load(), PeakPeers: r.peakPeers.Load()}
	if ns := r.lastUnixNano.Load(); ns != 0 {
		s.LastReturn = time.Unix(0, ns)
	}
	return s
}

// mem is one reading of the process's memory, in bytes.
type mem struct {
	rss      int64 // resident set (0 where /proc is not readable)
	inUse    int64 // heap spans in use: objects and their unused room
	released int64 // heap returned to the OS and not yet reused
}

// heapMetrics are the runtime/metrics readMem reads, in mem's order after rss.
var heapMetrics = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/released:bytes",
}

// readMem reads the process's memory.
func readMem() mem {
	s := make([]metrics.Sample, len(heapMetrics))
	for i, name := range heapMetrics {
		s[i].Name = name
	}
	metrics.Read(s)
	u := func(i int) int64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(s[i].Value.Uint64())
	}
	return mem{rss: rss(), inUse: u(0) + u(1), released: u(2)}
}

// rss is the process's resident set size from /proc/self/statm, or 0.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}
