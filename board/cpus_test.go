package board

import (
	"context"
	"log/slog"
	"runtime"
	"testing"
	"time"
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

// TestCPUScalerRuns drives the real runtime: Run starts on one core, a busy
// process gets every core back within a couple of seconds, and the default
// is restored when Run ends. It changes this test process's GOMAXPROCS, so
// it does not run in parallel with anything.
func TestCPUScalerRuns(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU: nothing to scale")
	}
	before := runtime.GOMAXPROCS(0)
	s := NewCPUScaler(CPUsAdaptive, func(string) string { return "" }, nil)
	if s == nil {
		t.Skip("GOMAXPROCS is 1 here")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	waitFor(t, 2*time.Second, func() bool { return runtime.GOMAXPROCS(0) == 1 }, "one core at start")

	// Burn CPU until the scaler gives the cores back.
	stop := make(chan struct{})
	for range 2 {
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for i := 0; i < 1e5; i++ {
					_ = i * i
				}
			}
		}()
	}
	waitFor(t, 5*time.Second, func() bool { return runtime.GOMAXPROCS(0) == before }, "all cores under load")
	close(stop)
	if got := s.Stats(); got.Procs != before || got.Changes < 1 {
		t.Fatalf("stats %+v, want %d cores after at least one change", got, before)
	}

	// Stopping restores the runtime's default.
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Fatalf("GOMAXPROCS after Run = %d, want the default %d", got, before)
	}
}

func waitFor(t *testing.T, d time.Duration, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
