package mqtt

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// secQuietTB lets the broker log from its goroutines while the fuzz target
// runs (testing.F methods may not be called then).
type secQuietTB struct{ testing.TB }

func (secQuietTB) Helper()             {}
func (secQuietTB) Log(...any)          {}
func (secQuietTB) Logf(string, ...any) {}

// FuzzListener writes each input raw to a fresh TCP connection of one
// broker, optionally after a valid CONNECT. The broker must never panic and
// must keep serving normal clients.
func FuzzListener(f *testing.F) {
	f.Add([]byte{}, false)
	f.Add(secConnectPkt(5, "f", "", ""), false)
	f.Add(secPublishPkt(4, "a/b", 1, 1, []byte("x")), true)
	f.Add([]byte{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, false)
	f.Add([]byte{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x00}, false) // issue 17: 268,435,455 from 5 length bytes
	f.Add([]byte{0x30, 0x80, 0x00}, true)                          // non-minimal zero
	tb := startBroker(secQuietTB{f}, "", func(c *Config) {
		c.Limits.MaxPacketSize = 64 << 10
		c.Limits.ConnectTimeout = 2 * time.Second
	})
	f.Cleanup(func() { secDrain(tb) })
	addr := tb.Addr("tcp")
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, data []byte, withConnect bool) {
		c, err := net.DialTimeout("tcp", addr, secWait)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		if withConnect {
			_, _ = c.Write(secConnectPkt(5, fmt.Sprintf("fuzz-%d", n.Load()), "", ""))
		}
		_ = c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		_, _ = c.Write(data)
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, _ = io.Copy(io.Discard, c)
		if n.Add(1)%50 == 1 {
			secFuzzRoundTrip(t, addr)
		}
	})
}

