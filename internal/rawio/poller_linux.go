package rawio

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type poller struct {
	epfd int // the epoll set of parked connections
	evfd int // an eventfd in that set: written to stop Run

	mu      sync.Mutex
	parked  map[int32]*Parking
	next    int64 // earliest deadline of a parked connection, Unix ns; 0: none known
	stopped bool  // Run has ended: nothing parks any more
}

// NewPoller returns a Poller. Its Run must be called: it owns the epoll
// set's descriptors and closes them when it returns.
func NewPoller() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("rawio: epoll_create1: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("rawio: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		_ = unix.Close(evfd)
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("rawio: epoll_ctl eventfd: %w", err)
	}
	return &Poller{poller{epfd: epfd, evfd: evfd, parked: make(map[int32]*Parking)}}, nil
}

// Park registers the connection behind rc: w.Wake is called once, from the
// Poller's goroutine or from Close, when the connection has input (or end
// of stream, or an error), is closed through Close, passes deadline (zero:
// none), or the Poller stops.
// Park returns false when the connection cannot park (it is closing, the
// descriptor is closed, or the Poller has stopped); the caller then reads
// on its own goroutine as before.
func (p *Poller) Park(w *Parking, rc syscall.RawConn, deadline time.Time, wk Waker) bool {
	var dl int64
	if !deadline.IsZero() {
		dl = deadline.UnixNano()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.closed || w.parked || p.stopped {
		return false
	}
	var ctlErr error
	err := rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fd)}
		op := unix.EPOLL_CTL_ADD
		if w.added && w.fd == int32(fd) {
			op = unix.EPOLL_CTL_MOD // re-arm the one-shot registration
		}
		ctlErr = unix.EpollCtl(p.epfd, op, int(fd), &ev)
		if errors.Is(ctlErr, unix.EEXIST) {
			ctlErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		}
		w.fd = int32(fd)
	})
	if err != nil || ctlErr != nil {
		return false
	}
	w.added, w.parked, w.deadline, w.waker = true, true, dl, wk
	p.parked[w.fd] = w
	if dl != 0 && (p.next == 0 || dl < p.next) {
		p.next = dl
	}
	return true
}

// Close marks the connection as closing, before its descriptor is closed:
// it never parks again, and if it is parked it is woken now (its reader
// then finds the connection closed and ends). Close must be called before
// the descriptor is closed, so a parked connection is never stranded.
func (p *Poller) Close(w *Parking) {
	p.mu.Lock()
	w.closed = true
	wk := p.unparkLocked(w)
	p.mu.Unlock()
	if wk != nil {
		wk.Wake()
	}
}

// Parked returns how many connections are parked.
func (p *Poller) Parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

// unparkLocked takes w out of the parked set and returns its Waker, or
// nil when it was not parked.
func (p *Poller) unparkLocked(w *Parking) Waker {
	if !w.parked {
		return nil
	}
	w.parked = false
	if p.parked[w.fd] == w {
		delete(p.parked, w.fd)
	}
	wk := w.waker
	w.waker = nil
	return wk
}

// Run watches the parked connections until ctx is done. When it returns,
// every connection still parked has been woken, nothing parks any more,
// and the Poller's descriptors are closed.
func (p *Poller) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		_, _ = unix.Write(p.evfd, one[:])
	})
	defer stop()
	defer p.shutdown()

	events := make([]unix.EpollEvent, 128)
	var wakes []Waker
	for {
		n, err := unix.EpollWait(p.epfd, events, p.waitMillis())
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("rawio: epoll_wait: %w", err)
		}
		wakes = wakes[:0]
		p.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			if ev.Fd == int32(p.evfd) {
				continue // ctx is done: seen below
			}
			if w := p.parked[ev.Fd]; w != nil {
				if wk := p.unparkLocked(w); wk != nil {
					wakes = append(wakes, wk)
				}
			}
		}
		wakes = p.expiredLocked(time.Now().UnixNano(), wakes)
		p.mu.Unlock()
		for _, wk := range wakes {
			wk.Wake()
		}
		clear(wakes) // hold no connection until the next round
		if ctx.Err() != nil {
			return nil
		}
	}
}

// waitMillis is how long the next epoll_wait may block: until the earliest
// known deadline, at most sweepEvery.
func (p *Poller) waitMillis() int {
	p.mu.Lock()
	next := p.next
	p.mu.Unlock()
	wait := sweepEvery
	if next != 0 {
		wait = min(wait, time.Until(time.Unix(0, next)))
	}
	return int(max(wait.Milliseconds(), 0)) + 1 // +1: never wake just before a deadline
}

// expiredLocked unparks the connections whose deadline has passed (they
// are appended to wakes) and recomputes the earliest deadline. It scans
// the parked set only when the earliest deadline is due.
func (p *Poller) expiredLocked(now int64, wakes []Waker) []Waker {
	if p.next == 0 || now < p.next {
		return wakes
	}
	p.next = 0
	for _, w := range p.parked {
		switch {
		case w.deadline == 0:
		case w.deadline <= now:
			if wk := p.unparkLocked(w); wk != nil {
				wakes = append(wakes, wk)
			}
		case p.next == 0 || w.deadline < p.next:
			p.next = w.deadline
		}
	}
	return wakes
}

// shutdown wakes every parked connection, refuses new ones and closes the
// descriptors.
func (p *Poller) shutdown() {
	p.mu.Lock()
	p.stopped = true
	var wakes []Waker
	for _, w := range p.parked {
		if wk := p.unparkLocked(w); wk != nil {
			wakes = append(wakes, wk)
		}
	}
	p.mu.Unlock()
	for _, wk := range wakes {
		wk.Wake()
	}
	_ = unix.Close(p.evfd)
	_ = unix.Close(p.epfd)
}
