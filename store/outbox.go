package store

// The outbox: a durable FIFO queue of opaque messages, kept in a directory of
// segment files (one bbolt file per segment), appended with group commit,
// read in order from a cursor and deleted only on acknowledgement.
// docs/outbox.md describes the layout, the commit path and the crash
// behaviour; outbox_segment.go holds the files, outbox_writer.go the writer.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/time/rate"
)

// Outbox defaults applied by OpenOutbox to zero fields of OutboxOptions.
const (
	// DefaultOutboxSegmentBytes keeps a segment in an 8 MiB file: bbolt
	// grows its file in powers of two up to 16 MiB, so 8 MiB of data would
	// take a 16 MiB file.
	DefaultOutboxSegmentBytes    = 7 << 20
	DefaultOutboxSegmentMessages = 100_000
	DefaultOutboxMaxPending      = 20_000
)

// Internal tuning of the outbox writer.
const (
	// outboxFlushInterval is the longest an acknowledged entry waits before
	// its delete is written; outboxFlushCount flushes earlier.
	outboxFlushInterval = 100 * time.Millisecond
	outboxFlushCount    = 8192
	// outboxSweepInterval and outboxSweepMax bound the background search for
	// expired entries among the oldest ones.
	outboxSweepInterval = 5 * time.Second
	outboxSweepMax      = 4096
	// outboxLogInterval rate-limits each kind of warning.
	outboxLogInterval = 10 * time.Second
	// outboxSeqJump is added to the highest known sequence number after a
	// corrupt segment, whose true last number is unknown, so that no
	// number is ever used twice.
	outboxSeqJump = 1 << 32
)

// OverflowPolicy says what the outbox does when a new message does not fit.
type OverflowPolicy int

const (
	// DropOldest accepts the new message and deletes the oldest ones until
	// the limits hold again (counted as Drops.Full or Drops.Expired).
	DropOldest OverflowPolicy = iota
	// RefuseNew refuses the new message with ErrOutboxFull (counted as
	// Drops.Full) and keeps everything already accepted.
	RefuseNew
)

// String returns the policy's config name.
func (p OverflowPolicy) String() string {
	switch p {
	case DropOldest:
		return "drop_oldest"
	case RefuseNew:
		return "refuse_new"
	default:
		return fmt.Sprintf("OverflowPolicy(%d)", int(p))
	}
}

var (
	// ErrOutboxFull is returned by Append and AppendAsync under RefuseNew when
	// the records do not fit, and under any policy for a single call larger
	// than the limits themselves.
	ErrOutboxFull = errors.New("outbox full")
	// ErrOutboxClosed is returned by operations on a closed or closing outbox.
	ErrOutboxClosed = errors.New("outbox closed")
	// ErrOutboxBusy is returned by AppendAsync when MaxPending records already
	// wait for the writer (the records are dropped and counted as
	// Drops.Overload). Append waits for room instead.
	ErrOutboxBusy = errors.New("outbox busy: too many appends pending")
)

// OutboxOptions configures OpenOutbox. Only Dir is required.
type OutboxOptions struct {
	// Dir is the directory holding the segment files (created 0700).
	Dir string
	// MaxBytes bounds the stored bytes (data plus 28 bytes per message); 0 is
	// no limit.
	MaxBytes int64
	// MaxMessages bounds the number of stored messages; 0 is no limit.
	MaxMessages int64
	// Policy applies when a limit is reached or Full returns true.
	Policy OverflowPolicy
	// TTL is the default time to live of a message; 0 keeps messages forever.
	TTL time.Duration
	// SegmentBytes rotates the head segment once this many bytes were
	// appended to it, counting bbolt's 16-byte element header (default
	// 7 MiB, which fits an 8 MiB file).
	SegmentBytes int64
	// SegmentMessages rotates the head segment once this many messages were
	// appended to it (default 100,000).
	SegmentMessages int64
	// MaxPending bounds the records waiting for the group commit (default
	// 20,000): Append waits for room, AppendAsync refuses with ErrOutboxBusy.
	MaxPending int
	// Full, when set, is asked before each append: true makes the outbox
	// behave as full (the policy applies). It must be cheap and must not
	// call the outbox.
	Full func() bool
	// Logger receives the outbox's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// BeforeCommit, if set, is called by the writer before each commit of
	// appends. Tests only: a hook that blocks wedges the writer as an fsync
	// that never returns would (see Progress).
	BeforeCommit func()
}

