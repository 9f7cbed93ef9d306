package rawio

import (
	"errors"
	"time"
)

// A Poller lets an idle connection wait for its next input without a
// goroutine of its own (issue 18: memory per idle connection).
//
// Why: a reader goroutine blocked in Read keeps a stack of at least 2 KiB,
// usually 4 KiB, plus its goroutine record: more than everything else an
// idle MQTT connection holds. A broker with 20,000 sensors that each send a
// reading a minute spends most of its memory on stacks of goroutines that
// wait. A parked connection is instead one entry in one epoll set, watched
// by the Poller's single goroutine; when input arrives, the connection is
// closed, or its deadline passes, the Poller calls the connection's wake
// Waker, which starts a goroutine to read again.
//
// The Go runtime's netpoller keeps the descriptor in its own epoll set,
// edge-triggered; the Poller's is a second, level-triggered and one-shot
// registration of the same descriptor, so input that is already waiting
// when a connection parks wakes it at once, and each parking wakes at most
// once. Reads themselves still go through the connection (and so through
// the netpoller, with its deadlines).
//
// Linux only; elsewhere NewPoller returns ErrPollerUnsupported and callers
// keep a goroutine per connection.
type Poller struct {
	poller // per platform
}

// Parking is one connection's registration with a Poller. The zero value
// is ready to use; embed it in the connection's struct and do not copy it.
// Its fields are guarded by the Poller's lock.
type Parking struct {
	fd       int32
	added    bool  // the descriptor is in the epoll set (one-shot: disarmed after an event)
	parked   bool  // waiting: wake will be called once
	closed   bool  // the connection is closing: it never parks again
	deadline int64 // Unix nanoseconds; 0: none
	waker    Waker // woken once per parking, never with the lock held
}

// Waker is woken when its parked connection is ready: Wake must not block
// (it starts a goroutine).
type Waker interface {
	Wake()
}

// ErrPollerUnsupported is returned by NewPoller where there is no epoll.
var ErrPollerUnsupported = errors.New("rawio: idle-connection poller needs Linux")

// sweepEvery bounds how late a parked connection's deadline is noticed,
// and how often an idle Poller wakes up.
const sweepEvery = time.Second
