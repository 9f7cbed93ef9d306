package mqtt

import (
	"github.com/fieldgate/fieldgate/internal/quicconn"

	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// errPacketTooLarge is returned by clientConn.Read once a client announced a
// packet larger than the configured maximum.
var errPacketTooLarge = errors.New("packet exceeds maximum packet size")

// clientConn wraps every accepted connection before the engine sees it. It
//
//   - follows the MQTT framing of what the client sends, to learn the
//     protocol version from CONNECT and to refuse an oversized packet as soon
//     as its fixed header arrives (MQTT 5 clients get DISCONNECT 0x95 first;
//     the engine itself would only close the socket);
//   - makes each Write atomic, so a packet written by the gateway (such as
//     that DISCONNECT) never interleaves with one written by the engine;
//   - holds per-connection state the broker hooks need (publish rate limiter).
type clientConn struct {
	net.Conn
	maxPacket int // 0: unlimited

	writeMu   sync.Mutex
	closeOnce sync.Once
	closeErr  error

	// Framing state, touched only by the reading goroutine.
	state     frameState
	lenMul    int
	remaining int
	first     bool // the current packet is the first (CONNECT)
	connHead  [16]byte
	connHeadN int
	tooLarge  bool

	version atomic.Uint32 // MQTT protocol level from CONNECT (3, 4 or 5)

	rate     *publishLimiter // per-client publish rate; nil without a limit
	certUser bool            // authenticated by its TLS client certificate
}

type frameState uint8

const (
	frameHeader frameState = iota
	frameLength
	frameBody
)

func newClientConn(c net.Conn, maxPacket int) *clientConn {
	return &clientConn{Conn: c, maxPacket: maxPacket, first: true}
}

// Read reads from the connection and scans what was read for packet
// boundaries. Bytes of an oversized packet are never handed to the engine.
func (c *clientConn) Read(p []byte) (int, error) {
	if c.tooLarge {
		return 0, errPacketTooLarge
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		if k, oversized := c.scan(p[:n]); oversized {
			c.tooLarge = true
			c.refuseOversized()
			if k > 0 {
				return k, nil
			}
			return 0, errPacketTooLarge
		}
	}
	return n, err
}

// scan advances the framing state over b. It returns the offset of the fixed
// header of an oversized packet and true when one starts in b.
func (c *clientConn) scan(b []byte) (int, bool) {
	start := 0 // offset in b of the current packet's fixed header, if in b
	for i := 0; i < len(b); {
		switch c.state {
		case frameHeader:
			c.state = frameLength
			c.lenMul = 1
			c.remaining = 0
			start = i
			i++
		case frameLength:
			v := b[i]
			c.remaining += int(v&0x7f) * c.lenMul
			c.lenMul *= 128
			i++
			if v&0x80 != 0 {
				if c.lenMul > 128*128*128*128 { // malformed: let the engine reject it
					c.state = frameBody
				}
				continue
			}
			if c.maxPacket > 0 && c.remaining+1 > c.maxPacket {
				return start, true
			}
			c.state = frameBody
			if c.remaining == 0 {
				c.endPacket()
			}
		case frameBody:
			take := min(c.remaining, len(b)-i)
			if c.first && c.connHeadN < len(c.connHead) {
				c.connHeadN += copy(c.connHead[c.connHeadN:], b[i:i+take])
			}
			c.remaining -= take
			i += take
			if c.remaining == 0 {
				c.endPacket()
			}
		}
	}
	return 0, false
}

func (c *clientConn) endPacket() {
	if c.first {
		c.first = false
		c.version.Store(uint32(connectVersion(c.connHead[:c.connHeadN])))
	}
	c.state = frameHeader
}

// connectVersion reads the protocol level from the start of a CONNECT
// packet's variable header (protocol name, then level), or 0.
func connectVersion(b []byte) byte {
	if len(b) < 2 {
		return 0
	}
	nameLen := int(b[0])<<8 | int(b[1])
	if len(b) < 2+nameLen+1 {
		return 0
	}
	return b[2+nameLen]
}

// refuseOversized tells an MQTT 5 client why it is being disconnected.
func (c *clientConn) refuseOversized() {
	if c.version.Load() != 5 {
		return
	}
	// DISCONNECT, remaining length 2: reason 0x95, no properties.
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write([]byte{0xE0, 0x02, 0x95, 0x00})
}

// lingerTimeout bounds how long a closed connection keeps draining what the
// client still sends, so that a last packet (DISCONNECT with a reason code)
// reaches it instead of being destroyed by a reset.
const lingerTimeout = 200 * time.Millisecond

// Close shuts the write side down first (the peer reads everything written,
// then EOF) and closes the socket once the peer has closed its side or after
// lingerTimeout. Closing a socket that still has unread input makes the kernel
// send a reset, which can discard the DISCONNECT written just before: a
// client flooding the broker would never learn why it was cut off.
func (c *clientConn) Close() error {
	c.closeOnce.Do(func() {
		cw, ok := c.Conn.(interface{ CloseWrite() error })
		if !ok {
			c.closeErr = c.Conn.Close()
			return
		}
		c.writeMu.Lock()
		err := cw.CloseWrite()
		c.writeMu.Unlock()
		if err != nil {
			c.closeErr = c.Conn.Close()
			return
		}
		// The drain runs on its own goroutine so that closing many clients
		// (shutdown) is not serialised; it ends within lingerTimeout.
		go func() {
			_ = c.Conn.SetReadDeadline(time.Now().Add(lingerTimeout))
			buf := make([]byte, 512)
			for {
				if _, err := c.Conn.Read(buf); err != nil {
					break
				}
			}
			_ = c.Conn.Close()
		}()
	})
	return c.closeErr
}

// Write writes p as one unit.
func (c *clientConn) Write(p []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return c.Conn.Write(p)
}

// tlsState returns the TLS connection state when the client came over TLS.
func (c *clientConn) tlsState() (tls.ConnectionState, bool) {
	if tc, ok := c.Conn.(*tls.Conn); ok {
		return tc.ConnectionState(), true
	}
	if wc, ok := c.Conn.(*wsConn); ok && wc.tls != nil {
		return *wc.tls, true
	}
	if qc, ok := c.Conn.(*quicconn.Conn); ok {
		return qc.QUIC().ConnectionState().TLS, true
	}
	return tls.ConnectionState{}, false
}

// remoteIP returns the client's IP address, without port.
func remoteIP(addr net.Addr) net.IP {
	switch a := addr.(type) {
	case *net.TCPAddr:
		return a.IP
	case *net.UDPAddr:
		return a.IP
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return nil
	}
	return net.ParseIP(host)
}
