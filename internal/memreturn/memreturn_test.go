package memreturn

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
)

// fakeClock is a clock the test moves.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

// rig is a Returner on a fake clock and a fake count, checked by hand.
type rig struct {
	t     *testing.T
	clk   *fakeClock
	peers int64
	r     *Returner
	at    []time.Duration // when each return ran, from the start
	start time.Time
}

func newRig(t *testing.T) *rig { return newRigCost(t, 0, 0) }

// newRigCost is newRig with a MinInterval of gap (0: the default) and
// returns that take cost on the fake clock.
func newRigCost(t *testing.T, gap, cost time.Duration) *rig {
	start := time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)
	g := &rig{t: t, clk: &fakeClock{t: start}, start: start}
	g.r = New(Options{
		Peers: func() int64 { return g.peers },
		Clock: g.clk,
		Return: func() {
			g.at = append(g.at, g.clk.t.Sub(g.start))
			g.clk.t = g.clk.t.Add(cost)
		},
		MinInterval: gap,
	})
	return g
}

// tick sets the count to n and runs one check, CheckEvery after the last.
func (g *rig) tick(n int64) {
	g.peers = n
	g.r.check()
	g.clk.t = g.clk.t.Add(CheckEvery)
}

// hold keeps the count at n for d of checks.
func (g *rig) hold(n int64, d time.Duration) {
	for range int(d / CheckEvery) {
		g.tick(n)
	}
}

func (g *rig) wantReturns(what string, n int) {
	g.t.Helper()
	if len(g.at) != n {
		g.t.Fatalf("%s: %d returns at %v, want %d", what, len(g.at), g.at, n)
	}
}

// TestStormDown: 2,000 peers leave within two checks; the return runs once
// the count has been steady for SteadyFor, not while it is falling, and
// only once.
func TestStormDown(t *testing.T) {
	g := newRig(t)
	g.hold(0, 3*time.Second)
	for n := int64(0); n <= 2000; n += 500 { // the storm up
		g.tick(n)
	}
	g.hold(2000, MinInterval+10*time.Second)
	g.wantReturns("after the storm up", 1)
	if p := g.r.Stats().PeakPeers; p != 2000 {
		t.Fatalf("PeakPeers = %d after the storm up, want 2000", p)
	}
	g.tick(900)
	g.tick(0)
	g.wantReturns("while the count falls", 1)
	g.tick(0) // steady for 1 s
	g.wantReturns("once steady", 2)
	g.hold(0, 2*time.Minute)
	g.wantReturns("steady afterwards", 2)
	if st := g.r.Stats(); st.Returns != 2 || st.LastReturn.IsZero() || st.PeakPeers != 0 {
		t.Fatalf("Stats = %+v, want 2 returns and the peak reset to 0", st)
	}
}

// TestStormUp: a storm of arrivals returns once it is over, like a fall;
// a rise below the threshold does not; the fall afterwards is measured
// from the highest count since the last return.
func TestStormUp(t *testing.T) {
	g := newRig(t)
	g.hold(100, 2*time.Second)
	g.hold(1000, 2*time.Minute) // 900 more, 90 % of 1,000: a storm by fraction
	g.wantReturns("after 100 → 1,000", 1)
	g.hold(1050, 2*time.Minute) // 50 more: not a storm
	g.wantReturns("after 1,000 → 1,050", 1)
	g.hold(5100, 2*time.Minute)
	g.hold(15100, 2*time.Minute)
	g.wantReturns("after two storms up", 3)
	// 1,000 below the peak, reached in steps of 40 per second (each step
	// steady): a slow fall is a storm once it adds up.
	n := int64(15100)
	for n > 15100-StormPeers {
		n -= 40
		g.tick(n)
	}
	g.wantReturns("after the slow fall of 1,000", 4)
}

// TestFractionAndFloor: a fall of 25 % of a small count is a storm when it
// is at least MinStormPeers; smaller falls are not.
func TestFractionAndFloor(t *testing.T) {
	g := newRig(t)
	g.hold(400, 3*time.Second)
	g.hold(300, 3*time.Second) // 25 % of 400, 100 peers
	g.wantReturns("400 → 300", 1)

	g = newRig(t)
	g.hold(80, 3*time.Second)
	g.hold(0, 3*time.Second) // 100 % of 80, but under MinStormPeers
	g.wantReturns("80 → 0", 0)

	g = newRig(t)
	g.hold(3000, 3*time.Second)
	g.hold(2100, 3*time.Second) // 900 peers, 30 %
	g.wantReturns("3000 → 2100", 1)

	g = newRig(t)
	g.hold(8000, 3*time.Second)
	g.hold(7100, 3*time.Second) // 900 peers, 11 %
	g.wantReturns("8000 → 7100", 0)
}

