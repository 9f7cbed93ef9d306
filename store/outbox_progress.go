package store

import "time"

// Progress reports the writer's progress for a supervisor: the time of its
// last commit of appends while appends wait, and now while none waits (an
// idle writer with nothing to do is healthy). An append that waits longer
// than a bound without any commit finishing (a commit blocked in an fsync
// that never returns, a wedged file system) makes Progress fall behind by
// that much. A commit that fails still counts: the writer answered, and the
// failure is counted in OutboxStats.
//
// Progress uses the monotonic clock (time.Now), not OutboxOptions.Now: a
// jump of the wall clock must not make the writer look stuck.
func (q *Outbox) Progress() time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pendingN == 0 {
		return time.Now()
	}
	if q.lastCommit.After(q.waitSince) {
		return q.lastCommit
	}
	return q.waitSince
}
