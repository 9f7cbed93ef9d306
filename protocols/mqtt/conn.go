package mqtt

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fieldgate/fieldgate/internal/membudget"
	"github.com/fieldgate/fieldgate/internal/quicconn"
)

// packetAccount is the memory budget account that counts packet bodies
// while the engine reads them.
const packetAccount = "mqtt_packets"

// packetPool is the engine's PacketBudget: every packet body being read is
// counted in the "mqtt_packets" account of the gateway's memory budget, and
// a body the budget cannot take closes its connection (mochi.ErrPacketBudget).
//
// At start it reserves a headroom in that account, which only packet bodies
// draw on (beyond it they reserve from the budget like any holder): offline
// session queues and the protocol gateways' per-peer state can fill the
// rest of the budget, and must drop something to take more, but can never
// take the last bytes that live traffic needs to be read at all. Without a
// budget it counts only.
type packetPool struct {
	acct    *membudget.Account // nil: unlimited
	reading *atomic.Int64      // Stats.PacketBytesReading

	mu       sync.Mutex
	headroom int64 // reserved in acct at start, for bodies only
	inPool   int64 // body bytes held in the headroom
	over     int64 // body bytes reserved from the budget beyond it
}

// packetHeadroom is the headroom for a budget of limit bytes (0: none) and
// a maximum packet size: room for a few of the largest packets, at least
// 8 MiB, at most a quarter of the budget.
func packetHeadroom(limit int64, maxPacket int) int64 {
	h := max(8<<20, 4*int64(maxPacket))
	if limit > 0 {
		h = min(h, limit/4)
	}
	return h
}

// newPacketPool reserves the headroom from b's "mqtt_packets" account (as
// much of it as the budget has free). b may be nil.
func newPacketPool(b *membudget.Budget, maxPacket int, reading *atomic.Int64) *packetPool {
	p := &packetPool{acct: b.Account(packetAccount), reading: reading}
	if b != nil {
		for h := packetHeadroom(b.Limit(), maxPacket); h > 0; h /= 2 {
			if p.acct.Reserve(h) {
				p.headroom = h
				break
			}
		}
	}
	return p
}

// Reserve takes n bytes for a body being read, from the headroom while it
// lasts, then from the budget.
func (p *packetPool) Reserve(n int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.acct != nil && p.inPool+n > p.headroom {
		if !p.acct.Reserve(n) {
			return false
		}
		p.over += n
	} else {
		p.inPool += n
	}
	p.reading.Add(n)
	return true
}

// Release gives n bytes of a body back: to the budget first, then to the
// headroom.
func (p *packetPool) Release(n int64) {
	p.mu.Lock()
	k := min(n, p.over)
	p.over -= k
	p.inPool -= n - k
	p.mu.Unlock()
	p.reading.Add(-n)
	p.acct.Release(k)
}

// close gives the headroom back to the budget, when the broker stops.
func (p *packetPool) close() {
	p.mu.Lock()
	h := p.headroom
	p.headroom = 0
	p.mu.Unlock()
	p.acct.Release(h)
}

var _ mochi.PacketBudget = (*packetPool)(nil)

// errPacketTooLarge is returned by clientConn.Read once a client announced a
// packet larger than the configured maximum.
var errPacketTooLarge = errors.New("packet exceeds maximum packet size")

// errMalformedLength is returned by clientConn.Read once a client sent a
// remaining length that is not a minimal Variable Byte Integer of at most 4
// bytes [MQTT-1.5.5-1]. It is the engine's own reason code, so the engine
// logs it (rate-limited) as a malformed packet.
var errMalformedLength error = packets.ErrMalformedVariableByteInteger

// clientConn wraps every accepted connection before the engine sees it. It
//
//   - follows the MQTT framing of what the client sends, to learn the
//     protocol version from CONNECT and to refuse an oversized packet or a
//     malformed remaining length as soon as its fixed header arrives, before
//     the engine sees it or allocates anything for it (MQTT 5 clients get
//     DISCONNECT 0x95 or 0x81 first; the engine itself would only close the
//     socket);
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
	lenBytes  int // bytes of the remaining length read so far
	remaining int
	first     bool // the current packet is the first (CONNECT)
	connHead  [16]byte
	connHeadN int
	refused   error // errPacketTooLarge or errMalformedLength, once seen
	pktType   byte  // control packet type of the current packet (first byte >> 4)
	saidBye   bool  // the last packet read was a DISCONNECT; mirrors done for the reader

	// done is set by the reading goroutine once the client can send nothing
	// more (doneDisconnect, doneEOF). Close then closes at once instead of
	// lingering.
	done atomic.Uint32

	version atomic.Uint32 // MQTT protocol level from CONNECT (3, 4 or 5)

	rate     *publishLimiter // per-client publish rate; nil without a limit
	certUser bool            // authenticated by its TLS client certificate

	park *parking // nil: the connection cannot park (park.go)

	deadlineMu sync.Mutex // orders the reader's deadlines before Close's (park.go)
	closing    bool       // Close has begun; guarded by deadlineMu
}

