package store

import (
	"fmt"
	"os"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// run is the outbox's writer goroutine, started by OpenOutbox and stopped by
// Close. Each round it commits every pending append in one transaction of the
// head segment (one fsync), applies the DropOldest limits, writes due deletes
// (one transaction per segment), and removes segments that are fully
// acknowledged. It is the only goroutine that writes to or removes segments.
func (q *Outbox) run() {
	defer close(q.done)
	var (
		flushTimer *time.Timer
		flushC     <-chan time.Time
		flushDue   bool
	)
	var gather int // callers of the last commit, expected back soon
	sweep := time.NewTicker(outboxSweepInterval)
	defer sweep.Stop()
	defer func() {
		if flushTimer != nil {
			flushTimer.Stop()
		}
	}()
	for {
		if gather > 1 {
			q.gather(gather)
		}
		q.mu.Lock()
		var b *appendBatch
		if len(q.pending.recs) > 0 {
			b = q.pending
			q.pending = newAppendBatch()
			close(q.spaceCh)
			q.spaceCh = make(chan struct{})
		}
		closing, dels := q.closing, q.delCount
		depthBefore, bytesBefore := q.depth, q.bytes
		q.mu.Unlock()

		if b != nil {
			// Asked after taking the batch: an append made after Full
			// turned true is judged by it.
			full := q.opts.Policy == DropOldest && q.opts.Full != nil && q.opts.Full()
			q.commitAppends(b)
			gather = b.callers
			q.enforceLimits(full, depthBefore, bytesBefore)
			close(b.done) // after the limits hold: callers see the result
			q.mu.Lock()
			dels = q.delCount
			q.mu.Unlock()
		}
		if dels > 0 && (closing || flushDue || dels >= outboxFlushCount) {
			q.flushDeletes()
			flushDue = false
		} else if dels > 0 && flushC == nil {
			if flushTimer == nil {
				flushTimer = time.NewTimer(outboxFlushInterval)
			} else {
				flushTimer.Reset(outboxFlushInterval)
			}
			flushC = flushTimer.C
		}
		q.removeEmpty()

		if b != nil {
			continue // more may have arrived during the commit
		}
		gather = 0
		if closing {
			q.mu.Lock()
			idle := len(q.pending.recs) == 0 && q.delCount == 0
			q.mu.Unlock()
			if idle {
				return
			}
			continue
		}
		select {
		case <-q.wake:
		case <-flushC:
			flushC, flushDue = nil, true
		case <-sweep.C:
			q.sweepExpired()
		}
	}
}

// outboxGatherWait bounds how long the writer waits for the callers of the
// previous commit to come back before it commits without them.
const outboxGatherWait = 150 * time.Microsecond

// gather waits, briefly, until as many callers are pending as the last commit
// released. Without it, concurrent appenders split into two cohorts that take
// turns (one waits for its fsync while the other fills the next batch), and
// every commit carries half of them.
func (q *Outbox) gather(callers int) {
	var timer *time.Timer
	for {
		q.mu.Lock()
		enough := q.pending.callers >= callers || q.closing
		q.mu.Unlock()
		if enough {
			break
		}
		if timer == nil {
			timer = time.NewTimer(outboxGatherWait)
			defer timer.Stop()
		}
		select {
		case <-q.wake:
		case <-timer.C:
			return
		}
	}
	// The wake that told us may have been consumed: the caller rechecks
	// pending work anyway.
}

// commitAppends writes a batch into the head segment (rotating first if it is
// full) in one transaction, then publishes it to the index and to readers.
// It sets b.err; the caller closes b.done.
func (q *Outbox) commitAppends(b *appendBatch) {
	first := b.recs[0].seq
	last := b.recs[len(b.recs)-1].seq
	head, err := q.headFor(first)
	if err == nil {
		err = head.db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket(bucketMsgs)
			m := tx.Bucket(bucketMeta)
			if bk == nil || m == nil {
				return fmt.Errorf("buckets missing")
			}
			bk.FillPercent = 1 // keys only ever grow: pack the pages full
			var key [8]byte
			for _, r := range b.recs {
				be.PutUint64(key[:], r.seq)
				be.PutUint32(r.value, recordCRC(key[:], r.value))
				if err := bk.Put(key[:], r.value); err != nil {
					return fmt.Errorf("put %d: %w", r.seq, err)
				}
			}
			be.PutUint64(key[:], last)
			return m.Put(metaLastKey, key[:])
		})
		if err != nil {
			err = fmt.Errorf("outbox %s: commit %d appends (%d..%d): %w", head.path, len(b.recs), first, last, err)
		}
	}

	now := q.opts.Now()
	q.mu.Lock()
	q.pendingN -= len(b.recs)
	q.pendingBytes -= b.bytes
	if err == nil {
		for _, r := range b.recs {
			size := int64(len(r.value) + 8)
			head.setSize(r.seq, size)
			q.depth++
			q.bytes += size
		}
		head.written += b.bytes + int64(16*len(b.recs)) // bbolt's leaf element header
		head.writtenMsgs += int64(len(b.recs))
		q.lastSeq = last
		close(q.committedCh)
		q.committedCh = make(chan struct{})
		q.rates.add(now, uint64(len(b.recs)), 0)
	}
	q.mu.Unlock()

	if err == nil {
		q.commits.Add(1)
		q.appended.Add(uint64(len(b.recs)))
	} else {
		q.dropWrite.Add(uint64(len(b.recs)))
		q.logWrite.Do(func() {
			q.log.Error("outbox commit failed; the appends were refused", "error", err,
				"dropped_write_failed_total", q.dropWrite.Load())
		})
	}
	b.err = err
}