// TestFlapping: a count that swings by 2,000 every 2 s for 10 minutes gets
// a return at most once per MinInterval.
func TestFlapping(t *testing.T) {
	g := newRig(t)
	for range 150 {
		g.hold(5000, 2*time.Second)
		g.hold(3000, 2*time.Second)
	}
	if len(g.at) == 0 || len(g.at) > int(10*time.Minute/MinInterval)+1 {
		t.Fatalf("%d returns in 10 min of flapping, want 1..%d", len(g.at), int(10*time.Minute/MinInterval)+1)
	}
	for i := 1; i < len(g.at); i++ {
		if gap := g.at[i] - g.at[i-1]; gap < MinInterval {
			t.Fatalf("returns %d and %d only %v apart (at %v)", i-1, i, gap, g.at)
		}
	}
	t.Logf("%d returns in 10 min of flapping", len(g.at))
}

// TestRateLimit: a second storm within the minimum interval of a return
// (30 s here) waits for it, then returns at the first steady check; a fall
// and the rise back within it make one return, not two.
func TestRateLimit(t *testing.T) {
	const MinInterval = 30 * time.Second
	g := newRigCost(t, MinInterval, 0)
	g.hold(4000, 2*time.Second)
	g.hold(2000, 3*time.Second)
	g.wantReturns("first storm", 1)
	first := g.at[0]
	g.hold(5000, 3*time.Second)
	g.hold(1000, 5*time.Second)
	g.wantReturns("second storm within MinInterval", 1)
	g.hold(1000, 30*time.Second)
	g.wantReturns("second storm past MinInterval", 2)
	if gap := g.at[1] - first; gap < MinInterval || gap > MinInterval+CheckEvery {
		t.Fatalf("the held-back return ran %v after the first, want MinInterval (%v) to one check more", gap, MinInterval)
	}

	g = newRigCost(t, MinInterval, 0)
	g.hold(4000, 2*time.Second)
	g.hold(2000, 3*time.Second)
	g.wantReturns("first storm", 1)
	g.hold(800, 3*time.Second)  // held back by MinInterval
	g.hold(2000, 2*time.Minute) // the peers came back: one more return
	g.wantReturns("a fall and the rise back", 2)
}

// TestCostSpacing: returns that take 1 s each are at least 1 s / MaxShare
// (50 s) apart while the count flaps: never more than MaxShare of a core.
func TestCostSpacing(t *testing.T) {
	g := newRigCost(t, 0, time.Second)
	for range 100 {
		g.hold(5000, 3*time.Second)
		g.hold(3000, 3*time.Second)
	}
	if len(g.at) < 2 {
		t.Fatalf("%d returns in 10 min of flapping, want several", len(g.at))
	}
	spacing := time.Duration(float64(time.Second) / MaxShare)
	for i := 1; i < len(g.at); i++ {
		if gap := g.at[i] - g.at[i-1]; gap < spacing {
			t.Fatalf("returns %d and %d only %v apart, want ≥ %v (at %v)", i-1, i, gap, spacing, g.at)
		}
	}
}

// syncBuf is a log sink written by the Returner's goroutine.
type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRun runs a Returner on the real clock with the real FreeOSMemory: a
// fall of 2,000 peers is returned, logged with the memory numbers, and Run
// returns when its context ends.
func TestRun(t *testing.T) {
	var peers, reads atomic.Int64
	peers.Store(2000)
	logs := &syncBuf{}
	r := New(Options{
		Peers:  func() int64 { reads.Add(1); return peers.Load() },
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		Every:  10 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	testwait.For(t, 5*time.Second, "Run to read 2,000 peers", func() bool { return reads.Load() >= 2 })
	if since := time.Since(r.Progress()); since > ProgressBound {
		t.Fatalf("Progress %v old after checks ran", since)
	}
	peers.Store(0)
	testwait.For(t, 10*time.Second, "a return after the fall", func() bool { return r.Stats().Returns == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	var rec map[string]any
	if err := json.Unmarshal(bytes.TrimSpace([]byte(logs.String())), &rec); err != nil {
		t.Fatalf("log line: %v\n%s", err, logs.String())
	}
	for _, k := range []string{"peers_before", "peers", "rss_before_bytes", "rss_after_bytes", "heap_in_use_before_bytes", "heap_in_use_after_bytes", "returned_bytes", "took"} {
		if _, ok := rec[k]; !ok {
			t.Errorf("log line lacks %s: %v", k, rec)
		}
	}
	if rec["peers_before"] != 2000.0 || rec["peers"] != 0.0 {
		t.Errorf("log line peers %v → %v, want 2000 → 0", rec["peers_before"], rec["peers"])
	}
}