// Values of clientConn.done.
const (
	doneNot        uint32 = iota // the client may send more
	doneDisconnect               // its DISCONNECT was the last thing read [MQTT-3.14.4-1]
	doneEOF                      // it closed its side: nothing can follow
)

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
// boundaries. Bytes of an oversized packet, or of one whose remaining length
// is malformed, are never handed to the engine: Read returns the bytes
// before its fixed header, then the error.
func (c *clientConn) Read(p []byte) (int, error) {
	if c.refused != nil {
		return 0, c.refused
	}
	n, err := c.Conn.Read(p)
	if n == 0 && errors.Is(err, io.EOF) {
		c.done.Store(doneEOF)
	}
	if n > 0 {
		if k, refused := c.scan(p[:n]); refused != nil {
			c.refused = refused
			c.refuse(refused)
			if k > 0 {
				return k, nil
			}
			return 0, refused
		}
	}
	return n, err
}

// maxLengthBytes is the longest Variable Byte Integer MQTT allows.
const maxLengthBytes = 4

// scan advances the framing state over b. When a packet that must be
// refused starts in b, it returns the offset of that packet's fixed header
// and errPacketTooLarge (remaining length over maxPacket) or
// errMalformedLength (a remaining length longer than 4 bytes, or not
// minimal: a last byte of 0 after a continuation, as in `80 00`). The
// refusal happens at the last byte of the length, before any of the body.
func (c *clientConn) scan(b []byte) (int, error) {
	start := 0 // offset in b of the current packet's fixed header, if in b
	for i := 0; i < len(b); {
		switch c.state {
		case frameHeader:
			if c.saidBye { // bytes after a DISCONNECT: not done after all
				c.saidBye = false
				c.done.Store(doneNot)
			}
			c.pktType = b[i] >> 4
			c.state = frameLength
			c.lenBytes = 0
			c.remaining = 0
			start = i
			i++
		case frameLength:
			v := b[i]
			c.remaining |= int(v&0x7f) << (7 * c.lenBytes)
			c.lenBytes++
			i++
			if v&0x80 != 0 {
				if c.lenBytes == maxLengthBytes { // a 5th byte would follow
					return start, errMalformedLength
				}
				continue
			}
			if v == 0 && c.lenBytes > 1 { // not minimal
				return start, errMalformedLength
			}
			// The whole packet's size, as MQTT 5 defines Maximum Packet Size.
			if c.maxPacket > 0 && 1+c.lenBytes+c.remaining > c.maxPacket {
				return start, errPacketTooLarge
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
	return 0, nil
}

func (c *clientConn) endPacket() {
	if c.first {
		c.first = false
		c.version.Store(uint32(connectVersion(c.connHead[:c.connHeadN])))
	}
	if c.pktType == packets.Disconnect {
		c.saidBye = true
		c.done.Store(doneDisconnect)
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

// refuse tells an MQTT 5 client why it is being disconnected: 0x95 packet
// too large, or 0x81 malformed packet.
func (c *clientConn) refuse(why error) {
	if c.version.Load() != 5 {
		return
	}
	code := packets.ErrPacketTooLarge.Code
	if errors.Is(why, errMalformedLength) {
		code = packets.ErrMalformedPacket.Code
	}
	// DISCONNECT, remaining length 2: the reason code, no properties.
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write([]byte{0xE0, 0x02, code, 0x00})
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
//
// A TCP connection whose client is done (its DISCONNECT was the last thing
// read, or it closed its side) and that has nothing unread is closed at
// once: the kernel sends a FIN after what was written, and the client can
// send nothing more that would draw a reset. That is every ordinary
// disconnect, and it saves a shutdown, a goroutine, a read deadline and a
// read per connection.
func (c *clientConn) Close() error {
	c.closeOnce.Do(func() {
		c.beginClose() // the read deadline is the drain's; a parked connection is woken to end (park.go)
		if done := c.done.Load(); done != doneNot && c.closeDone(done) {
			return
		}
		cw, ok := c.Conn.(interface{ CloseWrite() error })
		if qc, isQUIC := c.Conn.(*quicconn.Conn); isQUIC {
			// Closing a QUIC stream closes its send side only: the
			// CloseWrite of a stream. Closing the connection at once
			// would discard a DISCONNECT not yet delivered.
			cw, ok = quicCloseWrite{qc}, true
		}
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

// closeDone closes the connection at once, for a client that is done
// sending, when the socket is TCP and the kernel holds no unread input from
// it: a close with unread input would send a reset instead of a FIN. After
// EOF nothing can be unread; after a DISCONNECT the kernel is asked
// (SIOCINQ), for a client that sent more anyway. It reports false, having
// done nothing, when either is not so or cannot be known (TLS, WebSocket
// and QUIC connections, other systems than Linux): Close then lingers.
func (c *clientConn) closeDone(done uint32) bool {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return false
	}
	if done != doneEOF {
		if n, err := unreadBytes(sc); err != nil || n != 0 {
			return false
		}
	}
	c.closeErr = c.Conn.Close()
	return true
}

// quicCloseWrite gives a QUIC stream connection the CloseWrite of a TCP
// one: closing the stream sends its FIN, and the connection stays up.
type quicCloseWrite struct{ c *quicconn.Conn }

func (q quicCloseWrite) CloseWrite() error { return q.c.Stream.Close() }

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
