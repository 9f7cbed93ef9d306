package supervise

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
)

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newSup(t *testing.T, opts Options) (*Supervisor, *logBuf) {
	t.Helper()
	lb := &logBuf{}
	opts.Logger = slog.New(slog.NewTextHandler(lb, nil))
	if opts.Jitter == nil {
		opts.Jitter = func() float64 { return 0.5 }
	}
	return New(opts), lb
}

func stats(t *testing.T, s *Supervisor, name string) PartStats {
	t.Helper()
	for _, st := range s.Stats() {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("no part %s in %+v", name, s.Stats())
	return PartStats{}
}

// block runs until ctx is done.
func block(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func TestRestartAfterError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := newSup(t, Options{})
		var runs atomic.Int32
		err := s.Start(Part{Name: "flaky", Run: func(ctx context.Context) error {
			if runs.Add(1) <= 2 {
				return errors.New("boom")
			}
			return block(ctx)
		}})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n := runs.Load(); n != 3 {
			t.Fatalf("runs = %d, want 3", n)
		}
		st := stats(t, s, "flaky")
		if st.Restarts != 2 || st.State != StateRunning || st.LastError != "boom" || !st.Healthy {
			t.Fatalf("stats = %+v", st)
		}
		if err := s.StopAll(time.Second); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRestartAfterPanicLogsStackOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, lb := newSup(t, Options{})
		var runs atomic.Int32
		_ = s.Start(Part{Name: "panicky", Run: func(ctx context.Context) error {
			if runs.Add(1) == 1 {
				panic("register map corrupt")
			}
			return block(ctx)
		}})
		time.Sleep(5 * time.Second)
		synctest.Wait()
		st := stats(t, s, "panicky")
		if runs.Load() != 2 || st.Restarts != 1 || st.Panics != 1 || st.State != StateRunning {
			t.Fatalf("runs %d, stats %+v", runs.Load(), st)
		}
		logs := lb.String()
		if n := strings.Count(logs, `msg="part panicked"`); n != 1 {
			t.Fatalf("panic logged %d times:\n%s", n, logs)
		}
		if !strings.Contains(logs, "supervise_test.go") || !strings.Contains(logs, "register map corrupt") {
			t.Fatalf("panic log has no stack:\n%s", logs)
		}
		if err := s.StopAll(time.Second); err != nil {
			t.Fatal(err)
		}
	})
}

func TestBackoffGrowsAndCaps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := newSup(t, Options{MinBackoff: time.Second, MaxBackoff: 8 * time.Second, MaxFailures: 100, Jitter: func() float64 { return 0 }})
		var mu sync.Mutex
		var at []time.Time
		_ = s.Start(Part{Name: "failing", Run: func(context.Context) error {
			mu.Lock()
			at = append(at, time.Now())
			mu.Unlock()
			return errors.New("down")
		}})
		time.Sleep(30 * time.Second)
		if err := s.StopAll(time.Second); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		// Jitter 0 waits half the backoff: 0.5, 1, 2, 4, 4, 4 … seconds.
		want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second, 4 * time.Second}
		if len(at) < len(want)+1 {
			t.Fatalf("only %d runs", len(at))
		}
		for i, w := range want {
			if got := at[i+1].Sub(at[i]); got != w {
				t.Fatalf("gap %d = %v, want %v (all: %v)", i, got, w, at)
			}
		}
	})
}

func TestBackoffResetsAfterGoodRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := newSup(t, Options{ResetAfter: 10 * time.Second, Jitter: func() float64 { return 0 }})
		var runs atomic.Int32
		_ = s.Start(Part{Name: "p", Run: func(ctx context.Context) error {
			n := runs.Add(1)
			if n == 4 {
				// A good run: longer than ResetAfter, then a failure.
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(11 * time.Second):
				}
			}
			if n <= 4 {
				return errors.New("down")
			}
			return block(ctx)
		}})
		time.Sleep(20 * time.Second)
		synctest.Wait()
		st := stats(t, s, "p")
		if st.Failures != 1 || st.Restarts != 4 {
			t.Fatalf("stats %+v, want failures reset to 1 after the good run", st)
		}
		_ = s.StopAll(time.Second)
	})
}

func TestStuckPartRestarted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, lb := newSup(t, Options{ResetAfter: time.Hour})
		var runs atomic.Int32
		var last atomic.Int64 // progress, Unix nanoseconds
		_ = s.Start(Part{
			Name:     "line",
			Bound:    5 * time.Second,
			Progress: func() time.Time { return time.Unix(0, last.Load()) },
			Run: func(ctx context.Context) error {
				if runs.Add(1) == 1 {
					return block(ctx) // makes no progress: stuck
				}
				t := time.NewTicker(time.Second)
				defer t.Stop()
				for {
					last.Store(time.Now().UnixNano())
					select {
					case <-ctx.Done():
						return nil
					case <-t.C:
					}
				}
			},
		})
		time.Sleep(30 * time.Second)
		synctest.Wait()
		st := stats(t, s, "line")
		if runs.Load() != 2 || st.Restarts != 1 || st.State != StateRunning || !st.Healthy || !strings.HasPrefix(st.LastError, "stuck") {
			t.Fatalf("runs %d, stats %+v", runs.Load(), st)
		}
		if st.LastProgress.IsZero() {
			t.Fatal("no progress reported")
		}
		if !strings.Contains(lb.String(), "part stuck") {
			t.Fatalf("stuck not logged:\n%s", lb)
		}
		if err := s.Healthy(); err != nil {
			t.Fatal(err)
		}
		_ = s.StopAll(time.Second)
	})
}

