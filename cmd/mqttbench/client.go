package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"time"
)

// setupTimeout bounds each connect, subscribe and barrier step.
const setupTimeout = 10 * time.Second

// Buffer sizes of the load generator's connections. Subscribers read with a
// large buffer so that one read system call brings in hundreds of packets.
const (
	readBufferSize  = 64 << 10
	writeBufferSize = 16 << 10
)

// handshake dials addr, sends CONNECT (clean session) and waits for an
// accepting CONNACK. It reads exactly the four CONNACK bytes, so the caller
// may wrap the connection in a buffered reader afterwards.
func handshake(ctx context.Context, addr, clientID string, keepAliveSeconds uint16) (net.Conn, error) {
	return handshakeSession(ctx, addr, clientID, keepAliveSeconds, true)
}

// handshakeSession is handshake with the clean session flag given: false
// resumes (or starts) a session that outlives the connection.
func handshakeSession(ctx context.Context, addr, clientID string, keepAliveSeconds uint16, clean bool) (net.Conn, error) {
	d := net.Dialer{Timeout: setupTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if err := connectOn(conn, clientID, keepAliveSeconds, clean, setupTimeout, make([]byte, 0, 64)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("client %s: %w", clientID, err)
	}
	return conn, nil
}

// connectOn sends CONNECT on conn and checks the CONNACK, within timeout.
// scratch is reused for the encoding.
func connectOn(conn net.Conn, clientID string, keepAliveSeconds uint16, clean bool, timeout time.Duration, scratch []byte) error {
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("set deadline: %w", err)
	}
	if _, err := conn.Write(appendConnect(scratch[:0], clientID, keepAliveSeconds, clean)); err != nil {
		return fmt.Errorf("write CONNECT: %w", err)
	}
	var ack [4]byte
	if _, err := io.ReadFull(conn, ack[:]); err != nil {
		return fmt.Errorf("read CONNACK: %w", err)
	}
	if ack[0] != typeConnack<<4 || ack[1] != 2 {
		return fmt.Errorf("%w: expected CONNACK, got % x", errMalformed, ack)
	}
	if ack[3] != 0 {
		return fmt.Errorf("connection refused with CONNACK return code %d", ack[3])
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("clear deadline: %w", err)
	}
	return nil
}

// mqttConn is a connected MQTT client with buffered reads and writes,
// used by one goroutine (close excepted).
type mqttConn struct {
	id      string
	conn    net.Conn
	r       *bufio.Reader
	pr      *packetReader
	w       *bufio.Writer
	scratch []byte
	// broken is set when a write failed part-way: the stream may end in a
	// partial packet, so nothing more is written on it.
	broken bool
}

// dialMQTT connects a client (clean session) and wraps it in buffers.
func dialMQTT(ctx context.Context, addr, clientID string) (*mqttConn, error) {
	return dialSession(ctx, addr, clientID, true)
}

// dialSession is dialMQTT with the clean session flag given.
func dialSession(ctx context.Context, addr, clientID string, clean bool) (*mqttConn, error) {
	conn, err := handshakeSession(ctx, addr, clientID, 60, clean)
	if err != nil {
		return nil, err
	}
	r := bufio.NewReaderSize(conn, readBufferSize)
	return &mqttConn{
		id:      clientID,
		conn:    conn,
		r:       r,
		pr:      newPacketReader(r),
		w:       bufio.NewWriterSize(conn, writeBufferSize),
		scratch: make([]byte, 0, 256),
	}, nil
}

// subscribe subscribes to filter and waits for a SUBACK granting it.
func (c *mqttConn) subscribe(filter string, qos byte) error {
	const packetID = 1
	if err := c.conn.SetDeadline(time.Now().Add(setupTimeout)); err != nil {
		return fmt.Errorf("client %s: set deadline: %w", c.id, err)
	}
	c.scratch = appendSubscribe(c.scratch[:0], packetID, filter, qos)
	if _, err := c.w.Write(c.scratch); err != nil {
		return fmt.Errorf("client %s: write SUBSCRIBE %s: %w", c.id, filter, err)
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("client %s: write SUBSCRIBE %s: %w", c.id, filter, err)
	}
	for {
		header, body, err := c.pr.next()
		if err != nil {
			return fmt.Errorf("client %s: read SUBACK for %s: %w", c.id, filter, err)
		}
		if header>>4 != typeSuback {
			continue // a retained message, say; the benchmark's topics have none
		}
		id, codes, err := parseSuback(body)
		if err != nil {
			return fmt.Errorf("client %s: SUBACK for %s: %w", c.id, filter, err)
		}
		if id != packetID || len(codes) != 1 || codes[0] == 0x80 {
			return fmt.Errorf("client %s: subscription to %s refused (SUBACK id %d codes % x)", c.id, filter, id, codes)
		}
		break
	}
	if err := c.conn.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("client %s: clear deadline: %w", c.id, err)
	}
	return nil
}

// sendSubscribe writes a SUBSCRIBE for filter without waiting for the
// SUBACK: for a subscriber whose reader must count the retained messages,
// which may come before the SUBACK.
func (c *mqttConn) sendSubscribe(filter string, qos byte) error {
	c.scratch = appendSubscribe(c.scratch[:0], 1, filter, qos)
	if _, err := c.w.Write(c.scratch); err != nil {
		return fmt.Errorf("client %s: write SUBSCRIBE %s: %w", c.id, filter, err)
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("client %s: write SUBSCRIBE %s: %w", c.id, filter, err)
	}
	return nil
}

// writePingreq buffers a PINGREQ and flushes the writer.
func (c *mqttConn) writePingreq() error {
	c.scratch = appendPingreq(c.scratch[:0])
	if _, err := c.w.Write(c.scratch); err != nil {
		return fmt.Errorf("client %s: write PINGREQ: %w", c.id, err)
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("client %s: write PINGREQ: %w", c.id, err)
	}
	return nil
}

// close sends DISCONNECT (best effort, without waiting) and closes the
// connection. It is safe to call while another goroutine reads or flushes
// whole packets on c: it touches neither the buffers nor scratch, and a
// single Write is never interleaved with another.
func (c *mqttConn) close() {
	if !c.broken { // never append to a half-written stream
		disconnect := [2]byte{typeDisconnect << 4, 0}
		_ = c.conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = c.conn.Write(disconnect[:])
	}
	_ = c.conn.Close()
}
