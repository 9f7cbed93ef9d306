package store

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// commitLogInterval rate-limits the logging of commit errors: a dead disk
// fails every round and must not flood the journal.
const commitLogInterval = 10 * time.Second

// Retry delays after a failed commit, doubling from the first to the last.
const (
	retryMin = 10 * time.Millisecond
	retryMax = 2 * time.Second
	// closeAttempts is how often the final commit is tried when closing.
	closeAttempts = 3
)

// opKey identifies a record: bucket and key.
type opKey struct {
	bucket string
	key    string
}

// op is the latest pending write of one record.
type op struct {
	del     bool
	value   []byte
	encoder encoding.BinaryMarshaler // when set, value is produced at commit time
}

// prefixDelete removes every key of bucket starting with prefix.
type prefixDelete struct {
	bucket string
	prefix string
}

// batch is what the writer commits in one transaction: the prefix deletes
// first, then the coalesced puts and deletes (which were all enqueued after any
// prefix delete that would have matched them; earlier ones were dropped).
type batch struct {
	ops           map[opKey]op
	prefixDeletes []prefixDelete
	seq           uint64 // sequence number of the newest operation in the batch
}

func newBatch() *batch {
	return &batch{ops: make(map[opKey]op)}
}

func (b *batch) size() int { return len(b.ops) + len(b.prefixDeletes) }

func (b *batch) empty() bool { return b.size() == 0 }

func (b *batch) addPrefixDelete(pd prefixDelete) {
	for k := range b.ops {
		if k.bucket == pd.bucket && len(k.key) >= len(pd.prefix) && k.key[:len(pd.prefix)] == pd.prefix {
			delete(b.ops, k)
		}
	}
	for _, have := range b.prefixDeletes {
		if have == pd {
			return
		}
	}
	b.prefixDeletes = append(b.prefixDeletes, pd)
}

// replay applies newer on top of b, as if newer's operations had been
// enqueued into b. Used to put a failed batch back under what came since.
func (b *batch) replay(newer *batch) {
	for _, pd := range newer.prefixDeletes {
		b.addPrefixDelete(pd)
	}
	for k, o := range newer.ops {
		b.ops[k] = o
	}
	if newer.seq > b.seq {
		b.seq = newer.seq
	}
}

// Put enqueues writing value under key in bucket (created on first use). The
// value is copied. Put returns before the write is durable (see Sync); it
// blocks only while MaxPending operations are already waiting (backpressure),
// which lasts at most about one commit unless the disk is failing. It returns
// ErrClosed after Close, or an error for an empty bucket name or key.
func (d *DB) Put(bucket string, key, value []byte) error {
	return d.enqueue(bucket, key, op{value: bytes.Clone(value)})
}

// PutMarshaler is Put with the value encoded by the writer at commit time:
// if a later Put or Delete of the same key arrives before the commit, v is
// never encoded at all. v must not be modified after the call. An encoding
// error drops this one operation and is logged and counted as Rejected.
func (d *DB) PutMarshaler(bucket string, key []byte, v encoding.BinaryMarshaler) error {
	return d.enqueue(bucket, key, op{encoder: v})
}

// Delete enqueues deleting key from bucket. Deleting a missing key is not an
// error. A Delete after a pending Put of the same key replaces it: the value
// is never written.
func (d *DB) Delete(bucket string, key []byte) error {
	return d.enqueue(bucket, key, op{del: true})
}

// DeletePrefix enqueues deleting every key in bucket that starts with prefix,
// including pending writes enqueued before it. Writes enqueued after it are
// kept. prefix must not be empty.
func (d *DB) DeletePrefix(bucket string, prefix []byte) error {
	if bucket == "" || len(prefix) == 0 {
		return fmt.Errorf("store %s: delete prefix: empty bucket name or prefix", d.path)
	}
	pd := prefixDelete{bucket: bucket, prefix: string(prefix)}
	return d.add(func(b *batch) { b.addPrefixDelete(pd) })
}

func (d *DB) enqueue(bucket string, key []byte, o op) error {
	if bucket == "" || len(key) == 0 {
		return fmt.Errorf("store %s: empty bucket name or key", d.path)
	}
	if len(key) > bolt.MaxKeySize {
		return fmt.Errorf("store %s: key in %s is %d bytes, more than %d", d.path, bucket, len(key), bolt.MaxKeySize)
	}
	k := opKey{bucket: bucket, key: string(key)}
	return d.add(func(b *batch) { b.ops[k] = o })
}

// add applies one operation to the pending batch, waiting for room first.
func (d *DB) add(apply func(*batch)) error {
	d.mu.Lock()
	for !d.closing && d.pending.size() >= d.maxPending {
		d.space.Wait()
	}
	if d.closing {
		d.mu.Unlock()
		return fmt.Errorf("store %s: %w", d.path, ErrClosed)
	}
	d.enqueued++
	apply(d.pending)
	d.pending.seq = d.enqueued
	d.mu.Unlock()
	d.stats.enqueued.Add(1)
	d.signal()
	return nil
}

