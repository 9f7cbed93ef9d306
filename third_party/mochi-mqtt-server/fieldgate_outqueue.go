// SPDX-License-Identifier: MIT

package mqtt

import (
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// fieldgate patch (idle memory): a client's outbound queue was a channel
// with MaximumClientWritesPending slots (8192 in fieldgate: 64 KiB per
// connection, allocated at connect and zeroed again on every reuse of the
// memory, so an idle connection cost 64 KiB of heap and the memory of closed
// connections stayed resident). outboundPacketQueue holds the same packets with the
// same bound in a ring that grows as packets are queued and is released
// when the write loop has emptied it.

// outboundQueueMinSize is the ring's first size; it doubles up to the bound.
const outboundQueueMinSize = 16

// outboundQueueKeep is the largest ring kept once the queue is empty; a larger
// one, grown by a burst, is released.
const outboundQueueKeep = 64

// outboundPacketQueue is a bounded FIFO of packets for one client's write loop. Any
// goroutine may push; only the write loop pops.
type outboundPacketQueue struct {
	mu    sync.Mutex
	buf   []*packets.Packet // ring, nil while empty and idle
	head  int
	n     int
	limit int
	// ready has capacity 1: a packet was pushed. fieldgate patch (parked
	// reads): made by the first pop that waits, so a client that is never
	// written to (most idle ones) does not hold a channel.
	ready chan struct{}
}

// newOutboundPacketQueue returns an empty queue of at most limit packets.
func newOutboundPacketQueue(limit int) *outboundPacketQueue {
	if limit < 1 {
		limit = 1
	}
	return &outboundPacketQueue{limit: limit}
}

// push queues pk and reports whether there was room.
func (q *outboundPacketQueue) push(pk *packets.Packet) bool {
	q.mu.Lock()
	if q.n >= q.limit {
		q.mu.Unlock()
		return false
	}
	if q.n == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.n)%len(q.buf)] = pk
	q.n++
	ready := q.ready // nil: no pop has waited yet; the next one finds pk
	q.mu.Unlock()
	if ready != nil {
		select {
		case ready <- struct{}{}:
		default:
		}
	}
	return true
}

// grow doubles the ring (up to the limit). The caller holds mu.
func (q *outboundPacketQueue) grow() {
	size := min(max(2*len(q.buf), outboundQueueMinSize), q.limit)
	buf := make([]*packets.Packet, size)
	for i := 0; i < q.n; i++ {
		buf[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = buf, 0
}

// tryPop returns the oldest packet, if any.
func (q *outboundPacketQueue) tryPop() (*packets.Packet, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return nil, false
	}
	pk := q.buf[q.head]
	q.buf[q.head] = nil
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	if q.n == 0 {
		q.head = 0
		if len(q.buf) > outboundQueueKeep {
			q.buf = nil
		}
	}
	return pk, true
}

// popResult says why pop returned.
type popResult int

const (
	popPacket popResult = iota // a packet was taken
	popClosed                  // done was closed
	popIdle                    // nothing was queued for the idle time
)

// pop returns the oldest packet, waiting for one. It returns popClosed once
// done is closed, and popIdle when idle (non-nil) fires before a packet is
// queued; idle is reset to d before each wait.
func (q *outboundPacketQueue) pop(done <-chan struct{}, idle *time.Timer, d time.Duration) (*packets.Packet, popResult) {
	for {
		select {
		case <-done:
			return nil, popClosed
		default:
		}
		if pk, ok := q.tryPop(); ok {
			return pk, popPacket
		}
		ready, ok := q.readyChan()
		if !ok {
			continue // pushed meanwhile
		}
		var fired <-chan time.Time
		if idle != nil {
			if !idle.Stop() {
				select { // a fire not received (go.mod before 1.23 keeps it)
				case <-idle.C:
				default:
				}
			}
			idle.Reset(d)
			fired = idle.C
		}
		select {
		case <-ready:
		case <-done:
			return nil, popClosed
		case <-fired:
			return nil, popIdle
		}
	}
}

// readyChan returns the channel a push signals, made on first use, or
// false when a packet is queued (the caller takes it instead of waiting).
func (q *outboundPacketQueue) readyChan() (chan struct{}, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n > 0 {
		return nil, false
	}
	if q.ready == nil {
		q.ready = make(chan struct{}, 1)
	}
	return q.ready, true
}

// release drops the ring of an empty queue (an idle client).
func (q *outboundPacketQueue) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		q.buf, q.head = nil, 0
	}
}

// Len returns the number of packets queued.
func (q *outboundPacketQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// Cap returns the most packets the queue holds.
func (q *outboundPacketQueue) Cap() int { return q.limit }
