package store

// Segment files damaged while the outbox runs. bbolt reads its file through
// a shared mmap: if the file shrinks under it (truncated by someone else, a
// failing filesystem), the next access to a page past the new end is a
// SIGBUS that kills the process, and bbolt cannot see it coming. Every access
// to a segment therefore goes through access, which
//
//  1. compares the file's size (fstat of the segment's own descriptor) with
//     the size bbolt relies on (measured at open and after each commit; bbolt
//     itself never shrinks a file): smaller means damaged, and bbolt is not
//     called at all;
//  2. runs the transaction with debug.SetPanicOnFault(true) on its goroutine
//     (restored after), so a fault in the window between the check and the
//     access (or on a page that changed under the map) is a panic, recovered
//     into an ErrSegmentDamaged error; bbolt's own panics on a bad page are
//     recovered the same way.
//
// A damaged segment is never used again. If the fault hit inside bbolt with
// its locks held (a write transaction, or the start of any transaction) the
// handle is abandoned without Close, which could block forever or walk the
// broken file in a goroutine of bbolt's own (a write rollback does, where a
// fault could not be recovered): one descriptor and one mapping are leaked
// per damaged segment. The writer then salvages it (repairDamaged): the
// records still readable are written to a fresh file of the same name, the
// damaged file is moved aside, and every record the index says was stored
// and could not be recovered is counted by cause (truncated, corrupt,
// checksum, expired) and logged.

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrSegmentDamaged is returned (wrapped) by Read when a segment file was
// found damaged (shrunk, faulting or structurally broken) while the outbox
// ran, and could not be salvaged in time. The writer salvages it; a later
// Read succeeds.
var ErrSegmentDamaged = errors.New("outbox segment damaged")

// errBucketMissing is returned by transaction functions that find a bucket
// of a segment gone: the file is damaged.
var errBucketMissing = errors.New("bucket missing")

// damageRetries bounds how often Read waits for the writer to salvage a
// damaged segment before it returns ErrSegmentDamaged.
const damageRetries = 3

// view runs fn in a read-only transaction of s, guarded (see access).
func (q *Outbox) view(s *segment, fn func(tx *bolt.Tx) error) error {
	return q.access(s, false, fn)
}

// update runs fn in a read-write transaction of s and commits it, guarded
// (see access).
func (q *Outbox) update(s *segment, fn func(tx *bolt.Tx) error) error {
	return q.access(s, true, fn)
}

// access runs fn in a transaction of s, refusing a damaged or shrunk file
// and turning a fault or a bbolt panic into an ErrSegmentDamaged error. fn
// returning errBucketMissing also marks the segment damaged. Other errors
// from fn (there are none in the outbox's own functions) are returned as
// they are.
func (q *Outbox) access(s *segment, write bool, fn func(tx *bolt.Tx) error) (err error) {
	if s.damaged.Load() {
		return fmt.Errorf("outbox %s: %w", s.path, ErrSegmentDamaged)
	}
	if err := s.checkSize(); errors.Is(err, os.ErrClosed) || s.closed.Load() {
		return berrors.ErrDatabaseNotOpen // removed meanwhile (drained)
	} else if err != nil {
		q.markDamaged(s, damageShrunk, false, err)
		return fmt.Errorf("outbox %s: %w: %w", s.path, ErrSegmentDamaged, err)
	}
	var tx *bolt.Tx
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		// A read transaction that was begun can be closed: that touches no
		// page. Anything else may hold bbolt's locks: abandon the handle.
		poison := write || tx == nil
		if !poison {
			poison = !rollbackQuietly(tx)
		}
		kind := damageFault
		if err := s.checkSize(); err != nil && !errors.Is(err, os.ErrClosed) {
			kind = damageShrunk
		}
		cause := fmt.Errorf("%v", r)
		q.markDamaged(s, kind, poison, cause)
		err = fmt.Errorf("outbox %s: %w: %w", s.path, ErrSegmentDamaged, cause)
	}()
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)

	tx, err = s.db.Begin(write)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		if write {
			// A write rollback rebuilds bbolt's free list by walking the
			// whole file in a goroutine of its own; on a damaged file a
			// fault there could not be recovered. fn only fails on damage.
			q.markDamaged(s, damageStructure, true, err)
			return fmt.Errorf("outbox %s: %w: %w", s.path, ErrSegmentDamaged, err)
		}
		_ = tx.Rollback()
		if errors.Is(err, errBucketMissing) {
			q.markDamaged(s, damageStructure, false, err)
			return fmt.Errorf("outbox %s: %w: %w", s.path, ErrSegmentDamaged, err)
		}
		return err
	}
	if !write {
		return tx.Rollback()
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.noteSize()
	return nil
}

