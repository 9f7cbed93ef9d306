package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrQueueFull is returned by Queue.Push when the queue holds its maximum.
var ErrQueueFull = errors.New("queue full")

// queueSyncTimeout bounds how long Peek waits for the entry it reads to be
// committed.
const queueSyncTimeout = 30 * time.Second

// Queue is a bounded FIFO of byte entries kept in one bucket of a DB: the
// durable queue of a rule's http action (rules.Queue). Keys are 8-byte
// big-endian sequence numbers, so the bucket's key order is the queue's
// order. Push and Pop are group-committed like every write of the DB
// (durable about one fsync later); after a crash an entry popped just
// before may come back (delivery is at least once), and one pushed just
// before may be missing.
//
// A Queue is safe for concurrent use; one process must open a bucket once.
type Queue struct {
	db     *DB
	bucket string
	max    int

	mu         sync.Mutex
	head, tail uint64 // next to pop, next to push
}

// OpenQueue opens the queue in bucket (created on first push), holding at
// most max entries (max ≥ 1). Entries already in the bucket are kept, even
// past max (only pushes are refused).
func (d *DB) OpenQueue(bucket string, max int) (*Queue, error) {
	if max < 1 {
		return nil, fmt.Errorf("store %s: queue %s: max must be at least 1, got %d", d.path, bucket, max)
	}
	q := &Queue{db: d, bucket: bucket, max: max}
	first := true
	err := d.ForEach(bucket, func(k, _ []byte) error {
		if len(k) != 8 {
			return fmt.Errorf("key %x is not a queue sequence number", k)
		}
		n := binary.BigEndian.Uint64(k)
		if first {
			q.head, first = n, false
		}
		q.tail = n + 1
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: open queue %s: %w", bucket, err)
	}
	return q, nil
}

func seqKey(n uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], n)
	return k[:]
}

// Push appends b, or returns ErrQueueFull.
func (q *Queue) Push(b []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.tail-q.head >= uint64(q.max) {
		return ErrQueueFull
	}
	if err := q.db.Put(q.bucket, seqKey(q.tail), b); err != nil {
		return fmt.Errorf("store: queue %s: push: %w", q.bucket, err)
	}
	q.tail++
	return nil
}

// Peek returns the oldest entry without removing it; ok is false when the
// queue is empty. An entry pushed but not yet committed is waited for (at
// most about one commit).
func (q *Queue) Peek() (b []byte, ok bool, err error) {
	q.mu.Lock()
	head, tail := q.head, q.tail
	q.mu.Unlock()
	if head == tail {
		return nil, false, nil
	}
	b, err = q.db.Get(q.bucket, seqKey(head))
	if errors.Is(err, ErrNotFound) {
		ctx, cancel := context.WithTimeout(context.Background(), queueSyncTimeout)
		err = q.db.Sync(ctx)
		cancel()
		if err == nil {
			b, err = q.db.Get(q.bucket, seqKey(head))
		}
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: queue %s: peek: %w", q.bucket, err)
	}
	return b, true, nil
}

// Pop removes the oldest entry (none: no-op).
func (q *Queue) Pop() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == q.tail {
		return nil
	}
	if err := q.db.Delete(q.bucket, seqKey(q.head)); err != nil {
		return fmt.Errorf("store: queue %s: pop: %w", q.bucket, err)
	}
	q.head++
	return nil
}

// Len is how many entries wait.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return int(q.tail - q.head)
}
