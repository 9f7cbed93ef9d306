// Package store is fieldgate's persistence: one bbolt file per DB and nothing
// else. It knows nothing of networks or MQTT.
//
// A DB holds named buckets of small key/value records: the broker's state
// (sessions, subscriptions, retained messages, inflight and queued messages,
// delayed publishes) and other small state. Callers choose the bucket names and
// encode the values; the store only keeps bytes.
//
// Writes are group-committed. Put, PutMarshaler, Delete and DeletePrefix only
// enqueue; one writer goroutine owned by the DB takes everything pending,
// coalesces it by bucket and key (the last write to a key wins), writes it in
// one bbolt transaction with one fsync, and repeats. At low load an operation is
// durable about one fsync after it was enqueued; under load the batches grow to
// hundreds or thousands of operations and the cost of the fsync is shared.
// Sync is a barrier: it returns once everything enqueued before it is on disk.
// Reads (Get, ForEach) see committed data only.
//
// bbolt never shrinks its file. The state kept here is bounded (by the number
// of sessions, subscriptions and retained topics, and by the session queue
// limits), but a burst of queued messages can leave a large, mostly free file
// behind: the DB compacts itself at open and when idle (compact.go).
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Defaults applied by Open to zero fields of Options.
const (
	DefaultFileMode    os.FileMode = 0o600
	DefaultOpenTimeout             = 2 * time.Second
	DefaultMaxPending              = 10_000
)

var (
	// ErrClosed is returned by operations on a DB that is closed or closing.
	ErrClosed = errors.New("store closed")
	// ErrNotFound is returned by Get when the key (or its bucket) does not exist.
	ErrNotFound = errors.New("key not found")
	// ErrCorrupt marks an Open error caused by a corrupt or torn file.
	ErrCorrupt = errors.New("corrupt database file")
	// ErrLocked marks an Open error caused by another process holding the file.
	ErrLocked = errors.New("database file locked by another process")
)