// headFor returns the segment to append seq to, creating a new head when
// there is none or the current one is full or sealed.
func (q *Outbox) headFor(seq uint64) (*segment, error) {
	q.mu.Lock()
	var head *segment
	if n := len(q.segs); n > 0 {
		head = q.segs[n-1]
	}
	q.mu.Unlock()
	if head != nil && !head.sealed && head.written < q.opts.SegmentBytes && head.writtenMsgs < q.opts.SegmentMessages {
		return head, nil
	}
	s, err := q.createSegment(seq)
	if err != nil {
		return nil, err
	}
	q.mu.Lock()
	q.segs = append(q.segs, s)
	q.mu.Unlock()
	q.log.Debug("outbox: new head segment", "segment", s.path)
	return s, nil
}

// enforceLimits deletes the oldest entries under DropOldest until the limits
// hold, or, when the Full hook said so, until the outbox is no larger than
// before the last commit. Each victim is counted as expired if it was, as
// full otherwise.
func (q *Outbox) enforceLimits(full bool, depthBefore, bytesBefore int64) {
	if q.opts.Policy != DropOldest {
		return
	}
	type victims struct {
		s    *segment
		seqs []uint64
	}
	var vs []victims
	q.mu.Lock()
	overN, overB := int64(0), int64(0)
	if q.opts.MaxMessages > 0 {
		overN = q.depth - q.opts.MaxMessages
	}
	if q.opts.MaxBytes > 0 {
		overB = q.bytes - q.opts.MaxBytes
	}
	if full {
		overN = max(overN, q.depth-depthBefore)
		overB = max(overB, q.bytes-bytesBefore)
	}
	for _, s := range q.segs {
		if overN <= 0 && overB <= 0 {
			break
		}
		var v victims
		v.s = s
		for i := s.lo; i < len(s.sizes) && (overN > 0 || overB > 0); i++ {
			if size := int64(s.sizes[i]); size != 0 {
				v.seqs = append(v.seqs, s.first+uint64(i))
				overN--
				overB -= size
			}
		}
		if len(v.seqs) > 0 {
			vs = append(vs, v)
		}
	}
	q.mu.Unlock()
	if len(vs) == 0 {
		return
	}

	now := q.opts.Now().UnixNano()
	var nFull, nExpired int
	for _, v := range vs {
		expired := make(map[uint64]bool)
		_ = v.s.db.View(func(tx *bolt.Tx) error {
			bk := tx.Bucket(bucketMsgs)
			if bk == nil {
				return nil
			}
			var key [8]byte
			for _, seq := range v.seqs {
				be.PutUint64(key[:], seq)
				if val := bk.Get(key[:]); len(val) >= recHeaderSize {
					if exp := int64(be.Uint64(val[12:])); exp != 0 && exp <= now {
						expired[seq] = true
					}
				}
			}
			return nil
		})
		q.mu.Lock()
		for _, seq := range v.seqs {
			cause := causeFull
			if expired[seq] {
				cause = causeExpired
			}
			if q.kill(v.s, seq, cause) {
				if cause == causeFull {
					nFull++
				} else {
					nExpired++
				}
			}
		}
		q.mu.Unlock()
	}
	q.logFull.Do(func() {
		q.log.Warn("outbox full: dropped the oldest messages", "policy", q.opts.Policy.String(),
			"dropped", nFull, "expired", nExpired, "disk_reserve", full,
			"dropped_full_total", q.dropFull.Load())
	})
}

