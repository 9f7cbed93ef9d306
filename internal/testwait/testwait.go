// Package testwait waits in tests for something another goroutine or a
// real peer process makes observable: a counter reaching a value, a file
// appearing, a listener having its address. It polls the condition with a
// deadline, so a test waits exactly as long as the thing takes and fails
// with a clear message when it never happens, instead of sleeping a guessed
// duration.
//
// The polling interval starts at 1 ms and doubles to 20 ms, so fast
// conditions are seen at once and slow ones cost little CPU. Inside a
// testing/synctest bubble the helpers run on the bubble's fake clock, like
// any other timer.
//
// Only tests import this package.
package testwait

import (
	"testing"
	"time"
)

// maxStep bounds the polling interval.
const maxStep = 20 * time.Millisecond

// Until polls cond until it returns true or timeout passes, and reports
// whether it returned true. It never fails a test: callers that need their
// own message, or that run outside the test goroutine, use it.
func Until(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	step := time.Millisecond
	for !cond() {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		pause(min(step, left))
		step = min(2*step, maxStep)
	}
	return true
}

// For polls cond until it returns true, and fails t with "timed out after
// <timeout> waiting for <what>" when timeout passes first.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Until(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// NoError polls check until it returns nil, and fails t with the last
// error check returned when timeout passes first. The error says what was
// awaited and what was seen instead.
func NoError(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	var last error
	if !Until(timeout, func() bool { last = check(); return last == nil }) {
		t.Fatalf("timed out after %s: %v", timeout, last)
	}
}

// pause blocks for d. It is the one place this package lets time pass.
func pause(d time.Duration) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	<-tm.C
}
