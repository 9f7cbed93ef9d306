// SPDX-License-Identifier: MIT

package mqtt

import (
	"errors"
	"os"
	"time"
)

// fieldgate patch (parked reads): a client that sends nothing for a while
// gives its reading goroutine up. Upstream kept a goroutine per connection
// blocked in Read for the connection's whole life; its stack (4 KiB) and
// goroutine record were most of what an idle connection cost, against the
// 4 KiB per idle connection asked for by fieldgate's issue 18. A
// connection that implements ReadParker is read on a goroutine while the
// client is active; once it has waited ParkAfter for the next packet, the
// connection is handed to the parker (in fieldgate, one epoll set for the
// whole broker) and the goroutine ends. When input arrives, the connection
// is closed, or the keep alive deadline passes, the parker calls the
// client's Wake, which starts a goroutine that reads on where the last one
// stopped: at a packet boundary with nothing buffered, so no state but the
// keep alive deadline is carried over.

// ReadParker is a connection that can wait for the client's next packet
// without a goroutine. fieldgate patch (parked reads).
type ReadParker interface {
	// ParkAfter is how long the read loop waits on its goroutine for the
	// next packet before it parks the connection; 0 never parks.
	ParkAfter() time.Duration
	// ParkRead parks the connection: w.Wake is called once, not on the
	// caller's goroutine, when the connection has input, is closed, or
	// deadline (zero: none) has passed. false: it cannot park now (it is
	// closing); the read loop reads on.
	ParkRead(deadline time.Time, w Waker) bool
}

// Waker is what a parked connection wakes: a *Client, whose Wake starts a
// new read loop. fieldgate patch (parked reads).
type Waker interface {
	Wake()
}

// Wake starts a read loop for the client's parked connection; the loop
// ends the client as the first one would have (will message, session
// expiry, counters) when the client disconnects. Only the parker calls it,
// once per ParkRead that returned true. fieldgate patch (parked reads).
func (cl *Client) Wake() {
	go cl.ops.resume(cl)
}

// resumeFunc is Server.resumeClient, bound once per server.
type resumeFunc func(*Client)

// errReadParked ends a read loop whose connection was parked: the client
// lives on, and a new read loop starts when it is woken.
var errReadParked = errors.New("connection parked")

// keepaliveDeadline is when the client's keep alive runs out, counted from
// now (the last packet was just read): one and a half periods; zero without
// keep alive. [MQTT-3.1.2-22] [MQTT-3.1.2-24]
func keepaliveDeadline(keepalive uint16, now time.Time) time.Time {
	if keepalive == 0 {
		return time.Time{}
	}
	return now.Add(time.Duration(keepalive) * time.Second * 3 / 2)
}

// readDeadline returns connReader.readDeadline as a time (zero: none).
func (cl *Client) readDeadline() time.Time {
	if cl.Net.bconn.readDeadline == 0 {
		return time.Time{}
	}
	return time.Unix(0, cl.Net.bconn.readDeadline)
}

// waitOrPark waits for the next packet's first bytes, with nothing
// buffered, and parks the connection when none come within ParkAfter. It
// reports whether the connection was parked (the read loop then ends). An
// error other than the park timeout is left in the reader for
// ReadFixedHeader to report, as without parking. resumed: the loop was
// started by Wake, so the keep alive deadline still counts from the last
// packet read, not from now. Not inlined: the read loop's frame stays small.
//
//go:noinline
func (cl *Client) waitOrPark(resumed bool) bool {
	now := time.Now()
	if !resumed {
		kd := keepaliveDeadline(cl.State.Keepalive, now)
		cl.Net.bconn.readDeadline = 0
		if !kd.IsZero() {
			cl.Net.bconn.readDeadline = kd.UnixNano()
		}
		_ = cl.Net.Conn.SetWriteDeadline(kd) // as refreshDeadline's SetDeadline
	}
	p, _ := cl.Net.Conn.(ReadParker)
	kd := cl.readDeadline()
	wait := now.Add(p.ParkAfter())
	if !kd.IsZero() && kd.Before(wait) {
		wait = kd
	}
	_ = cl.Net.Conn.SetReadDeadline(wait)
	cl.Net.bconn.shortWait = wait != kd
	err := cl.Net.bconn.waitInput()
	if err == nil {
		return false
	}
	if errors.Is(err, os.ErrDeadlineExceeded) && (kd.IsZero() || time.Now().Before(kd)) {
		if p.ParkRead(kd, cl) {
			return true
		}
		_ = cl.Net.Conn.SetReadDeadline(kd) // closing: the close ends the read
		cl.Net.bconn.shortWait = false
		return false
	}
	cl.Net.bconn.err = err
	return false
}

// extendReadDeadline is called by the reader when a read timed out in the
// middle of a packet: the short wait that precedes parking (connReader.shortWait:
// it is the read deadline in force) applies only between packets, so the
// read goes on until the keep alive deadline. It reports whether to read
// again. Before CONNECT is read, shortWait is false: the connect timeout
// stands.
func (cl *Client) extendReadDeadline(err error) bool {
	if !cl.Net.bconn.shortWait || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	cl.Net.bconn.shortWait = false
	kd := cl.readDeadline()
	if !kd.IsZero() && !time.Now().Before(kd) {
		return false
	}
	return cl.Net.Conn.SetReadDeadline(kd) == nil
}

// setParker makes a client read through c park when c is a ReadParker
// that parks.
func (cl *Client) setParker(c any) {
	if p, ok := c.(ReadParker); ok && p.ParkAfter() > 0 {
		cl.Net.parks = true
		cl.Net.bconn.cl = cl
	}
}