// Options configures Open. The zero value is usable.
type Options struct {
	// Logger receives the store's logs. Nil discards them.
	Logger *slog.Logger

	// FileMode is the mode of a newly created file (default 0600).
	FileMode os.FileMode

	// OpenTimeout bounds the wait for the file lock, so that a second process
	// gets ErrLocked instead of hanging (default 2s; negative means no wait).
	OpenTimeout time.Duration

	// SyncFreelist writes bbolt's freelist at every commit. The default (false)
	// uses NoFreelistSync with the hashmap freelist, which keeps the write rate
	// up after heavy churn (see DESIGN.md); the price is a scan of the file at
	// open to rebuild the freelist, which for small state is negligible.
	SyncFreelist bool

	// MaxPending bounds the operations waiting for the writer (after
	// coalescing). When it is reached, Put and Delete block until the writer
	// takes the pending batch: backpressure instead of unbounded memory
	// (default 10,000: measured, larger batches commit slower
	// per operation, see BenchmarkPut).
	MaxPending int

	// MoveAsideCorrupt makes Open rename a corrupt or torn file to
	// "<path>.corrupt-<UTC timestamp>", log it at error level, and start with
	// an empty file, instead of returning an error wrapping ErrCorrupt.
	MoveAsideCorrupt bool

	// Now is the clock used to name moved-aside files (default time.Now).
	Now func() time.Time

	// CompactMinBytes: a file at least this large whose live pages are less
	// than half of it is compacted (rewritten without its free pages) at
	// Open and when the writer is idle (default 8 MiB; negative: never).
	CompactMinBytes int64
	// CompactMaxLiveBytes: a file with more live data than this is never
	// compacted automatically, as the copy would stall writes for long
	// (default 64 MiB).
	CompactMaxLiveBytes int64
	// CompactInterval spaces the writer's checks while the DB is open
	// (default 10 minutes; negative: only at Open).
	CompactInterval time.Duration
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.FileMode == 0 {
		o.FileMode = DefaultFileMode
	}
	if o.OpenTimeout == 0 {
		o.OpenTimeout = DefaultOpenTimeout
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CompactMinBytes == 0 {
		o.CompactMinBytes = DefaultCompactMinBytes
	}
	if o.CompactMaxLiveBytes == 0 {
		o.CompactMaxLiveBytes = DefaultCompactMaxLiveBytes
	}
	if o.CompactInterval == 0 {
		o.CompactInterval = DefaultCompactInterval
	}
	return o
}

// DB is an open store file with its group-committing writer. All methods are
// safe for concurrent use.
type DB struct {
	path       string
	opts       Options
	log        *slog.Logger
	maxPending int

	// bolt is replaced by a compaction (writer goroutine, boltMu held);
	// readers hold boltMu.RLock while they use it. broken (writer only) is
	// set when a compaction left no usable file.
	boltMu     sync.RWMutex
	bolt       *bolt.DB
	broken     error
	compactReq chan chan error

	mu          sync.Mutex
	space       *sync.Cond // signalled when the writer takes the pending batch or the DB closes
	pending     *batch
	enqueued    uint64        // sequence number of the last enqueued operation
	committed   uint64        // every operation up to this sequence number is on disk
	committedCh chan struct{} // closed and replaced after every successful commit
	closing     bool
	lastErr     error // last commit error, nil after a successful commit

	wake      chan struct{} // capacity 1: tells the writer there is work or that we close
	stopping  chan struct{} // closed by Close: cuts a retry delay short
	done      chan struct{} // closed when the writer has exited
	closeOnce sync.Once
	closeErr  error

	stats counters
}

// Open opens (or creates) the bbolt file at path and starts its writer.
// A corrupt or torn file gives an error wrapping ErrCorrupt that names the file
// and what bbolt said, unless opts.MoveAsideCorrupt is set. A file locked by
// another process gives an error wrapping ErrLocked after opts.OpenTimeout.
func Open(path string, opts Options) (*DB, error) {
	opts = opts.withDefaults()
	bdb, err := openBolt(path, opts)
	if err != nil && errors.Is(err, ErrCorrupt) && opts.MoveAsideCorrupt {
		aside, mvErr := moveAside(path, opts.Now())
		if mvErr != nil {
			return nil, fmt.Errorf("%w; moving it aside failed: %w", err, mvErr)
		}
		opts.Logger.Error("store file is corrupt; moved it aside and starting empty",
			"path", path, "moved_to", aside, "error", err)
		bdb, err = openBolt(path, opts)
	}
	if err != nil {
		return nil, err
	}
	bdb, err = compactAtOpen(bdb, path, opts)
	if bdb == nil {
		return nil, err
	}
	if err != nil {
		opts.Logger.Warn("store compaction at open failed; using the file as it is", "path", path, "error", err)
	}

	d := &DB{
		path:        path,
		opts:        opts,
		compactReq:  make(chan chan error),
		bolt:        bdb,
		log:         opts.Logger.With("store", path),
		maxPending:  opts.MaxPending,
		pending:     newBatch(),
		committedCh: make(chan struct{}),
		wake:        make(chan struct{}, 1),
		stopping:    make(chan struct{}),
		done:        make(chan struct{}),
	}
	d.space = sync.NewCond(&d.mu)
	go d.run()
	return d, nil
}

// openBolt checks the file, opens it read-write and classifies failures.
func openBolt(path string, opts Options) (*bolt.DB, error) {
	timeout := opts.OpenTimeout
	if timeout < 0 {
		timeout = time.Millisecond // bbolt waits forever on zero; this tries about twice
	}
	if err := checkPages(path); err != nil {
		return nil, classify(path, timeout, err)
	}
	bo := &bolt.Options{
		Timeout:        timeout,
		NoFreelistSync: !opts.SyncFreelist,
		FreelistType:   bolt.FreelistMapType,
	}
	if opts.SyncFreelist {
		bo.FreelistType = bolt.FreelistArrayType
	}
	bdb, err := openRecover(path, opts.FileMode, bo)
	if err != nil {
		return nil, classify(path, timeout, err)
	}
	return bdb, nil
}

// openRecover is bolt.Open with a panic turned into an ErrCorrupt error (the
// half-opened file handle is then leaked, acceptable for a one-off at start).
func openRecover(path string, mode os.FileMode, bo *bolt.Options) (bdb *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			bdb = nil
			err = fmt.Errorf("%w: bbolt panicked while opening: %v", ErrCorrupt, r)
		}
	}()
	return bolt.Open(path, mode, bo)
}

