package store

import (
	"errors"
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
	var ledgerTimer *time.Timer
	var ledgerC <-chan time.Time
	defer func() {
		if flushTimer != nil {
			flushTimer.Stop()
		}
		if ledgerTimer != nil {
			ledgerTimer.Stop()
		}
	}()
	for {
		q.repairDamaged()
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
			idle := len(q.pending.recs) == 0 && q.delCount == 0 && !q.damagePending.Load()
			q.mu.Unlock()
			if idle {
				return // Close writes the ledger
			}
			continue
		}
		// Going idle: bring the ledger up to date, at most once a second.
		q.mu.Lock()
		dirty := q.ledgerDirty
		q.mu.Unlock()
		if dirty && ledgerC == nil {
			if wait := ledgerEvery - time.Since(q.ledgerAt); wait <= 0 {
				q.writeLedger(false)
			} else {
				if ledgerTimer == nil {
					ledgerTimer = time.NewTimer(wait)
				} else {
					ledgerTimer.Reset(wait)
				}
				ledgerC = ledgerTimer.C
			}
		}
		select {
		case <-q.wake:
		case <-flushC:
			flushC, flushDue = nil, true
		case <-ledgerC:
			ledgerC = nil
			q.writeLedger(false)
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
	if q.opts.BeforeCommit != nil {
		q.opts.BeforeCommit()
	}
	first := b.recs[0].seq
	last := b.recs[len(b.recs)-1].seq
	var head *segment
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		head, err = q.headFor(first)
		if err != nil {
			break
		}
		err = q.update(head, func(tx *bolt.Tx) error {
			bk := tx.Bucket(bucketMsgs)
			m := tx.Bucket(bucketMeta)
			if bk == nil || m == nil {
				return errBucketMissing
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
		if !errors.Is(err, ErrSegmentDamaged) {
			break
		}
		// The head was damaged under us: salvage it (it becomes sealed, or
		// goes) and commit to a new head.
		q.repairDamaged()
	}
	if err != nil {
		err = fmt.Errorf("outbox %s: commit %d appends (%d..%d): %w", q.opts.Dir, len(b.recs), first, last, err)
	}

	now := q.opts.Now()
	q.mu.Lock()
	q.pendingN -= len(b.recs)
	q.pendingBytes -= b.bytes
	q.lastCommit = time.Now()
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
		q.ledgerDirty = true
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
	if head != nil && !head.sealed && !head.damaged.Load() && head.written < q.opts.SegmentBytes && head.writtenMsgs < q.opts.SegmentMessages {
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
		causes := make(map[uint64]dropCause)
		_ = q.view(v.s, func(tx *bolt.Tx) error {
			bk := tx.Bucket(bucketMsgs)
			if bk == nil {
				return errBucketMissing
			}
			var key [8]byte
			for _, seq := range v.seqs {
				be.PutUint64(key[:], seq)
				if c := checkRecord(key[:], bk.Get(key[:]), now); c != causeAck {
					causes[seq] = c
				}
			}
			return nil
		})
		damaged := false
		q.mu.Lock()
		for _, seq := range v.seqs {
			cause, ok := causes[seq]
			if !ok || cause == causeMissing || cause == causeCorrupt {
				// Dropped by the limit either way; a damaged tree is
				// salvaged for the others.
				damaged = damaged || ok
				cause = causeFull
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
		if damaged {
			q.markDamaged(v.s, damageStructure, false, errors.New("records missing or under damaged keys"))
		}
	}
	q.logFull.Do(func() {
		q.log.Warn("outbox full: dropped the oldest messages", "policy", q.opts.Policy.String(),
			"dropped", nFull, "expired_or_damaged", nExpired, "disk_reserve", full,
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
		err := q.update(w.s, func(tx *bolt.Tx) error {
			bk := tx.Bucket(bucketMsgs)
			if bk == nil {
				return errBucketMissing
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
	if len(gone) > 0 {
		// The ledger must not list a segment whose file is gone: that
		// would count as lost after a crash.
		q.writeLedger(false)
	}
	for _, s := range gone {
		// Close waits for readers still in a transaction on it; later
		// readers get ErrDatabaseNotOpen and skip it.
		if err := q.closeSegment(s); err != nil {
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
// nobody reads (the uplink down for days). It walks the index, so an entry
// that is damaged or gone is dropped with that cause (never as expired).
// Read drops the others it meets.
func (q *Outbox) sweepExpired() {
	q.mu.Lock()
	segs := slices.Clone(q.segs)
	limit := q.lastSeq
	q.mu.Unlock()
	now := q.opts.Now().UnixNano()
	budget := outboxSweepMax
	var seqs []uint64
	for _, s := range segs {
		if budget <= 0 {
			return
		}
		q.mu.Lock()
		seqs = s.liveFrom(s.first, limit, budget, seqs[:0])
		q.mu.Unlock()
		if len(seqs) == 0 {
			continue
		}
		budget -= len(seqs)
		var drop []badEntry
		_ = q.view(s, func(tx *bolt.Tx) error {
			bk := tx.Bucket(bucketMsgs)
			if bk == nil {
				return errBucketMissing
			}
			var key [8]byte
			for _, seq := range seqs {
				be.PutUint64(key[:], seq)
				if c := checkRecord(key[:], bk.Get(key[:]), now); c != causeAck {
					drop = append(drop, badEntry{seq, c})
				}
			}
			return nil
		})
		if len(drop) == 0 {
			continue
		}
		q.mu.Lock()
		if seq, ok := s.structureDamaged(drop); ok {
			q.mu.Unlock()
			q.markDamaged(s, damageStructure, false, fmt.Errorf("record %d missing or under a damaged key", seq))
			continue
		}
		for _, e := range drop {
			q.kill(s, e.seq, e.cause)
		}
		q.mu.Unlock()
		q.reportBad(s, drop)
	}
}
