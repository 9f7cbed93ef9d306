package board

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
)

// fakeScaler records what the scaler asks of the runtime instead of
// changing the test process's GOMAXPROCS.
func fakeScaler(all int) (*CPUScaler, *[]int) {
	var calls []int
	s := &CPUScaler{
		log:     slog.New(slog.DiscardHandler),
		cpuTime: func() (time.Duration, bool) { return 0, true },
		setOne:  func() { calls = append(calls, 1) },
		setAll:  func() { calls = append(calls, all) },
		all:     all,
	}
	s.procs.Store(1) // as Run leaves it at its start
	return s, &calls
}

func TestCPUScalerSteps(t *testing.T) {
	s, calls := fakeScaler(4)

	// Light load stays on one core.
	for range 30 {
		s.step(0.2)
	}
	if got := s.Stats(); got.Procs != 1 || got.Changes != 0 || len(*calls) != 0 {
		t.Fatalf("light load: %+v, calls %v; want one core, no change", got, *calls)
	}

	// One busy second: all cores.
	s.step(0.6)
	if got := s.Stats(); got.Procs != 4 || got.Changes != 1 {
		t.Fatalf("busy: %+v, want all 4 cores after one change", got)
	}

	// Between the thresholds nothing changes, however long.
	for range 30 {
		s.step(0.4)
	}
	if s.Stats().Procs != 4 {
		t.Fatal("moderate load dropped to one core")
	}

	// Nine quiet seconds then one busier one: the count starts again.
	for range scaleDownAfter - 1 {
		s.step(0.1)
	}
	s.step(0.3)
	for range scaleDownAfter - 1 {
		s.step(0.1)
	}
	if s.Stats().Procs != 4 {
		t.Fatal("dropped to one core without 10 quiet seconds in a row")
	}
	s.step(0.1) // the tenth in a row
	if got := s.Stats(); got.Procs != 1 || got.Changes != 2 {
		t.Fatalf("after 10 quiet seconds: %+v, want one core, 2 changes", got)
	}
	if want := []int{4, 1}; len(*calls) != 2 || (*calls)[0] != want[0] || (*calls)[1] != want[1] {
		t.Fatalf("runtime calls %v, want %v", *calls, want)
	}
}

func TestCPUScalerOff(t *testing.T) {
	env := func(string) string { return "" }
	if s := NewCPUScaler(CPUsAll, env, nil); s != nil {
		t.Fatal("mode all made a scaler")
	}
	set := func(k string) string {
		if k == "GOMAXPROCS" {
			return "2"
		}
		return ""
	}
	if s := NewCPUScaler(CPUsAdaptive, set, nil); s != nil {
		t.Fatal("GOMAXPROCS in the environment did not win")
	}
	var s *CPUScaler // what NewCPUScaler returns when off
	if err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := s.Stats().Procs; got != runtime.GOMAXPROCS(0) {
		t.Fatalf("nil scaler reports %d cores, runtime has %d", got, runtime.GOMAXPROCS(0))
	}
}

// TestCPUScalerRuns drives Run with an injected CPU reading and injected
// core settings, so it is deterministic under any load: Run starts on one
// core, a busy reading gives every core back, an idle one takes them away
// after scaleDownAfter samples, and the default is restored when Run ends.
func TestCPUScalerRuns(t *testing.T) {
	var (
		mu    sync.Mutex
		busy  bool
		used  time.Duration
		at    = time.Now()
		procs = 4
	)
	s := &CPUScaler{
		log: slog.New(slog.DiscardHandler),
		cpuTime: func() (time.Duration, bool) {
			mu.Lock()
			defer mu.Unlock()
			now := time.Now()
			if busy { // two cores' worth of CPU time since the last reading
				used += 2 * now.Sub(at)
			}
			at = now
			return used, true
		},
		setOne: func() { mu.Lock(); procs = 1; mu.Unlock() },
		setAll: func() { mu.Lock(); procs = 4; mu.Unlock() },
		all:    4,
		every:  time.Millisecond,
	}
	s.procs.Store(4)
	current := func() int { mu.Lock(); defer mu.Unlock(); return procs }
	setBusy := func(b bool) { mu.Lock(); busy = b; mu.Unlock() }

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	t.Cleanup(func() {
		if !stopped { // a failed wait: stop Run before the next test
			cancel()
			<-done
		}
	})

	testwait.For(t, 5*time.Second, "one core at start", func() bool { return current() == 1 && s.Stats().Procs == 1 })
	setBusy(true)
	testwait.For(t, 5*time.Second, "all cores when busy", func() bool { return current() == 4 && s.Stats().Procs == 4 })
	setBusy(false)
	testwait.For(t, 5*time.Second, "one core again when idle", func() bool { return current() == 1 })
	if got := s.Stats().Changes; got < 2 {
		t.Fatalf("Changes = %d, want at least 2 (up, then down)", got)
	}

	// Stopping restores the default.
	cancel()
	stopped = true
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if current() != 4 || s.Stats().Procs != 4 {
		t.Fatalf("after Run: %d cores set, stats say %d; want the default 4", current(), s.Stats().Procs)
	}
}

// TestCPUScalerSettersChangeTheRuntime checks that the real setters change
// GOMAXPROCS, and puts the runtime back whatever happens.
func TestCPUScalerSettersChangeTheRuntime(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(before) })
	s := NewCPUScaler(CPUsAdaptive, func(string) string { return "" }, nil)
	if s == nil {
		if before < 2 {
			return // one core: NewCPUScaler rightly returns nil, nothing to set
		}
		t.Fatal("NewCPUScaler returned nil with several cores")
	}
	s.setOne()
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Fatalf("setOne: GOMAXPROCS = %d", got)
	}
	s.setAll()
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Fatalf("setAll: GOMAXPROCS = %d, want %d", got, before)
	}
}