// classify wraps an open error with the file's name and ErrLocked or
// ErrCorrupt where they apply.
func classify(path string, timeout time.Duration, err error) error {
	switch {
	case errors.Is(err, ErrCorrupt):
		return fmt.Errorf("store %s: %w", path, err)
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("store %s: %w (waited %s): %w", path, ErrLocked, timeout, err)
	case isCorrupt(err):
		return fmt.Errorf("store %s: %w: bbolt: %w", path, ErrCorrupt, err)
	default:
		return fmt.Errorf("store %s: open: %w", path, err)
	}
}

// isCorrupt tells the errors that mean the file's content is bad from those
// that mean the file could not be used (permissions, mmap limits), which must
// never cause a move aside.
func isCorrupt(err error) bool {
	return errors.Is(err, berrors.ErrInvalid) ||
		errors.Is(err, berrors.ErrChecksum) ||
		errors.Is(err, berrors.ErrVersionMismatch) ||
		strings.Contains(err.Error(), "file size too small")
}

// moveAside renames a corrupt file to <path>.corrupt-<timestamp> (with a
// counter if that exists) and syncs the directory.
func moveAside(path string, now time.Time) (string, error) {
	base := path + ".corrupt-" + now.UTC().Format("20060102T150405Z")
	aside := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, os.ErrNotExist) {
			break
		}
		aside = fmt.Sprintf("%s-%d", base, i)
	}
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("store %s: move aside: %w", path, err)
	}
	if dir, err := os.Open(filepath.Dir(path)); err == nil {
		_ = dir.Sync() // best effort: the rename is what matters
		_ = dir.Close()
	}
	return aside, nil
}

// Path returns the file's path.
func (d *DB) Path() string { return d.path }

// Get returns a copy of the committed value of key in bucket, or ErrNotFound.
// Operations still pending in the writer are not visible; call Sync first to
// read your own writes.
func (d *DB) Get(bucket string, key []byte) ([]byte, error) {
	var out []byte
	d.boltMu.RLock()
	defer d.boltMu.RUnlock()
	if d.bolt == nil {
		return nil, fmt.Errorf("store %s: get: %w", d.path, ErrClosed)
	}
	err := d.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return ErrNotFound
		}
		v := b.Get(key)
		if v == nil {
			return ErrNotFound
		}
		out = append([]byte(nil), v...)
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store %s: get %s/%q: %w", d.path, bucket, key, err)
	}
	return out, nil
}

// GetFunc calls fn with the committed value of key in bucket, without a
// copy: value is only valid during the call (decode it there). It returns
// ErrNotFound when the key (or its bucket) does not exist, or fn's error.
func (d *DB) GetFunc(bucket string, key []byte, fn func(value []byte) error) error {
	d.boltMu.RLock()
	defer d.boltMu.RUnlock()
	if d.bolt == nil {
		return fmt.Errorf("store %s: get: %w", d.path, ErrClosed)
	}
	var fnErr error
	err := d.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return ErrNotFound
		}
		v := b.Get(key)
		if v == nil {
			return ErrNotFound
		}
		fnErr = fn(v)
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("store %s: get %s/%q: %w", d.path, bucket, key, err)
	}
	return fnErr
}