// signal wakes the writer without blocking.
func (d *DB) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// run is the writer goroutine, started by Open and stopped by Close. It takes
// the whole pending batch, commits it, and repeats; on failure it puts the
// batch back under anything newer and retries after a growing delay.
func (d *DB) run() {
	defer close(d.done)
	var (
		failures   int
		lastLog    time.Time
		suppressed int
		compactC   <-chan time.Time
	)
	if d.opts.CompactInterval > 0 {
		t := time.NewTicker(d.opts.CompactInterval)
		defer t.Stop()
		compactC = t.C
	}
	for {
		d.mu.Lock()
		closing := d.closing
		if d.pending.empty() {
			d.mu.Unlock()
			if closing {
				return
			}
			select {
			case <-d.wake:
			case <-compactC:
				_ = d.compact(false) // logged
			case req := <-d.compactReq:
				req <- d.compact(true)
			}
			continue
		}
		b := d.pending
		d.pending = newBatch()
		d.space.Broadcast()
		d.mu.Unlock()

		err := d.commit(b)
		if err == nil {
			d.mu.Lock()
			d.committed = b.seq
			d.lastErr = nil
			close(d.committedCh)
			d.committedCh = make(chan struct{})
			d.mu.Unlock()
			if failures > 0 {
				d.log.Info("store commits succeed again", "after_failures", failures)
			}
			failures = 0
			select {
			case req := <-d.compactReq: // asked for while writes go on
				req <- d.compact(true)
			default:
			}
			continue
		}

		failures++
		d.stats.commitErrors.Add(1)
		d.mu.Lock()
		b.replay(d.pending)
		d.pending = b
		d.lastErr = err
		closing = d.closing
		d.mu.Unlock()

		if now := time.Now(); now.Sub(lastLog) >= commitLogInterval {
			d.log.Error("store commit failed; will retry", "error", err, "failures", failures, "suppressed", suppressed)
			lastLog, suppressed = now, 0
		} else {
			suppressed++
		}
		if closing && failures >= closeAttempts {
			return // Close reports what was not committed
		}
		delay := min(retryMin<<min(failures-1, 8), retryMax)
		if closing {
			delay = retryMin
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-d.stopping:
			t.Stop()
		}
	}
}

// commit writes a batch in one transaction and one fsync. Operations bbolt
// refuses one by one (too large, encoding failed) are logged, counted and
// skipped, so that one bad record can never block the others forever; an
// error of the transaction itself fails the whole batch.
func (d *DB) commit(b *batch) error {
	if d.broken != nil {
		return d.broken
	}
	var nops, nbytes uint64
	err := d.bolt.Update(func(tx *bolt.Tx) error {
		nops, nbytes = 0, 0
		buckets := make(map[string]*bolt.Bucket)
		bucket := func(name string, create bool) (*bolt.Bucket, error) {
			if bk, ok := buckets[name]; ok && bk != nil {
				return bk, nil
			}
			bk := tx.Bucket([]byte(name))
			if bk == nil && create {
				var err error
				if bk, err = tx.CreateBucket([]byte(name)); err != nil {
					return nil, fmt.Errorf("create bucket %s: %w", name, err)
				}
			}
			buckets[name] = bk
			return bk, nil
		}

		for _, pd := range b.prefixDeletes {
			bk, err := bucket(pd.bucket, false)
			if err != nil {
				return err
			}
			if bk == nil {
				continue
			}
			prefix := []byte(pd.prefix)
			c := bk.Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
				if err := c.Delete(); err != nil {
					return fmt.Errorf("delete prefix %q in %s: %w", pd.prefix, pd.bucket, err)
				}
				nops++
			}
		}

		// Sorted by bucket and key: bbolt inserts in order far faster than
		// in the map's random order (fewer page splits, cursor locality).
		keys := make([]opKey, 0, len(b.ops))
		for k := range b.ops {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b opKey) int {
			if c := strings.Compare(a.bucket, b.bucket); c != 0 {
				return c
			}
			return strings.Compare(a.key, b.key)
		})
		for _, k := range keys {
			o := b.ops[k]
			bk, err := bucket(k.bucket, !o.del)
			if err != nil {
				return err
			}
			if o.del {
				if bk != nil {
					if err := bk.Delete([]byte(k.key)); err != nil {
						return fmt.Errorf("delete %q in %s: %w", k.key, k.bucket, err)
					}
				}
				nops++
				continue
			}
			v := o.value
			if o.encoder != nil {
				if v, err = o.encoder.MarshalBinary(); err != nil {
					d.reject(k, fmt.Errorf("encode: %w", err))
					continue
				}
			}
			if err := bk.Put([]byte(k.key), v); err != nil {
				if errors.Is(err, berrors.ErrValueTooLarge) || errors.Is(err, berrors.ErrKeyTooLarge) {
					d.reject(k, err)
					continue
				}
				return fmt.Errorf("put %q in %s: %w", k.key, k.bucket, err)
			}
			nops++
			nbytes += uint64(len(v))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store %s: commit %d ops: %w", d.path, b.size(), err)
	}
	d.stats.commits.Add(1)
	d.stats.ops.Add(nops)
	d.stats.bytes.Add(nbytes)
	for {
		m := d.stats.maxBatch.Load()
		if nops <= m || d.stats.maxBatch.CompareAndSwap(m, nops) {
			break
		}
	}
	return nil
}

// reject logs and counts one operation that can never be written.
func (d *DB) reject(k opKey, err error) {
	d.stats.rejected.Add(1)
	d.log.Error("store dropped a write it cannot store", "bucket", k.bucket, "key", k.key, "error", err)
}
