package mqtt

import (
	"context"
	"log/slog"
	"net"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"

	"github.com/fieldgate/fieldgate/internal/rawio"
)

// parkAfter is how long a client's reader waits on its goroutine for the
// next packet before the connection is parked (internal/rawio.Poller): a
// client that is quiet for longer costs no goroutine until it sends again.
// Shorter saves more memory during connect storms; longer saves the wake-up
// (an epoll_ctl and a goroutine start, a few µs) for clients that send
// every second or so. ADR 0004.
const parkAfter = time.Second

// parking is what a clientConn needs to park: set for plain TCP connections
// whose socket is read through internal/rawio, when the broker has a poller.
// TLS and WebSocket connections keep a reader goroutine: their libraries
// buffer input the poller cannot see.
type parking struct {
	rawio.Parking
	poller *rawio.Poller
	conn   *rawio.Conn
}

// parkable returns the raw connection beneath c when c is a plain TCP
// connection read through internal/rawio (directly, or under the
// per-address cap's countedConn).
func parkable(c net.Conn) (*rawio.Conn, bool) {
	if cc, ok := c.(*countedConn); ok {
		c = cc.Conn
	}
	rc, ok := c.(*rawio.Conn)
	return rc, ok
}

// enablePark lets c park on p, when c's connection can.
func (c *clientConn) enablePark(p *rawio.Poller) {
	if p == nil {
		return
	}
	if rc, ok := parkable(c.Conn); ok {
		c.park = &parking{poller: p, conn: rc}
	}
}

// ParkAfter is how long the engine's read loop waits for the next packet
// before it parks the connection; 0 when the connection cannot park
// (mochi.ReadParker).
func (c *clientConn) ParkAfter() time.Duration {
	if c.park == nil {
		return 0
	}
	return parkAfter
}

// ParkRead parks the connection until it has input, is closed or passes
// deadline; then w is woken (mochi.ReadParker).
func (c *clientConn) ParkRead(deadline time.Time, w mochi.Waker) bool {
	if c.park == nil {
		return false
	}
	return c.park.poller.Park(&c.park.Parking, c.park.conn.RawConn(), deadline, w)
}

// beginClose is called first when the connection closes. From then on the
// read deadline belongs to Close (its drain of unread input ends at
// lingerTimeout), so the engine's reader, which times out with it, cannot
// push it back; and a parked connection is woken to end, and never parks
// again.
func (c *clientConn) beginClose() {
	c.deadlineMu.Lock()
	c.closing = true
	c.deadlineMu.Unlock()
	if c.park != nil {
		c.park.poller.Close(&c.park.Parking)
	}
}

// SetReadDeadline sets the read deadline, unless Close has begun.
func (c *clientConn) SetReadDeadline(t time.Time) error {
	c.deadlineMu.Lock()
	defer c.deadlineMu.Unlock()
	if c.closing {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline sets both deadlines; once Close has begun, the write
// deadline only.
func (c *clientConn) SetDeadline(t time.Time) error {
	c.deadlineMu.Lock()
	defer c.deadlineMu.Unlock()
	if c.closing {
		return c.Conn.SetWriteDeadline(t)
	}
	return c.Conn.SetDeadline(t)
}

// startPoller starts the poller that parks idle TCP connections, when raw
// socket I/O is on and the platform has one. The poller stops when ctx is
// done; wait returns once it has.
func startPoller(ctx context.Context, rawIO bool, log *slog.Logger) (p *rawio.Poller, wait func()) {
	if !rawIO {
		return nil, func() {}
	}
	p, err := rawio.NewPoller()
	if err != nil {
		log.Info("idle connections keep a goroutine each", "reason", err)
		return nil, func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			log.Error("idle-connection poller stopped", "error", err)
		}
	}()
	return p, func() { <-done }
}
