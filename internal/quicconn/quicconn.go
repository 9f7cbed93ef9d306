// Package quicconn makes one bidirectional QUIC stream a net.Conn, the way
// MQTT over QUIC (EMQX's QUIC listener) carries a whole MQTT connection on a
// single stream. Both the broker's QUIC listener and the uplink's QUIC
// transport use it.
package quicconn

import (
	"net"
	"sync"

	"github.com/quic-go/quic-go"
)

// ALPN is the application protocol MQTT over QUIC negotiates (EMQX: "mqtt").
const ALPN = "mqtt"

// Conn is a QUIC stream with the net.Conn interface. Closing a quic-go
// stream closes only its send side, so Close also cancels reading and closes
// the connection: an MQTT connection ends as a whole.
type Conn struct {
	*quic.Stream
	conn *quic.Conn
	once sync.Once
	wmu  sync.Mutex // quic-go's Stream.Write must not be called concurrently
}

// Write writes p to the stream; concurrent calls are serialised (each
// call's bytes stay together), as they are on a TCP connection.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.Stream.Write(p)
}

// New wraps stream, opened on or accepted from conn.
func New(conn *quic.Conn, stream *quic.Stream) *Conn {
	return &Conn{Stream: stream, conn: conn}
}

// Close ends the stream both ways and closes the QUIC connection.
func (c *Conn) Close() error {
	var err error
	c.once.Do(func() {
		c.Stream.CancelRead(0)
		err = c.Stream.Close()
		_ = c.conn.CloseWithError(0, "")
	})
	return err
}

// LocalAddr is the connection's local UDP address.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr is the peer's UDP address.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// QUIC returns the underlying QUIC connection (TLS state, statistics).
func (c *Conn) QUIC() *quic.Conn { return c.conn }