// secFuzzRoundTrip connects a normal client that subscribes and receives
// its own publish.
func secFuzzRoundTrip(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, secWait)
	if err != nil {
		t.Fatalf("broker stopped serving: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(secWait))
	r := bufio.NewReader(c)
	id := fmt.Sprintf("check-%d", time.Now().UnixNano())
	topic := "fuzzcheck/" + id
	_, _ = c.Write(secConnectPkt(4, id, "", ""))
	if h, b, err := secReadPkt(r); err != nil || h != 0x20 || len(b) < 2 || b[1] != 0 {
		t.Fatalf("broker no longer accepts clients: %#x % x %v", h, b, err)
	}
	_, _ = c.Write(secSubscribePkt(4, 1, topic, 0))
	if h, _, err := secReadPkt(r); err != nil || h != 0x90 {
		t.Fatalf("no SUBACK: %#x %v", h, err)
	}
	_, _ = c.Write(secPublishPkt(4, topic, 0, 0, []byte(id)))
	for {
		h, b, err := secReadPkt(r)
		if err != nil {
			t.Fatalf("own publish not received: %v", err)
		}
		if h&0xF0 == 0x30 && bytes.HasSuffix(b, []byte(id)) {
			return
		}
	}
}

// FuzzClientConnScan feeds arbitrary bytes, cut at arbitrary points, to the
// framing scanner of clientConn; it must never panic. Valid packets built
// from the same input must never be flagged oversized.
func FuzzClientConnScan(f *testing.F) {
	f.Add(secConnectPkt(5, "c", "u", "p"), []byte{1, 2, 3}, uint16(128))
	f.Add(append(secConnectPkt(4, "c", "", ""), secPublishPkt(4, "t", 1, 1, make([]byte, 200))...), []byte{7}, uint16(256))
	f.Add([]byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, []byte{}, uint16(16))
	f.Add([]byte{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x00}, []byte{1}, uint16(1024))
	f.Fuzz(func(t *testing.T, data, cuts []byte, maxPacket uint16) {
		limit := int(maxPacket)
		// Arbitrary bytes: no panic, offsets within the chunk.
		c := newClientConn(nil, limit)
		for _, chunk := range secCut(data, cuts) {
			k, err := c.scan(chunk)
			if k < 0 || k > len(chunk) {
				t.Fatalf("scan offset %d outside a chunk of %d bytes", k, len(chunk))
			}
			if err != nil {
				break
			}
		}

		// A valid stream: CONNECT v5, then PUBLISH packets each at most
		// limit bytes, carved from data.
		if limit < 32 {
			limit = 32
		}
		stream := secConnectPkt(5, "fuzz", "", "")
		if len(stream) > limit {
			return
		}
		var pkts [][]byte
		for rest := data; len(rest) > 0; {
			room := limit - 16 // fixed header + topic + id, with margin
			take := min(len(rest), room, 1+int(rest[0]))
			p := secPublishPkt(5, "t/x", 1, 1, rest[:take])
			if len(p) > limit {
				t.Fatalf("test built a %d-byte packet over %d", len(p), limit)
			}
			pkts = append(pkts, p)
			rest = rest[take:]
		}
		for _, p := range pkts {
			stream = append(stream, p...)
		}
		c = newClientConn(nil, limit)
		for _, chunk := range secCut(stream, cuts) {
			if k, err := c.scan(chunk); err != nil {
				t.Fatalf("valid stream (limit %d) refused at offset %d of a chunk: %v", limit, k, err)
			}
		}
		if c.state != frameHeader {
			t.Fatalf("scanner not at a packet boundary after a whole stream (state %d)", c.state)
		}
		if v := c.version.Load(); v != 5 {
			t.Fatalf("protocol version %d from CONNECT, want 5", v)
		}
	})
}

// secCut splits b into chunks whose sizes come from cuts (cycled; 0 means 1).
func secCut(b, cuts []byte) [][]byte {
	var out [][]byte
	for i := 0; len(b) > 0; i++ {
		n := len(b)
		if len(cuts) > 0 {
			n = max(1, int(cuts[i%len(cuts)]))
		}
		n = min(n, len(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// FuzzRemainingLength drives the two decoders of the remaining length, the
// engine's packets.DecodeLength and the listener framing (clientConn.scan,
// fed in arbitrary cuts), with the same bytes, and checks that they agree
// with each other and with MQTT's rule: at most 4 bytes, minimal encoding
// [MQTT-1.5.5-1], refused before any of the body when over maxPacket.
func FuzzRemainingLength(f *testing.F) {
	for _, seed := range [][]byte{
		{0x00}, {0x7F}, {0x80, 0x01}, {0xFF, 0x7F}, {0x80, 0x80, 0x01},
		{0xFF, 0xFF, 0xFF, 0x7F},                             // 268,435,455: the largest
		{0x80, 0x00}, {0xFF, 0x00}, {0xFF, 0xFF, 0xFF, 0x00}, // not minimal
		{0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, {0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x00}, // over-long (issue 17)
		{0xFF, 0xFF}, // truncated
	} {
		f.Add(seed, []byte{1}, uint32(1<<20))
	}
	f.Fuzz(func(t *testing.T, data, cuts []byte, maxPacket uint32) {
		n, bu, derr := packets.DecodeLength(bytes.NewReader(data))
		complete := !errors.Is(derr, io.EOF)
		if derr == nil {
			if bu > 4 || n > 268435455 {
				t.Fatalf("DecodeLength(% x) = %d in %d bytes: out of range", data, n, bu)
			}
			if enc := secVarint(n); !bytes.Equal(enc, data[:bu]) {
				t.Fatalf("DecodeLength(% x) accepted %d, whose minimal encoding is % x", data[:bu], n, enc)
			}
		} else if complete && !errors.Is(derr, packets.ErrMalformedVariableByteInteger) {
			t.Fatalf("DecodeLength(% x): unexpected error %v", data, derr)
		}

		// The same length after a PUBLISH type byte, through the framing.
		limit := int(min(maxPacket, 1<<30))
		stream := append([]byte{0x30}, data...)
		if derr == nil {
			stream = stream[:1+bu] // only the header: the body is not needed
		}
		c := newClientConn(nil, limit)
		var serr error
		for _, chunk := range secCut(stream, cuts) {
			k, err := c.scan(chunk)
			if k < 0 || k > len(chunk) {
				t.Fatalf("scan offset %d outside a chunk of %d bytes", k, len(chunk))
			}
			if err != nil {
				serr = err
				break
			}
		}
		switch {
		case derr == nil && limit > 0 && 1+bu+n > limit:
			if !errors.Is(serr, errPacketTooLarge) {
				t.Fatalf("length %d over max %d: scan %v, want errPacketTooLarge", n, limit, serr)
			}
		case derr == nil:
			if serr != nil {
				t.Fatalf("valid length % x (%d): scan refused it: %v", data[:bu], n, serr)
			}
			if c.remaining != n {
				t.Fatalf("scan read length %d, DecodeLength %d", c.remaining, n)
			}
		case complete:
			if !errors.Is(serr, errMalformedLength) {
				t.Fatalf("malformed length % x: scan %v, want errMalformedLength", data, serr)
			}
		default: // truncated: neither may refuse yet
			if serr != nil {
				t.Fatalf("truncated length % x: scan refused it: %v", data, serr)
			}
		}
	})
}
