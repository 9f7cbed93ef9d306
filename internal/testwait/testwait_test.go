package testwait

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// fakeT records a failure instead of ending the test.
type fakeT struct {
	testing.TB
	failed atomic.Bool
	msg    string
}

func (f *fakeT) Helper() {}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	f.failed.Store(true)
}

func TestUntilSeesAConditionThatBecomesTrue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var done atomic.Bool
		go func() {
			time.Sleep(300 * time.Millisecond) // simulated work on the bubble's clock
			done.Store(true)
		}()
		if !Until(time.Second, done.Load) {
			t.Fatal("Until gave up on a condition that became true")
		}
		if took := time.Since(start); took < 300*time.Millisecond || took > 300*time.Millisecond+maxStep {
			t.Fatalf("saw it after %s, want within %s of 300ms", took, maxStep)
		}
	})
}

func TestUntilGivesUpAtTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		calls := 0
		if Until(time.Second, func() bool { calls++; return false }) {
			t.Fatal("Until reported a condition that never held")
		}
		if took := time.Since(start); took != time.Second {
			t.Fatalf("gave up after %s, want 1s", took)
		}
		// 1, 2, 4, 8, 16 ms, then 20 ms steps: far fewer calls than 1 ms polling.
		if calls < 10 || calls > 100 {
			t.Fatalf("%d calls in 1 s", calls)
		}
	})
}

func TestForAndNoErrorFailWithWhatWasAwaited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ft := &fakeT{TB: t}
		For(ft, 50*time.Millisecond, "the listener", func() bool { return false })
		if !ft.failed.Load() || ft.msg != "timed out after 50ms waiting for the listener" {
			t.Fatalf("For: failed %v, %q", ft.failed.Load(), ft.msg)
		}
		ft = &fakeT{TB: t}
		NoError(ft, 50*time.Millisecond, func() error { return errors.New("3 of 5 devices online") })
		if !ft.failed.Load() || ft.msg != "timed out after 50ms: 3 of 5 devices online" {
			t.Fatalf("NoError: failed %v, %q", ft.failed.Load(), ft.msg)
		}
		ft = &fakeT{TB: t}
		n := 0
		NoError(ft, time.Second, func() error {
			if n++; n < 3 {
				return errors.New("not yet")
			}
			return nil
		})
		if ft.failed.Load() {
			t.Fatalf("NoError failed on a check that passed: %s", ft.msg)
		}
	})
}