// rollbackQuietly closes a read-only transaction after a recovered panic,
// reporting whether that worked.
func rollbackQuietly(tx *bolt.Tx) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	_ = tx.Rollback()
	return true
}

// damageKind says how a segment was found damaged while open.
type damageKind int

const (
	// damageShrunk: the file is smaller than bbolt relies on.
	damageShrunk damageKind = iota + 1
	// damageFault: a page access faulted or bbolt panicked on a page.
	damageFault
	// damageStructure: a bucket of the segment is gone.
	damageStructure
)

func (k damageKind) String() string {
	switch k {
	case damageShrunk:
		return "shrunk"
	case damageFault:
		return "fault"
	case damageStructure:
		return "structure"
	default:
		return "unknown"
	}
}

// checkSize fails when the segment's file is smaller than the size bbolt
// relies on.
func (s *segment) checkSize() error {
	if s.f == nil {
		return nil
	}
	fi, err := s.f.Stat()
	if err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	if want := s.size.Load(); fi.Size() < want {
		return fmt.Errorf("file shrank from %d to %d bytes under the mmap", want, fi.Size())
	}
	return nil
}

// noteSize records the file's size after bbolt wrote it (bbolt only ever
// grows its file).
func (s *segment) noteSize() {
	if s.f == nil {
		return
	}
	if fi, err := s.f.Stat(); err == nil && fi.Size() > s.size.Load() {
		s.size.Store(fi.Size())
	}
}

// markDamaged takes s out of service and asks the writer to salvage it.
// The first cause is kept; poison is sticky.
func (q *Outbox) markDamaged(s *segment, kind damageKind, poison bool, cause error) {
	if poison {
		s.poisoned.Store(true)
	}
	q.mu.Lock()
	if s.damageKind == 0 {
		s.damageKind, s.damageErr = kind, cause
	} else if kind == damageShrunk {
		s.damageKind = kind // a shrink explains the fault seen before
	}
	q.mu.Unlock()
	if s.damaged.CompareAndSwap(false, true) {
		q.damagePending.Store(true)
		q.signal()
	}
}

// closeSegment releases a segment's file handles, except a poisoned bbolt
// handle (see the file comment).
func (q *Outbox) closeSegment(s *segment) error {
	s.closed.Store(true)
	var err error
	if !s.poisoned.Load() {
		err = s.db.Close()
	}
	if s.f != nil {
		_ = s.f.Close()
	}
	return err
}

// repairDamaged salvages every segment marked damaged. Only the writer
// goroutine calls it.
func (q *Outbox) repairDamaged() {
	if !q.damagePending.Swap(false) {
		return
	}
	q.mu.Lock()
	var damaged []*segment
	for _, s := range q.segs {
		if s.damaged.Load() {
			damaged = append(damaged, s)
		}
	}
	q.mu.Unlock()
	for _, s := range damaged {
		q.repairSegment(s)
	}
	q.mu.Lock()
	close(q.repairedCh)
	q.repairedCh = make(chan struct{})
	q.ledgerDirty = true
	q.mu.Unlock()
}