func TestUnhealthyWhenRestartsDoNotHelp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := newSup(t, Options{MaxFailures: 3})
		_ = s.Start(Part{Name: "ok", Run: block})
		_ = s.Start(Part{
			Name:     "wedged",
			Bound:    5 * time.Second,
			Progress: func() time.Time { return time.Time{} },
			Run:      block,
		})
		// Three stuck restarts keep it healthy (restarting first) …
		testwait.For(t, time.Minute, "the third stuck restart", func() bool { return stats(t, s, "wedged").Failures >= 3 })
		if err := s.Healthy(); err != nil {
			t.Fatalf("healthy after 3 restarts: %v", err)
		}
		// … the fourth makes it unhealthy.
		testwait.For(t, time.Minute, "the fourth stuck restart", func() bool { return stats(t, s, "wedged").Failures >= 4 })
		err := s.Healthy()
		if err == nil || !strings.Contains(err.Error(), "wedged") || strings.Contains(err.Error(), "ok (") {
			t.Fatalf("Healthy = %v", err)
		}
		_ = s.StopAll(time.Second)
	})
}

func TestCrashLoopUnhealthy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := newSup(t, Options{MaxFailures: 2})
		_ = s.Start(Part{Name: "crash", Run: func(context.Context) error { return errors.New("no device") }})
		time.Sleep(20 * time.Second)
		err := s.Healthy()
		if err == nil || !strings.Contains(err.Error(), "crash") || !strings.Contains(err.Error(), "no device") {
			t.Fatalf("Healthy = %v", err)
		}
		_ = s.StopAll(time.Second)
	})
}

func TestStuckPartThatIgnoresCancelIsUnhealthy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := newSup(t, Options{StuckStop: 3 * time.Second, MaxFailures: 10})
		release := make(chan struct{})
		var runs atomic.Int32
		_ = s.Start(Part{
			Name:     "deaf",
			Bound:    2 * time.Second,
			Progress: func() time.Time { return time.Time{} },
			Run: func(context.Context) error {
				runs.Add(1)
				<-release
				return nil
			},
		})
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if err := s.Healthy(); err == nil || !strings.Contains(err.Error(), "deaf") {
			t.Fatalf("Healthy = %v", err)
		}
		if runs.Load() != 1 {
			t.Fatalf("a second copy was started while the first still runs")
		}
		close(release)
		synctest.Wait()
		_ = s.StopAll(time.Second)
	})
}

func TestStopAllAbandonsWithinBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, lb := newSup(t, Options{})
		release := make(chan struct{})
		defer close(release)
		var stopped []string
		var mu sync.Mutex
		part := func(name string) Part {
			return Part{Name: name, Run: func(ctx context.Context) error {
				<-ctx.Done()
				mu.Lock()
				stopped = append(stopped, name)
				mu.Unlock()
				return nil
			}}
		}
		_ = s.Start(part("store-user"))
		_ = s.Start(Part{Name: "deaf", Run: func(context.Context) error { <-release; return nil }})
		_ = s.Start(part("intake"))
		synctest.Wait()
		start := time.Now()
		err := s.StopAll(6 * time.Second)
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), "deaf") || strings.Contains(err.Error(), "intake") {
			t.Fatalf("StopAll = %v", err)
		}
		if took > 6*time.Second {
			t.Fatalf("StopAll took %v, budget 6s", took)
		}
		// deaf waited its share: a third of what was left.
		if took < 2*time.Second {
			t.Fatalf("StopAll took %v: deaf did not get its share", took)
		}
		mu.Lock()
		got := strings.Join(stopped, ",")
		mu.Unlock()
		if got != "intake,store-user" {
			t.Fatalf("stop order %s, want reverse of start", got)
		}
		if !strings.Contains(lb.String(), "part=deaf") || !strings.Contains(lb.String(), "abandoned") {
			t.Fatalf("abandoned part not named in log:\n%s", lb)
		}
	})
}

func TestStopNamedInReverseOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := newSup(t, Options{})
		var mu sync.Mutex
		var stopped []string
		for _, n := range []string{"a", "b", "c", "d"} {
			_ = s.Start(Part{Name: n, Run: func(ctx context.Context) error {
				<-ctx.Done()
				mu.Lock()
				stopped = append(stopped, n)
				mu.Unlock()
				return nil
			}})
		}
		if err := s.Stop(time.Second, "a", "c"); err != nil {
			t.Fatal(err)
		}
		if err := s.Start(Part{Name: "a", Run: block}); err != nil {
			t.Fatalf("restart a stopped part: %v", err)
		}
		if err := s.Start(Part{Name: "b", Run: block}); err == nil {
			t.Fatal("a second part b started")
		}
		if err := s.StopAll(time.Second); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if got := strings.Join(stopped, ","); got != "c,a,d,b" {
			t.Fatalf("stop order %s", got)
		}
	})
}

func TestPartThatFinishesIsNotRestarted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := newSup(t, Options{})
		var runs atomic.Int32
		_ = s.Start(Part{Name: "idle", Run: func(context.Context) error { runs.Add(1); return nil }})
		time.Sleep(time.Minute)
		synctest.Wait()
		if st := stats(t, s, "idle"); runs.Load() != 1 || st.State != StateDone || !st.Healthy {
			t.Fatalf("runs %d, stats %+v", runs.Load(), st)
		}
		_ = s.StopAll(time.Second)
	})
}
