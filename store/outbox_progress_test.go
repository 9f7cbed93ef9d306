package store

import (
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
)

// TestOutboxProgress wedges the writer with BeforeCommit: while an append
// waits, Progress stays where the wait began; idle, and after the commit
// goes through, it is now.
func TestOutboxProgress(t *testing.T) {
	gate := make(chan struct{})
	entered := make(chan struct{}, 1)
	wedge := true
	q, err := OpenOutbox(OutboxOptions{Dir: t.TempDir(), BeforeCommit: func() {
		if wedge {
			entered <- struct{}{}
			<-gate
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if age := time.Since(q.Progress()); age > time.Second {
		t.Fatalf("idle outbox: progress %v old", age)
	}
	before := time.Now()
	if err := q.AppendAsync(OutboxRecord{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer did not try to commit")
	}
	p1 := q.Progress()
	if p1.Before(before.Add(-time.Millisecond)) || p1.After(time.Now()) {
		t.Fatalf("wedged: progress %v, want when the append began to wait (%v)", p1, before)
	}
	// Polled, not slept: the progress must not move while the commit is blocked.
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
		if p := q.Progress(); !p.Equal(p1) {
			t.Fatalf("progress moved from %v to %v while the commit is blocked", p1, p)
		}
	}
	wedge = false // the writer is blocked in the hook: no race with its next call
	close(gate)
	testwait.For(t, 10*time.Second, "progress to come back after the commit went through", func() bool { return q.Progress().After(deadline) })
	if st := q.Stats(); st.Depth != 1 {
		t.Fatalf("depth %d after the commit, want 1", st.Depth)
	}
}