// repairSegment salvages one damaged segment while the outbox runs: it reads
// what is left of the file, moves the file aside, writes the records still
// stored into a fresh sealed segment of the same name (or none), and counts
// every record the index held that could not be recovered.
func (q *Outbox) repairSegment(s *segment) {
	data, readErr := readSegmentFile(s)
	q.mu.Lock()
	kind, cause := s.damageKind, s.damageErr
	q.mu.Unlock()
	if readErr != nil {
		data = nil // everything is lost; counted below
	}
	res := salvageRecords(data, s.first)
	shrunk := kind == damageShrunk || readErr != nil || fileShrunk(data)
	if shrunk {
		kind = damageShrunk
	}

	closeErr := q.closeSegment(s)
	aside, mvErr := moveAside(s.path, q.opts.Now())

	// The records the index holds are what must be recovered; anything
	// else in the file (acknowledged, or garbage) is left behind.
	now := q.opts.Now().UnixNano()
	var keep []rawRecord
	q.mu.Lock()
	for i, size := range s.sizes {
		if size == 0 {
			continue
		}
		seq := s.first + uint64(i)
		if v, ok := res.good[seq]; ok && !recExpired(v, now) {
			k := make([]byte, 8)
			be.PutUint64(k, seq)
			keep = append(keep, rawRecord{key: k, value: v})
		}
	}
	q.mu.Unlock()

	var ns *segment
	var writeErr error
	switch {
	case mvErr != nil:
		writeErr = mvErr
	case len(keep) > 0:
		ns, writeErr = q.writeSalvaged(s.path, s.first, keep)
	}

	// Decided under the lock: acknowledgements that arrived meanwhile are
	// not losses.
	var loss lossCounts
	kept := 0
	q.mu.Lock()
	for j, size := range s.sizes {
		if size == 0 {
			continue
		}
		seq := s.first + uint64(j)
		if ns != nil && ns.isLive(seq) {
			kept++
			continue // recovered: still stored, now in ns
		}
		v, found := res.good[seq]
		switch {
		case found && recExpired(v, now):
			loss.expired++
		case found:
			loss.corrupt++ // recovered, but the new file could not be written
		case res.bad[seq] == badChecksum:
			loss.checksum++
		case shrunk:
			loss.truncated++
		default:
			loss.corrupt++
		}
		q.forget(s, seq)
	}
	q.delCount -= len(s.dels)
	s.dels = nil
	if ns != nil {
		// Acknowledged while the salvage ran: delete them from the new file.
		for j, size := range ns.sizes {
			if seq := ns.first + uint64(j); size != 0 && !s.isLive(seq) {
				ns.unindex(seq)
				ns.dels = append(ns.dels, seq)
				q.delCount++
			}
		}
	}
	i := slices.Index(q.segs, s)
	switch {
	case i < 0:
	case ns != nil:
		q.segs[i] = ns
	default:
		q.segs = slices.Delete(q.segs, i, i+1)
	}
	q.mu.Unlock()

	q.countLoss(loss)
	q.corruptSegs.Add(1)
	q.salvaged.Add(uint64(kept))
	args := []any{"segment", s.path, "damage", kind.String(), "salvaged", kept,
		"lost_truncated", loss.truncated, "lost_corrupt", loss.corrupt,
		"lost_checksum", loss.checksum, "lost_expired", loss.expired,
		"lost_counted", loss.total(), "error", cause}
	if mvErr == nil {
		args = append(args, "moved_to", aside)
	} else {
		args = append(args, "move_error", mvErr)
	}
	if readErr != nil {
		args = append(args, "read_error", readErr)
	}
	if writeErr != nil {
		args = append(args, "write_error", writeErr)
	}
	if closeErr != nil {
		args = append(args, "close_error", closeErr)
	}
	if s.poisoned.Load() {
		args = append(args, "handle_abandoned", true)
	}
	q.log.Error("outbox segment damaged while open: stopped using it, kept the readable messages, moved the file aside", args...)
}

// readSegmentFile reads the whole of a segment's file through its own
// descriptor (the same file even if its name was replaced), with read(2),
// never through the mmap.
func readSegmentFile(s *segment) ([]byte, error) {
	if s.f == nil {
		return os.ReadFile(s.path)
	}
	fi, err := s.f.Stat()
	if err != nil {
		return nil, err
	}
	data := make([]byte, fi.Size())
	n, err := s.f.ReadAt(data, 0)
	if err != nil && n < len(data) {
		return data[:n], nil // it shrank again: what was read is what is left
	}
	return data, nil
}

// forget removes seq from the in-memory index and the outbox's depth
// without queueing a delete (its file is gone). q.mu held.
func (q *Outbox) forget(s *segment, seq uint64) {
	if size := s.unindex(seq); size > 0 {
		q.depth--
		q.bytes -= size
	}
}

// unindex removes seq from the segment's index and returns its counted
// size (0 if it was not stored).
func (s *segment) unindex(seq uint64) int64 {
	if !s.isLive(seq) {
		return 0
	}
	i := int(seq - s.first)
	size := int64(s.sizes[i])
	s.sizes[i] = 0
	for s.lo < len(s.sizes) && s.sizes[s.lo] == 0 {
		s.lo++
	}
	s.live--
	s.liveBytes -= size
	return size
}

// lossCounts are the stored records a salvage could not give back, by cause.
type lossCounts struct {
	truncated uint64 // their page is past the end of a shrunk file (or the file is gone)
	corrupt   uint64 // their key or the page holding them is damaged
	checksum  uint64 // found under their key, but the value fails its checksum
	expired   uint64 // found intact, but their time to live had passed
}

func (l lossCounts) total() uint64 { return l.truncated + l.corrupt + l.checksum + l.expired }

func (q *Outbox) countLoss(l lossCounts) {
	q.dropTruncated.Add(l.truncated)
	q.dropCorrupt.Add(l.corrupt)
	q.dropChecksum.Add(l.checksum)
	q.dropExpired.Add(l.expired)
}

// recExpired tells whether a stored value's expiry passed at now (unix ns).
func recExpired(v []byte, now int64) bool {
	if len(v) < recHeaderSize {
		return false
	}
	exp := int64(be.Uint64(v[12:]))
	return exp != 0 && exp <= now
}
