// SPDX-License-Identifier: MIT

package mqtt

import (
	"errors"
	"io"
	"sync"

	"github.com/mochi-mqtt/server/v2/packets"
)

// fieldgate patch (idle memory): a client's read buffer is held only while
// the client sends more than fits a small buffer in the client struct. It
// was a bufio.Reader of ClientNetReadBufferSize bytes per connection, held
// for the connection's life even when the client sends a PINGREQ a minute.

// connReaderSmall is the size of the buffer every connection keeps: a
// PINGREQ, an acknowledgement or a small PUBLISH fits.
const connReaderSmall = 64

var errNegativeRead = errors.New("mqtt: reader returned negative count from Read")

// connReader is a buffered reader (the part of bufio.Reader the client
// uses) with two buffers: a small one of its own, and a large one of size
// bytes taken from a pool when a read fills the small one (the client sends
// in bursts) and given back once a read leaves the large one partly empty
// and it has been read out (the burst is over). Only the client's read loop
// uses it.
type connReader struct {
	rd   io.Reader
	buf  []byte // small[:] or big, the one the last read filled
	big  *[]byte
	size int
	r, w int
	err  error
	// fieldgate patch (parked reads)
	cl           *Client // set when the client parks: its read deadline is extended mid-packet
	readDeadline int64   // when the client's keep alive runs out, Unix ns (0: never)
	boundary     bool    // waitInput is filling: no packet has begun
	fresh        bool    // waitInput read what is buffered from the network
	shortWait    bool    // the read deadline in force is the wait before parking

	wantBig bool // the last read filled its buffer: more is probably waiting
	small   [connReaderSmall]byte
}

// readBufPool holds the large read buffers (all of one size per server).
var readBufPool sync.Pool

// newConnReader returns a reader of rd whose large buffer has size bytes.
func newConnReader(rd io.Reader, size int) *connReader {
	if size < connReaderSmall {
		size = connReaderSmall
	}
	b := &connReader{rd: rd, size: size}
	b.buf = b.small[:]
	return b
}

// Buffered returns the number of bytes that can be read without a read
// from the connection.
func (b *connReader) Buffered() int { return b.w - b.r }

// ReadByte reads one byte.
func (b *connReader) ReadByte() (byte, error) {
	for b.r == b.w {
		if b.err != nil {
			return 0, b.readErr()
		}
		b.fill()
	}
	c := b.buf[b.r]
	b.r++
	return c, nil
}

// Read reads into p what is buffered, or reads from the connection: into
// p directly when p is at least as large as the large buffer.
func (b *connReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		if b.Buffered() > 0 {
			return 0, nil
		}
		return 0, b.readErr()
	}
	if b.r == b.w {
		if b.err != nil {
			return 0, b.readErr()
		}
		if len(p) >= b.size {
			n, err := b.rd.Read(p)
			for n == 0 && err != nil && b.cl != nil && b.cl.extendReadDeadline(err) {
				n, err = b.rd.Read(p) // fieldgate patch (parked reads): mid-packet
			}
			if n < 0 {
				panic(errNegativeRead)
			}
			return n, err
		}
		b.fill()
		if b.r == b.w {
			return 0, b.readErr()
		}
	}
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}

// fill reads into an empty buffer: the large one while the client sends
// in bursts, the small one otherwise (the large one goes back to the pool).
func (b *connReader) fill() {
	if b.big != nil && !b.wantBig {
		readBufPool.Put(b.big)
		b.big = nil
	}
	if b.big == nil && b.wantBig {
		if p, ok := readBufPool.Get().(*[]byte); ok && len(*p) == b.size {
			b.big = p
		} else {
			p := make([]byte, b.size)
			b.big = &p
		}
	}
	b.buf = b.small[:]
	if b.big != nil {
		b.buf = *b.big
	}
	b.r, b.w = 0, 0
	for i := 0; i < 100; i++ {
		n, err := b.rd.Read(b.buf)
		if n < 0 {
			panic(errNegativeRead)
		}
		b.w = n
		if err != nil && n == 0 && !b.boundary && b.cl != nil && b.cl.extendReadDeadline(err) {
			continue // fieldgate patch (parked reads)
		}
		if err != nil {
			b.err = err
			b.wantBig = false
			return
		}
		if n > 0 {
			b.wantBig = n == len(b.buf)
			return
		}
	}
	b.err = io.ErrNoProgress
}

// waitInput waits, with nothing buffered, for the first bytes of the next
// packet: the read deadline in force is not extended (a timeout here lets
// the connection park). It returns the read error, if nothing was read.
// fieldgate patch (parked reads).
func (b *connReader) waitInput() error {
	if b.r != b.w {
		return nil
	}
	if b.err != nil {
		return b.readErr()
	}
	b.boundary = true
	b.fill()
	b.boundary = false
	if b.r == b.w {
		return b.readErr()
	}
	b.fresh = true
	return nil
}

// takeFresh reports whether what is buffered was read by waitInput, and
// clears that. fieldgate patch (parked reads; cross-connection order).
func (b *connReader) takeFresh() bool {
	f := b.fresh
	b.fresh = false
	return f
}

// readErr returns the pending read error and clears it.
func (b *connReader) readErr() error {
	err := b.err
	b.err = nil
	return err
}

// readAndHandle reads the body of the packet whose fixed header was read and
// processes it. fieldgate patch (idle memory): not inlined, so the packet
// (~800 bytes, twice: the read one and the copy handed on) is on the stack
// only while a packet is handled; Client.Read's frame, on the stack of every
// idle connection while it waits for the network, shrank from 1656 bytes,
// and the stack of a connection that goes idle after traffic shrinks back
// to 4 KiB.
//
//go:noinline
func (cl *Client) readAndHandle(packetHandler ReadFn, fh *packets.FixedHeader) error {
	pk, err := cl.ReadPacket(fh)
	if err != nil {
		return err
	}
	return cl.handle(packetHandler, pk) // Process inbound packet.
}