// flushDeletes writes every pending delete, one transaction per segment.
// Segments about to be removed whole are skipped. A failed delete is logged:
// the entry is already gone from the index, and after a restart it would be
// sent again (a duplicate, never a loss).
func (q *Outbox) flushDeletes() {
	type work struct {
		s    *segment
		seqs []uint64
	}
	var ws []work
	q.mu.Lock()
	var head *segment
	if n := len(q.segs); n > 0 {
		head = q.segs[n-1]
	}
	for _, s := range q.segs {
		if len(s.dels) == 0 {
			continue
		}
		if s.live > 0 || s == head {
			ws = append(ws, work{s, s.dels})
		}
		s.dels = nil
	}
	q.delCount = 0
	q.mu.Unlock()

	for _, w := range ws {
		slices.Sort(w.seqs)
		err := w.s.db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket(bucketMsgs)
			if bk == nil {
				return nil
			}
			var key [8]byte
			for _, seq := range w.seqs {
				be.PutUint64(key[:], seq)
				if err := bk.Delete(key[:]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			q.logWrite.Do(func() {
				q.log.Error("outbox: writing deletes failed; they may be sent again after a restart",
					"segment", w.s.path, "deletes", len(w.seqs), "error", err)
			})
		}
	}
}

// removeEmpty closes and deletes segment files that are not the head and hold
// no stored entry any more.
func (q *Outbox) removeEmpty() {
	q.mu.Lock()
	var gone []*segment
	keep := q.segs[:0:0]
	for i, s := range q.segs {
		if i < len(q.segs)-1 && s.live == 0 {
			gone = append(gone, s)
			q.delCount -= len(s.dels)
			s.dels = nil
			continue
		}
		keep = append(keep, s)
	}
	if len(gone) > 0 {
		q.segs = keep
	}
	q.mu.Unlock()
	for _, s := range gone {
		// Close waits for readers still in a transaction on it; later
		// readers get ErrDatabaseNotOpen and skip it.
		if err := s.db.Close(); err != nil {
			q.log.Error("outbox: closing a drained segment", "segment", s.path, "error", err)
		}
		if err := os.Remove(s.path); err != nil {
			q.log.Error("outbox: removing a drained segment", "segment", s.path, "error", err)
			continue
		}
		q.log.Debug("outbox: removed a drained segment", "segment", s.path)
	}
	if len(gone) > 0 {
		if err := syncDir(q.opts.Dir); err != nil {
			q.log.Error("outbox: sync directory after removing segments", "error", err)
		}
	}
}

// sweepExpired looks at up to outboxSweepMax of the oldest stored entries and
// drops the expired ones, so that expired messages do not hold space while
// nobody reads (the uplink down for days). Read drops the others it meets.
func (q *Outbox) sweepExpired() {
	q.mu.Lock()
	segs := slices.Clone(q.segs)
	q.mu.Unlock()
	now := q.opts.Now().UnixNano()
	budget := outboxSweepMax
	for _, s := range segs {
		if budget <= 0 {
			return
		}
		var expired []badEntry
		_ = s.db.View(func(tx *bolt.Tx) error {
			bk := tx.Bucket(bucketMsgs)
			if bk == nil {
				return nil
			}
			c := bk.Cursor()
			for k, v := c.First(); k != nil && budget > 0; k, v = c.Next() {
				budget--
				if len(v) >= recHeaderSize {
					if exp := int64(be.Uint64(v[12:])); exp != 0 && exp <= now && len(k) == 8 {
						expired = append(expired, badEntry{be.Uint64(k), causeExpired})
					}
				}
			}
			return nil
		})
		if len(expired) == 0 {
			continue
		}
		q.mu.Lock()
		for _, e := range expired {
			q.kill(s, e.seq, e.cause)
		}
		q.mu.Unlock()
		q.reportBad(s, expired)
	}
}