func (o OutboxOptions) withDefaults() OutboxOptions {
	if o.SegmentBytes == 0 {
		o.SegmentBytes = DefaultOutboxSegmentBytes
	}
	if o.SegmentMessages == 0 {
		o.SegmentMessages = DefaultOutboxSegmentMessages
	}
	if o.MaxPending == 0 {
		o.MaxPending = DefaultOutboxMaxPending
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

func (o OutboxOptions) validate() error {
	var errs []error
	if o.Dir == "" {
		errs = append(errs, errors.New("dir: must be set"))
	}
	if o.MaxBytes < 0 {
		errs = append(errs, errors.New("max_bytes: must not be negative"))
	}
	if o.MaxMessages < 0 {
		errs = append(errs, errors.New("max_messages: must not be negative"))
	}
	if o.Policy != DropOldest && o.Policy != RefuseNew {
		errs = append(errs, fmt.Errorf("policy: unknown value %d", int(o.Policy)))
	}
	if o.TTL < 0 {
		errs = append(errs, errors.New("ttl: must not be negative"))
	}
	if o.SegmentBytes < 0 || o.SegmentMessages < 0 || o.MaxPending < 0 {
		errs = append(errs, errors.New("segment_bytes, segment_messages, max_pending: must not be negative"))
	}
	return errors.Join(errs...)
}

// OutboxRecord is one message to append.
type OutboxRecord struct {
	// Data is the message, copied by the outbox.
	Data []byte
	// Expiry is when the message stops being worth sending; zero means
	// Now()+TTL, or never when TTL is 0.
	Expiry time.Time
}

// OutboxEntry is one stored message as Read returns it. Data is a copy that
// the caller owns.
type OutboxEntry struct {
	Seq      uint64
	Data     []byte
	Appended time.Time
}

// OutboxDrops counts messages lost without an acknowledgement, by cause.
type OutboxDrops struct {
	// Full: refused (RefuseNew) or deleted as oldest (DropOldest) because a
	// limit was reached or Full() said so.
	Full uint64
	// Expired: their time to live passed before they were acknowledged.
	Expired uint64
	// Corrupt: a stored message's key or the page holding it was damaged
	// (a flipped key byte, a damaged page, a duplicate key), so it could
	// not be found or recovered.
	Corrupt uint64
	// Checksum: a stored message was found under its key but its value
	// failed its checksum.
	Checksum uint64
	// Truncated: a stored message was in the part of a segment file that
	// was cut off (the file shrank, or is gone).
	Truncated uint64
	// Overload: AppendAsync found MaxPending records already waiting.
	Overload uint64
	// WriteFailed: the group commit that held them failed (disk error).
	WriteFailed uint64
}

// Total is the sum of all causes.
func (d OutboxDrops) Total() uint64 {
	return d.Full + d.Expired + d.Corrupt + d.Checksum + d.Truncated + d.Overload + d.WriteFailed
}

// OutboxStats is a snapshot of the outbox.
type OutboxStats struct {
	Depth     int64         // stored, unacknowledged messages
	Bytes     int64         // their size as counted for MaxBytes
	Pending   int           // records waiting for the group commit
	OldestAge time.Duration // age of the oldest stored message; 0 when empty
	LastSeq   uint64        // highest committed sequence number

	AppendedPerSec float64 // committed appends per second over the last 5 s
	AckedPerSec    float64 // acknowledgements per second over the last 5 s
	Appended       uint64  // committed appends since open
	Acked          uint64  // acknowledged messages since open
	Commits        uint64  // group commits of appends (one fsync each)

	Drops OutboxDrops

	Segments        int    // segment files
	DiskBytes       int64  // their total size
	CorruptSegments uint64 // segments found corrupt or damaged and moved aside since open
	Salvaged        uint64 // messages recovered from corrupt or damaged segments
}

// Outbox is the durable queue. All methods are safe for concurrent use.
type Outbox struct {
	opts OutboxOptions
	log  *slog.Logger

	mu           sync.Mutex
	segs         []*segment // by first sequence number; the last one is the head
	nextSeq      uint64     // the next sequence number to assign
	lastSeq      uint64     // highest committed sequence number
	committedCh  chan struct{}
	pending      *appendBatch // records waiting for the writer
	pendingN     int          // records queued or being committed
	pendingBytes int64
	spaceCh      chan struct{} // closed when the writer takes a batch
	depth        int64
	bytes        int64
	delCount     int // deletes not yet written
	closing      bool
	rates        rateRing
	// repairedCh is closed and replaced after each salvage of segments
	// damaged while open; damagePending says one waits for the writer.
	repairedCh    chan struct{}
	damagePending atomic.Bool
	// ledgerDirty: the ledger (outbox_ledger.go) is out of date; ledgerAt
	// is when the writer last wrote it (writer only).
	ledgerDirty bool
	ledgerAt    time.Time
	// waitSince is when pendingN last went from 0 to more; lastCommit is
	// when the writer last finished a commit of appends (Progress).
	waitSince, lastCommit time.Time

	wake      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	appended, acked, commits                         atomic.Uint64
	dropFull, dropExpired, dropCorrupt, dropOverload atomic.Uint64
	dropWrite, corruptSegs, salvaged                 atomic.Uint64
	dropTruncated, dropChecksum                      atomic.Uint64

	logFull, logExpired, logCorrupt, logWrite, logBusy rate.Sometimes
}

// appendBatch is the unit of group commit: the records of every caller that
// enqueued since the writer's last take, committed in one transaction.
type appendBatch struct {
	recs    []pendingRecord
	bytes   int64
	callers int           // Append calls waiting on it
	done    chan struct{} // closed after the commit; err is then set
	err     error
}

type pendingRecord struct {
	seq   uint64
	value []byte // header (checksum filled in by the writer) + data
}

// Record value layout: crc32c(key ‖ value[4:]) u32, appended unix ns i64,
// expiry unix ns i64 (0: never), data. Big endian.
const (
	recHeaderSize = 20
	recOverhead   = 8 + recHeaderSize // key + header, counted in Bytes
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func recordCRC(key, value []byte) uint32 {
	return crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, value[4:])
}

// OpenOutbox opens (or creates) the outbox in o.Dir and starts its writer.
// Corrupt or torn segments are reported (error log, Stats), what is readable
// in them is kept, and the files are moved aside as *.corrupt-<time>: the
// outbox opens anyway. Errors are for a bad option, a directory that cannot
// be used, or a segment locked by another process.
func OpenOutbox(o OutboxOptions) (*Outbox, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("outbox: options: %w", err)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("outbox %s: %w", o.Dir, err)
	}
	q := &Outbox{
		opts:        o,
		log:         o.Logger.With("outbox", o.Dir),
		committedCh: make(chan struct{}),
		pending:     newAppendBatch(),
		spaceCh:     make(chan struct{}),
		repairedCh:  make(chan struct{}),
		wake:        make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
	for _, s := range []*rate.Sometimes{&q.logFull, &q.logExpired, &q.logCorrupt, &q.logWrite, &q.logBusy} {
		s.First, s.Interval = 1, outboxLogInterval
	}
	if err := q.load(); err != nil {
		for _, s := range q.segs {
			_ = q.closeSegment(s)
		}
		return nil, err
	}
	go q.run()
	return q, nil
}

func newAppendBatch() *appendBatch { return &appendBatch{done: make(chan struct{})} }

// Append adds records durably: it returns after the fsync of the group commit
// that holds them, with the sequence number of the last one. Concurrent callers
// share transactions. Sequence numbers are strictly increasing and never reused,
// also across restarts. If ctx ends first the error says so, and the records
// may still be committed. Under RefuseNew a full outbox gives ErrOutboxFull.
func (q *Outbox) Append(ctx context.Context, recs ...OutboxRecord) (lastSeq uint64, err error) {
	if len(recs) == 0 {
		return 0, nil
	}
	b, last, err := q.enqueue(ctx, recs, true)
	if err != nil {
		return 0, err
	}
	select {
	case <-b.done:
		if b.err != nil {
			return 0, b.err
		}
		return last, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("outbox %s: append: waiting for commit: %w", q.opts.Dir, ctx.Err())
	}
}

// AppendAsync queues records for the next group commit without waiting (QoS 0,
// best effort). An error means they were dropped (counted); a later failure of
// the commit is counted as Drops.WriteFailed and logged.
func (q *Outbox) AppendAsync(recs ...OutboxRecord) error {
	if len(recs) == 0 {
		return nil
	}
	_, _, err := q.enqueue(context.Background(), recs, false)
	return err
}

// enqueue encodes recs, checks the limits and adds them to the pending batch,
// waiting for room when wait is set.
func (q *Outbox) enqueue(ctx context.Context, recs []OutboxRecord, wait bool) (*appendBatch, uint64, error) {
	now := q.opts.Now()
	vals := make([]pendingRecord, len(recs))
	var size int64
	for i, r := range recs {
		exp := r.Expiry
		if exp.IsZero() && q.opts.TTL > 0 {
			exp = now.Add(q.opts.TTL)
		}
		v := make([]byte, recHeaderSize+len(r.Data))
		be.PutUint64(v[4:], uint64(now.UnixNano()))
		if !exp.IsZero() {
			be.PutUint64(v[12:], uint64(exp.UnixNano()))
		}
		copy(v[recHeaderSize:], r.Data)
		vals[i].value = v
		size += int64(len(v) + 8)
	}
	n := int64(len(recs))
	if (q.opts.MaxMessages > 0 && n > q.opts.MaxMessages) || (q.opts.MaxBytes > 0 && size > q.opts.MaxBytes) {
		q.dropFull.Add(uint64(n))
		return nil, 0, fmt.Errorf("outbox %s: append of %d records (%d bytes) larger than the limits: %w", q.opts.Dir, n, size, ErrOutboxFull)
	}
	hookFull := q.opts.Policy == RefuseNew && q.opts.Full != nil && q.opts.Full()

	q.mu.Lock()
	for {
		if q.closing {
			q.mu.Unlock()
			return nil, 0, fmt.Errorf("outbox %s: append: %w", q.opts.Dir, ErrOutboxClosed)
		}
		if q.pendingN == 0 || q.pendingN+len(recs) <= q.opts.MaxPending {
			break
		}
		if !wait {
			q.mu.Unlock()
			q.dropOverload.Add(uint64(n))
			q.logBusy.Do(func() {
				q.log.Warn("outbox busy: dropped async appends", "dropped_total", q.dropOverload.Load())
			})
			return nil, 0, fmt.Errorf("outbox %s: %w", q.opts.Dir, ErrOutboxBusy)
		}
		ch := q.spaceCh
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("outbox %s: append: waiting for room: %w", q.opts.Dir, ctx.Err())
		}
		q.mu.Lock()
	}
	if q.opts.Policy == RefuseNew && (hookFull ||
		(q.opts.MaxMessages > 0 && q.depth+int64(q.pendingN)+n > q.opts.MaxMessages) ||
		(q.opts.MaxBytes > 0 && q.bytes+q.pendingBytes+size > q.opts.MaxBytes)) {
		depth := q.depth
		q.mu.Unlock()
		q.dropFull.Add(uint64(n))
		q.logFull.Do(func() {
			q.log.Warn("outbox full: refusing new messages", "policy", q.opts.Policy.String(),
				"depth", depth, "disk_reserve", hookFull, "dropped_full_total", q.dropFull.Load())
		})
		return nil, 0, fmt.Errorf("outbox %s: %w", q.opts.Dir, ErrOutboxFull)
	}
	b := q.pending
	if q.pendingN == 0 {
		q.waitSince = time.Now()
	}
	for i := range vals {
		vals[i].seq = q.nextSeq
		q.nextSeq++
	}
	b.recs = append(b.recs, vals...)
	b.bytes += size
	if wait {
		b.callers++
	}
	q.pendingN += len(vals)
	q.pendingBytes += size
	last := q.nextSeq - 1
	q.mu.Unlock()
	q.signal()
	return b, last, nil
}

// signal wakes the writer without blocking.
func (q *Outbox) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Read returns up to max entries with Seq > after, in order, appended to buf.
// Expired entries and entries that fail their checksum or cannot be found
// are skipped, deleted and counted. Acknowledged entries are never returned;
// unacknowledged ones are returned again when the caller passes an older
// after. A segment found damaged (its file shrank or faulted under the
// mmap) is salvaged by the writer while Read waits; if that does not happen
// in time the error wraps ErrSegmentDamaged.
func (q *Outbox) Read(after uint64, max int, buf []OutboxEntry) ([]OutboxEntry, error) {
	if max <= 0 {
		return buf, nil
	}
	n := len(buf)
	for attempt := 0; ; attempt++ {
		q.mu.Lock()
		repaired := q.repairedCh
		q.mu.Unlock()
		out, err := q.read(after, max, buf[:n])
		if !errors.Is(err, ErrSegmentDamaged) || attempt >= damageRetries {
			return out, err
		}
		timer := time.NewTimer(outboxRepairWait)
		select {
		case <-repaired:
		case <-q.done:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// outboxRepairWait bounds each wait of Read for the salvage of a damaged
// segment.
const outboxRepairWait = 2 * time.Second

// read is one attempt of Read. It walks the index (not the file's keys), so
// that every stored entry is either returned or dropped with its cause: a
// damaged key cannot hide a message, nor pass for another one.
func (q *Outbox) read(after uint64, max int, buf []OutboxEntry) ([]OutboxEntry, error) {
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		return buf, fmt.Errorf("outbox %s: read: %w", q.opts.Dir, ErrOutboxClosed)
	}
	segs := slices.Clone(q.segs)
	limit := q.lastSeq // entries above are not in the index yet
	q.mu.Unlock()

	now := q.opts.Now().UnixNano()
	type cand struct {
		seq         uint64
		appended    int64
		off, length int
	}
	var (
		arena []byte
		cands []cand
		bad   []badEntry
		seqs  []uint64
	)
	want := max
	for i, s := range segs {
		if i+1 < len(segs) && segs[i+1].first <= after+1 {
			continue // every entry of s is <= after
		}
		for want > 0 {
			q.mu.Lock()
			seqs = s.liveFrom(after+1, limit, want, seqs[:0])
			q.mu.Unlock()
			if len(seqs) == 0 {
				break
			}
			cands, bad = cands[:0], bad[:0]
			arena = arena[:0:0]
			err := q.view(s, func(tx *bolt.Tx) error {
				bk := tx.Bucket(bucketMsgs)
				if bk == nil {
					return errBucketMissing
				}
				var key [8]byte
				c := seqCursor{c: bk.Cursor()}
				for _, seq := range seqs {
					be.PutUint64(key[:], seq)
					v := c.get(seq)
					if cause := checkRecord(key[:], v, now); cause != causeAck {
						bad = append(bad, badEntry{seq, cause})
						continue
					}
					cands = append(cands, cand{seq, int64(be.Uint64(v[4:])), len(arena), len(v) - recHeaderSize})
					arena = append(arena, v[recHeaderSize:]...)
				}
				return nil
			})
			if errors.Is(err, berrors.ErrDatabaseNotOpen) && s.damaged.Load() {
				// Replaced by its salvage meanwhile: read again.
				return buf, fmt.Errorf("outbox %s: read after %d in %s: %w", q.opts.Dir, after, s.path, ErrSegmentDamaged)
			}
			if errors.Is(err, berrors.ErrDatabaseNotOpen) {
				break // removed meanwhile: it was fully acknowledged
			}
			if err != nil {
				return buf, fmt.Errorf("outbox %s: read after %d in %s: %w", q.opts.Dir, after, s.path, err)
			}
			q.mu.Lock()
			if seq, ok := s.structureDamaged(bad); ok {
				q.mu.Unlock()
				err := fmt.Errorf("record %d missing or under a damaged key", seq)
				q.markDamaged(s, damageStructure, false, err)
				return buf, fmt.Errorf("outbox %s: read after %d in %s: %w: %w", q.opts.Dir, after, s.path, ErrSegmentDamaged, err)
			}
			for _, c := range cands {
				if s.isLive(c.seq) {
					buf = append(buf, OutboxEntry{Seq: c.seq, Data: arena[c.off : c.off+c.length : c.off+c.length], Appended: time.Unix(0, c.appended)})
					want--
				}
			}
			for _, e := range bad {
				q.kill(s, e.seq, e.cause)
			}
			q.mu.Unlock()
			q.reportBad(s, bad)
			after = seqs[len(seqs)-1]
		}
		if want == 0 {
			break
		}
	}
	return buf, nil
}

// liveFrom appends to dst up to n stored sequence numbers of s from from to
// limit, in order. q.mu held.
func (s *segment) liveFrom(from, limit uint64, n int, dst []uint64) []uint64 {
	i := s.lo
	if from > s.first {
		i = max(i, int(min(from-s.first, uint64(len(s.sizes)))))
	}
	for ; i < len(s.sizes) && len(dst) < n; i++ {
		seq := s.first + uint64(i)
		if seq > limit {
			break
		}
		if s.sizes[i] != 0 {
			dst = append(dst, seq)
		}
	}
	return dst
}

// seqCursor looks up ascending sequence numbers in a msgs bucket with one
// cursor: the next key is usually the one wanted, so it steps instead of
// seeking (bbolt's Bucket.Get allocates a cursor per call).
type seqCursor struct {
	c    *bolt.Cursor
	k, v []byte
	init bool
}

// seqCursorSteps bounds the keys stepped over before seeking instead.
const seqCursorSteps = 8

// get returns the value stored under seq, or nil. Calls must ask for
// increasing numbers.
func (sc *seqCursor) get(seq uint64) []byte {
	var key [8]byte
	be.PutUint64(key[:], seq)
	if sc.init {
		for i := 0; sc.k != nil && i < seqCursorSteps && bytes.Compare(sc.k, key[:]) < 0; i++ {
			sc.k, sc.v = sc.c.Next()
		}
	}
	if !sc.init || (sc.k != nil && bytes.Compare(sc.k, key[:]) < 0) {
		sc.k, sc.v = sc.c.Seek(key[:])
		sc.init = true
	}
	if sc.k == nil || !bytes.Equal(sc.k, key[:]) || sc.v == nil {
		return nil
	}
	return sc.v
}

// checkRecord classifies the value v stored under key (nil: none): causeAck
// when it is intact and alive, otherwise why it must be dropped. causeMissing
// and causeCorrupt mean the segment's tree is damaged (see structureDamaged).
func checkRecord(key, v []byte, now int64) dropCause {
	switch {
	case v == nil:
		return causeMissing // its key was damaged, or its page lost
	case len(v) < recHeaderSize:
		return causeChecksum
	case be.Uint32(v) != recordCRC(key, v):
		if keyDamaged(key, v) {
			return causeCorrupt // a changed key byte explains the checksum
		}
		return causeChecksum
	case recExpired(v, now):
		return causeExpired
	}
	return causeAck
}

type badEntry struct {
	seq   uint64
	cause dropCause
}

func max64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// reportBad logs (rate-limited) the entries Read or the sweep dropped.
func (q *Outbox) reportBad(s *segment, bad []badEntry) {
	for _, e := range bad {
		switch e.cause {
		case causeCorrupt, causeChecksum:
			q.logCorrupt.Do(func() {
				q.log.Error("outbox entry damaged; dropped it", "segment", s.path, "seq", e.seq,
					"cause", e.cause.String(), "dropped_corrupt_total", q.dropCorrupt.Load(),
					"dropped_checksum_total", q.dropChecksum.Load())
			})
		case causeExpired:
			q.logExpired.Do(func() {
				q.log.Warn("outbox entries expired before acknowledgement; dropped them", "seq", e.seq,
					"dropped_expired_total", q.dropExpired.Load())
			})
		}
	}
}

// Wait blocks until an entry with Seq > after exists, or ctx is done, or the
// outbox closes (ErrOutboxClosed).
func (q *Outbox) Wait(ctx context.Context, after uint64) error {
	for {
		q.mu.Lock()
		if q.closing {
			q.mu.Unlock()
			return fmt.Errorf("outbox %s: wait: %w", q.opts.Dir, ErrOutboxClosed)
		}
		if q.hasLiveAfter(after) {
			q.mu.Unlock()
			return nil
		}
		ch := q.committedCh
		q.mu.Unlock()
		select {
		case <-ch:
		case <-q.done:
		case <-ctx.Done():
			return fmt.Errorf("outbox %s: wait: %w", q.opts.Dir, ctx.Err())
		}
	}
}

// hasLiveAfter reports whether a stored entry with Seq > after exists. q.mu held.
func (q *Outbox) hasLiveAfter(after uint64) bool {
	for i := len(q.segs) - 1; i >= 0; i-- {
		s := q.segs[i]
		if s.first > after {
			if s.live > 0 {
				return true
			}
			continue
		}
		from := max(int(after+1-s.first), s.lo)
		for j := from; j < len(s.sizes); j++ {
			if s.sizes[j] != 0 {
				return true
			}
		}
		return false
	}
	return false
}

// Ack deletes acknowledged entries, in any order. Unknown or already
// acknowledged numbers are ignored. The deletes are written in batches shortly
// after (a delete lost in a crash means a duplicate, never a loss).
func (q *Outbox) Ack(seqs ...uint64) error {
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		return fmt.Errorf("outbox %s: ack: %w", q.opts.Dir, ErrOutboxClosed)
	}
	var n uint64
	wasIdle := q.delCount == 0
	emptied := false
	for _, seq := range seqs {
		if s := q.segmentOf(seq); s != nil && q.kill(s, seq, causeAck) {
			n++
			emptied = emptied || s.live == 0
		}
	}
	q.rates.add(q.opts.Now(), 0, n)
	// Wake the writer to arm its flush timer, to flush a full batch of
	// deletes, or to remove a drained segment; not for every ack.
	wake := n > 0 && (wasIdle || emptied || q.delCount >= outboxFlushCount)
	q.mu.Unlock()
	q.acked.Add(n)
	if wake {
		q.signal()
	}
	return nil
}

// segmentOf returns the segment whose range holds seq, or nil. q.mu held.
func (q *Outbox) segmentOf(seq uint64) *segment {
	i := sort.Search(len(q.segs), func(i int) bool { return q.segs[i].first > seq }) - 1
	if i < 0 {
		return nil
	}
	return q.segs[i]
}

type dropCause int

const (
	causeAck dropCause = iota
	causeFull
	causeExpired
	causeCorrupt  // not found under its key, or its key is damaged
	causeChecksum // found under its key, its value fails the checksum
	causeMissing  // not found under its key (not counted: the segment is salvaged)
)

// structureDamaged tells whether bad holds an entry still stored that the
// tree lost (missing) or holds under a damaged key: then other records may
// be unreachable or shadowed too, and only a salvage of the raw pages can
// tell. An entry acknowledged meanwhile (its delete may be written already)
// does not count. q.mu held.
func (s *segment) structureDamaged(bad []badEntry) (uint64, bool) {
	for _, e := range bad {
		if (e.cause == causeMissing || e.cause == causeCorrupt) && s.isLive(e.seq) {
			return e.seq, true
		}
	}
	return 0, false
}

// String names the cause as the logs and stats do.
func (c dropCause) String() string {
	switch c {
	case causeAck:
		return "ack"
	case causeFull:
		return "full"
	case causeExpired:
		return "expired"
	case causeCorrupt:
		return "corrupt"
	case causeChecksum:
		return "checksum"
	case causeMissing:
		return "missing"
	default:
		return "unknown"
	}
}

// kill removes seq from the in-memory index, counts it by cause and queues its
// delete. It returns false when seq was not stored. q.mu held.
func (q *Outbox) kill(s *segment, seq uint64, cause dropCause) bool {
	if !s.isLive(seq) {
		return false
	}
	i := int(seq - s.first)
	size := int64(s.sizes[i])
	s.sizes[i] = 0
	for s.lo < len(s.sizes) && s.sizes[s.lo] == 0 {
		s.lo++
	}
	s.live--
	q.depth--
	q.bytes -= size
	s.dels = append(s.dels, seq)
	q.delCount++
	q.ledgerDirty = true
	switch cause {
	case causeFull:
		q.dropFull.Add(1)
	case causeExpired:
		q.dropExpired.Add(1)
	case causeCorrupt:
		q.dropCorrupt.Add(1)
	case causeChecksum:
		q.dropChecksum.Add(1)
	}
	return true
}

// Stats returns a snapshot of the outbox's state and counters.
func (q *Outbox) Stats() OutboxStats {
	q.mu.Lock()
	st := OutboxStats{
		Depth:   q.depth,
		Bytes:   q.bytes,
		Pending: q.pendingN,
		LastSeq: q.lastSeq,
	}
	st.AppendedPerSec, st.AckedPerSec = q.rates.perSecond(q.opts.Now())
	segs := slices.Clone(q.segs)
	var oldest *segment
	var oldestSeq uint64
	for _, s := range segs {
		if s.live > 0 {
			oldest, oldestSeq = s, s.first+uint64(s.lo)
			break
		}
	}
	q.mu.Unlock()

	st.Appended = q.appended.Load()
	st.Acked = q.acked.Load()
	st.Commits = q.commits.Load()
	st.Drops = OutboxDrops{
		Full:        q.dropFull.Load(),
		Expired:     q.dropExpired.Load(),
		Corrupt:     q.dropCorrupt.Load(),
		Checksum:    q.dropChecksum.Load(),
		Truncated:   q.dropTruncated.Load(),
		Overload:    q.dropOverload.Load(),
		WriteFailed: q.dropWrite.Load(),
	}
	st.CorruptSegments = q.corruptSegs.Load()
	st.Salvaged = q.salvaged.Load()
	st.Segments = len(segs)
	for _, s := range segs {
		if fi, err := os.Stat(s.path); err == nil {
			st.DiskBytes += fi.Size()
		}
	}
	if oldest != nil {
		var key [8]byte
		be.PutUint64(key[:], oldestSeq)
		_ = q.view(oldest, func(tx *bolt.Tx) error {
			if bk := tx.Bucket(bucketMsgs); bk != nil {
				if v := bk.Get(key[:]); len(v) >= recHeaderSize {
					st.OldestAge = max(0, q.opts.Now().Sub(time.Unix(0, int64(be.Uint64(v[4:])))))
				}
			}
			return nil
		})
	}
	return st
}

// Close commits pending appends, writes pending deletes, stops the writer and
// closes the segment files. Later calls return the first call's result.
func (q *Outbox) Close() error {
	q.closeOnce.Do(func() {
		q.mu.Lock()
		q.closing = true
		close(q.spaceCh)
		q.spaceCh = make(chan struct{})
		q.mu.Unlock()
		q.signal()
		<-q.done

		var errs []error
		q.mu.Lock()
		segs := q.segs
		q.mu.Unlock()
		q.writeLedger(true)
		for _, s := range segs {
			if err := q.closeSegment(s); err != nil {
				errs = append(errs, fmt.Errorf("outbox %s: close %s: %w", q.opts.Dir, s.path, err))
			}
		}
		q.closeErr = errors.Join(errs...)
	})
	return q.closeErr
}

// rateRing counts appends and acks per wall-clock second for the last 8 s.
type rateRing struct {
	sec      [8]int64
	app, ack [8]uint64
}

func (r *rateRing) add(now time.Time, app, ack uint64) {
	s := now.Unix()
	i := s & 7
	if r.sec[i] != s {
		r.sec[i], r.app[i], r.ack[i] = s, 0, 0
	}
	r.app[i] += app
	r.ack[i] += ack
}

// perSecond averages the last 5 complete seconds.
func (r *rateRing) perSecond(now time.Time) (app, ack float64) {
	s := now.Unix()
	var a, k uint64
	for d := int64(1); d <= 5; d++ {
		if i := (s - d) & 7; r.sec[i] == s-d {
			a += r.app[i]
			k += r.ack[i]
		}
	}
	return float64(a) / 5, float64(k) / 5
}

// syncDir fsyncs a directory so that a create, rename or remove in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