// ForEach calls fn for every committed key/value in bucket, in key order, in
// one read transaction. key and value are only valid during the call: fn must
// copy what it keeps, and must not call the DB's write methods if they could
// block (a full queue) — collect and write after ForEach returns. A missing
// bucket is empty. An error from fn stops the iteration and is returned
// wrapped.
func (d *DB) ForEach(bucket string, fn func(key, value []byte) error) error {
	d.boltMu.RLock()
	defer d.boltMu.RUnlock()
	if d.bolt == nil {
		return fmt.Errorf("store %s: for each: %w", d.path, ErrClosed)
	}
	err := d.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		return b.ForEach(fn)
	})
	if err != nil {
		return fmt.Errorf("store %s: for each in %s: %w", d.path, bucket, err)
	}
	return nil
}

// Sync waits until every operation enqueued before the call is committed to
// disk, or ctx is done. While commits fail it keeps waiting (the writer
// retries) and, if ctx ends first, the error includes the last commit error.
// After Close it returns ErrClosed if something enqueued before the call was
// not committed.
func (d *DB) Sync(ctx context.Context) error {
	d.mu.Lock()
	target := d.enqueued
	for d.committed < target {
		ch, lastErr := d.committedCh, d.lastErr
		d.mu.Unlock()
		select {
		case <-ch:
		case <-d.done:
			d.mu.Lock()
			ok := d.committed >= target
			d.mu.Unlock()
			if ok {
				return nil
			}
			return fmt.Errorf("store %s: sync: %w", d.path, ErrClosed)
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("store %s: sync: %w (last commit error: %v)", d.path, ctx.Err(), lastErr)
			}
			return fmt.Errorf("store %s: sync: %w", d.path, ctx.Err())
		}
		d.mu.Lock()
	}
	d.mu.Unlock()
	return nil
}

// Close commits everything pending, stops the writer and closes the file.
// Operations enqueued after Close starts get ErrClosed. If the final commit
// fails (after a few retries) the error says how many operations were lost.
// Close is idempotent: later calls return the first call's result.
func (d *DB) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closing = true
		d.space.Broadcast()
		d.mu.Unlock()
		close(d.stopping)
		d.signal()
		<-d.done

		d.mu.Lock()
		lost := d.pending.size()
		d.mu.Unlock()
		var errs []error
		if lost > 0 {
			errs = append(errs, fmt.Errorf("store %s: close: %d pending ops not committed: %w", d.path, lost, d.lastCommitErr()))
		}
		if d.bolt != nil {
			if err := d.bolt.Close(); err != nil {
				errs = append(errs, fmt.Errorf("store %s: close: %w", d.path, err))
			}
		}
		d.closeErr = errors.Join(errs...)
	})
	return d.closeErr
}

func (d *DB) lastCommitErr() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastErr
}

// Stats is a snapshot of the writer's counters since Open.
type Stats struct {
	Enqueued     uint64 // operations accepted by Put, PutMarshaler, Delete, DeletePrefix
	Commits      uint64 // successful transactions
	Ops          uint64 // operations written by those transactions, after coalescing
	Bytes        uint64 // value bytes written
	CommitErrors uint64 // failed transactions (each retried)
	Rejected     uint64 // single operations bbolt refused (key or value too large, encode error); logged
	Pending      int    // operations waiting for the writer now (after coalescing)
	MaxBatch     uint64 // the largest committed batch, in operations
	Compactions  uint64 // compactions while open (not counting the one at Open)
}

type counters struct {
	enqueued, commits, ops, bytes, commitErrors, rejected, maxBatch, compactions atomic.Uint64
}

// Stats returns the writer's counters.
func (d *DB) Stats() Stats {
	d.mu.Lock()
	pending := d.pending.size()
	d.mu.Unlock()
	return Stats{
		Enqueued:     d.stats.enqueued.Load(),
		Commits:      d.stats.commits.Load(),
		Ops:          d.stats.ops.Load(),
		Bytes:        d.stats.bytes.Load(),
		CommitErrors: d.stats.commitErrors.Load(),
		Rejected:     d.stats.rejected.Load(),
		Pending:      pending,
		MaxBatch:     d.stats.maxBatch.Load(),
		Compactions:  d.stats.compactions.Load(),
	}
}
