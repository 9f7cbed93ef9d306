//go:build linux

package rawio

import (
	"context"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
	"golang.org/x/sys/unix"
)

// runPoller starts a Poller for the test and stops it at cleanup.
func runPoller(t *testing.T) *Poller {
	t.Helper()
	p, err := NewPoller()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return p
}

func rawConn(t *testing.T, c net.Conn) syscall.RawConn {
	t.Helper()
	rc, err := c.(*Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// mustPark parks c's connection on p and fails the test if it cannot.
func mustPark(t *testing.T, p *Poller, pk *Parking, c net.Conn, deadline time.Time, w Waker) {
	t.Helper()
	if !p.Park(pk, rawConn(t, c), deadline, w) {
		t.Fatal("Park = false")
	}
}

// waker counts wake calls and signals each.
type waker struct {
	mu sync.Mutex
	n  int
	ch chan struct{}
}

// wakerFunc is a Waker that calls itself.
type wakerFunc func()

func (f wakerFunc) Wake() { f() }

func newWaker() *waker { return &waker{ch: make(chan struct{}, 16)} }

func (w *waker) Wake() {
	w.mu.Lock()
	w.n++
	w.mu.Unlock()
	w.ch <- struct{}{}
}

func (w *waker) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

func (w *waker) await(t *testing.T, why string) {
	t.Helper()
	select {
	case <-w.ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("not woken: %s", why)
	}
}

func TestPollerWakesOnInputOnceAndRearms(t *testing.T) {
	p := runPoller(t)
	s, c := pair(t)
	var pk Parking
	w := newWaker()
	mustPark(t, p, &pk, s, time.Time{}, w)
	if p.Parked() != 1 {
		t.Fatalf("Parked = %d, want 1", p.Parked())
	}
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	w.await(t, "input")
	if p.Parked() != 0 {
		t.Fatalf("Parked = %d after wake, want 0", p.Parked())
	}
	// The woken side reads through the connection as usual.
	buf := make([]byte, 8)
	if n, err := s.Read(buf); err != nil || string(buf[:n]) != "a" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	// Parking again re-arms the one-shot registration.
	mustPark(t, p, &pk, s, time.Time{}, w)
	if _, err := c.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	w.await(t, "second input")
	if got := w.count(); got != 2 {
		t.Fatalf("woken %d times, want 2", got)
	}
}

func TestPollerWakesAtOnceWhenInputAlreadyWaits(t *testing.T) {
	p := runPoller(t)
	s, c := pair(t)
	if _, err := c.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	// Let the bytes reach the server's socket buffer before parking.
	testwait.For(t, 5*time.Second, "bytes in the receive buffer", func() bool { return pending(t, s) > 0 })
	var pk Parking
	w := newWaker()
	mustPark(t, p, &pk, s, time.Time{}, w)
	w.await(t, "input waiting before Park")
}

// pending is how many bytes wait unread in c's receive buffer.
func pending(t *testing.T, c net.Conn) int {
	var n int
	var err error
	if cerr := rawConn(t, c).Control(func(fd uintptr) {
		n, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	}); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPollerWakesOnPeerClose(t *testing.T) {
	p := runPoller(t)
	s, c := pair(t)
	var pk Parking
	w := newWaker()
	mustPark(t, p, &pk, s, time.Time{}, w)
	_ = c.Close()
	w.await(t, "peer closed")
}

func TestPollerWakesAtDeadline(t *testing.T) {
	p := runPoller(t)
	s, _ := pair(t)
	var pk Parking
	w := newWaker()
	start := time.Now()
	mustPark(t, p, &pk, s, start.Add(200*time.Millisecond), w)
	w.await(t, "deadline")
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Fatalf("woken after %v, before the deadline", el)
	}
}

func TestPollerCloseWakesAndRefusesParking(t *testing.T) {
	p := runPoller(t)
	s, _ := pair(t)
	var pk Parking
	w := newWaker()
	mustPark(t, p, &pk, s, time.Time{}, w)
	p.Close(&pk)
	w.await(t, "Close")
	if p.Park(&pk, rawConn(t, s), time.Time{}, w) {
		t.Fatal("Park after Close = true")
	}
	if p.Parked() != 0 {
		t.Fatalf("Parked = %d, want 0", p.Parked())
	}
}

func TestPollerParkOnClosedConnRefused(t *testing.T) {
	p := runPoller(t)
	s, _ := pair(t)
	rc := rawConn(t, s)
	_ = s.Close()
	var pk Parking
	if p.Park(&pk, rc, time.Time{}, wakerFunc(func() { t.Error("woken") })) {
		t.Fatal("Park on a closed connection = true")
	}
}

func TestPollerStopWakesEveryParked(t *testing.T) {
	p, err := NewPoller()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	w := newWaker()
	parks := make([]Parking, 3)
	for i := range parks {
		s, _ := pair(t)
		mustPark(t, p, &parks[i], s, time.Time{}, w)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for range parks {
		w.await(t, "poller stopped")
	}
	s, _ := pair(t)
	var pk Parking
	if p.Park(&pk, rawConn(t, s), time.Time{}, w) {
		t.Fatal("Park after Run ended = true")
	}
}
