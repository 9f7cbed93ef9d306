package mqtt

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
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
	f.Fuzz(func(t *testing.T, data, cuts []byte, maxPacket uint16) {
		limit := int(maxPacket)
		// Arbitrary bytes: no panic, offsets within the chunk.
		c := newClientConn(nil, limit)
		for _, chunk := range secCut(data, cuts) {
			k, over := c.scan(chunk)
			if k < 0 || k > len(chunk) {
				t.Fatalf("scan offset %d outside a chunk of %d bytes", k, len(chunk))
			}
			if over {
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
			if k, over := c.scan(chunk); over {
				t.Fatalf("valid stream (limit %d) flagged oversized at offset %d of a chunk", limit, k)
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
