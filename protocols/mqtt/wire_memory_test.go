package mqtt

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/membudget"
)

// issue17Header is the CONNECT fixed header of issue 17, item 1: a 5-byte
// remaining length whose last byte adds nothing, which the engine decoded
// to 268,435,455 and allocated 256 MiB for.
var issue17Header = []byte{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x00}

// wireMaxGrowthMiB bounds what the attacks below may cost: before the fix
// one connection cost 256 MiB and eight 2 GiB.
const wireMaxGrowthMiB = 16

// TestWireMemoryBombHeader sends the exact 7-byte header of issue 17 on one
// and on eight fresh connections over every listener (TCP, TLS, WebSocket,
// QUIC). Every connection must be closed, and the broker must allocate
// almost nothing for them: the bytes allocated while the attack ran, and
// the heap in use after it, grow by less than 16 MiB.
func TestWireMemoryBombHeader(t *testing.T) {
	budget := membudget.New(256 << 20)
	tb, pki := wireStart(t, nil, budget, nil)
	for _, transport := range []string{"tcp", "tls", "ws", "quic"} {
		for _, n := range []int{1, 8} {
			t.Run(fmt.Sprintf("%s/%d", transport, n), func(t *testing.T) {
				conns := make([]net.Conn, n)
				for i := range conns {
					conns[i] = wireDial(t, tb, pki, transport)
				}
				before := wireReadMem()
				for _, c := range conns {
					if _, err := c.Write(issue17Header); err != nil {
						t.Fatalf("write: %v", err)
					}
				}
				for _, c := range conns {
					if got := wireClosed(t, c, wireWait); len(got) != 0 {
						t.Fatalf("got % x before the close, want nothing (no CONNECT yet)", got)
					}
				}
				inuse, allocated := wireReadMem().since(before)
				t.Logf("%d × issue-17 header over %s: allocated %.2f MiB, heap in use %+.2f MiB", n, transport, allocated, inuse)
				if allocated > wireMaxGrowthMiB || inuse > wireMaxGrowthMiB {
					t.Fatalf("allocated %.1f MiB, heap in use grew %.1f MiB: over %d MiB", allocated, inuse, wireMaxGrowthMiB)
				}
			})
		}
	}
	if n := tb.Stats().PacketBytesReading.Load(); n != 0 {
		t.Fatalf("%d bytes of packet bodies still counted", n)
	}
}

// TestWireMemoryBombAfterConnect is the second half of item 1: a client
// that sent a valid CONNECT with keep alive 0 (so no deadline applies to it
// any more) and then announces a huge packet.
func TestWireMemoryBombAfterConnect(t *testing.T) {
	t.Run("issue-17 length after CONNECT is refused", func(t *testing.T) {
		tb, pki := wireStart(t, nil, nil, nil)
		conns := make([]net.Conn, 8)
		for i := range conns {
			conns[i] = wireDial(t, tb, pki, "tcp")
			wireConnect(t, conns[i], bufio.NewReader(conns[i]), 4, fmt.Sprintf("ka0-%d", i), 0, "", "")
		}
		before := wireReadMem()
		for _, c := range conns {
			if _, err := c.Write([]byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x00}); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range conns {
			wireClosed(t, c, wireWait)
		}
		inuse, allocated := wireReadMem().since(before)
		t.Logf("8 × PUBLISH with the issue-17 length after CONNECT: allocated %.2f MiB, heap in use %+.2f MiB", allocated, inuse)
		if allocated > wireMaxGrowthMiB || inuse > wireMaxGrowthMiB {
			t.Fatalf("allocated %.1f MiB, heap in use grew %.1f MiB", allocated, inuse)
		}
	})

	// With a large max_packet_size (16 MiB), a well-formed length just
	// under it passes the header check; the body must then cost what has
	// arrived, not what was announced, for as long as the client holds the
	// connection open (past the connect timeout: keep alive 0). The engine
	// test TestReadPacketBodyFollowsBytes does the same for 268,435,455.
	t.Run("memory follows the bytes received", func(t *testing.T) {
		const n, sent, bigPacket = 8, 100_000, 16 << 20
		budget := membudget.New(256 << 20)
		tb, pki := wireStart(t, nil, budget, func(c *Config) {
			c.Limits.MaxPacketSize = bigPacket
			c.Limits.ConnectTimeout = time.Second
		})
		conns := make([]net.Conn, n)
		for i := range conns {
			conns[i] = wireDial(t, tb, pki, "tcp")
			wireConnect(t, conns[i], bufio.NewReader(conns[i]), 4, fmt.Sprintf("slow-%d", i), 0, "", "")
		}
		before := wireReadMem()
		for _, c := range conns {
			// The largest packet max_packet_size allows: 1 type byte, 4
			// length bytes, the rest (topic "x" and the payload) announced.
			pkt := append(append([]byte{0x30}, secVarint(bigPacket-5)...), 0x00, 0x01, 'x')
			pkt = append(pkt, make([]byte, sent-3)...)
			if _, err := c.Write(pkt); err != nil {
				t.Fatal(err)
			}
		}
		// Each body buffer starts at 64 KiB and doubles as it fills: after
		// 100,000 bytes, 128 KiB each.
		want := int64(n * 128 << 10)
		reading := &tb.Stats().PacketBytesReading
		secEventually(t, wireWait, fmt.Sprintf("%d bytes of bodies counted", want), func() bool { return reading.Load() == want })
		for _, c := range conns[:1] {
			wireOpen(t, c, 1500*time.Millisecond) // past the connect timeout
		}
		inuse, allocated := wireReadMem().since(before)
		t.Logf("%d clients announcing 16 MiB, %d sent each: bodies count %d KiB, allocated %.2f MiB, heap in use %+.2f MiB",
			n, sent, reading.Load()>>10, allocated, inuse)
		if allocated > wireMaxGrowthMiB || inuse > wireMaxGrowthMiB {
			t.Fatalf("allocated %.1f MiB, heap in use grew %.1f MiB for %d × %d bytes sent", allocated, inuse, n, sent)
		}
		for _, c := range conns {
			_ = c.Close()
		}
		secEventually(t, wireWait, "bodies released", func() bool { return reading.Load() == 0 })
	})
}

// TestWireRemainingLengthRefused: a remaining length that is not minimal
// (`80 00` is 0 in two bytes) or longer than 4 bytes is malformed
// [MQTT-1.5.5-1]: the connection is closed at that byte, MQTT 5 clients
// first get DISCONNECT 0x81.
func TestWireRemainingLengthRefused(t *testing.T) {
	tb, pki := wireStart(t, nil, nil, nil)
	for _, tc := range []struct {
		name  string
		level byte // 0: no CONNECT first
		send  []byte
	}{
		{"CONNECT 80 00", 0, []byte{0x10, 0x80, 0x00}},
		{"CONNECT 5 bytes", 0, []byte{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}},
		{"v5 PINGREQ 80 00", 5, []byte{0xC0, 0x80, 0x00}},
		{"v5 PUBLISH FF 00", 5, []byte{0x30, 0xFF, 0x00}},
		{"v5 SUBSCRIBE 80 80 80 00", 5, []byte{0x82, 0x80, 0x80, 0x80, 0x00}},
		{"v5 PUBLISH 5 bytes", 5, []byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}},
		{"v4 PINGREQ 80 00", 4, []byte{0xC0, 0x80, 0x00}},
		{"v4 PUBLISH issue-17 length", 4, []byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x00}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, transport := range []string{"tcp", "ws"} {
				c := wireDial(t, tb, pki, transport)
				r := bufio.NewReader(c)
				if tc.level != 0 {
					wireConnect(t, c, r, tc.level, secID("len"), 60, "", "")
				}
				if _, err := c.Write(tc.send); err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(wireWait))
				h, body, err := secReadPkt(r)
				switch {
				case tc.level == 5 && (err != nil || h != 0xE0 || len(body) < 1 || body[0] != 0x81):
					t.Fatalf("%s: got %#x % x %v, want DISCONNECT 0x81", transport, h, body, err)
				case tc.level != 5 && err == nil:
					t.Fatalf("%s: got %#x % x, want the connection closed", transport, h, body)
				}
				wireClosed(t, c, wireWait)
			}
		})
	}
}

// TestWireOversizeRefusedBeforeBody: a packet of max_packet_size+1 bytes is
// refused when its fixed header arrives, before any of its body is sent;
// one of exactly max_packet_size bytes is accepted.
func TestWireOversizeRefusedBeforeBody(t *testing.T) {
	const limit = 64 << 10
	tb, pki := wireStart(t, nil, nil, func(c *Config) { c.Limits.MaxPacketSize = limit })
	// A PUBLISH of limit+1 bytes: 1 type byte + 3 length bytes + body.
	header := append([]byte{0x32}, secVarint(limit+1-4)...)
	if len(header) != 4 {
		t.Fatalf("header % x", header)
	}
	for _, transport := range []string{"tcp", "tls", "ws", "quic"} {
		t.Run(transport, func(t *testing.T) {
			c := wireDial(t, tb, pki, transport)
			r := bufio.NewReader(c)
			wireConnect(t, c, r, 5, secID("over"), 60, "", "")
			start := time.Now()
			if _, err := c.Write(header); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(wireWait))
			h, body, err := secReadPkt(r)
			if err != nil || h != 0xE0 || len(body) < 1 || body[0] != 0x95 {
				t.Fatalf("got %#x % x %v, want DISCONNECT 0x95", h, body, err)
			}
			wireClosed(t, c, wireWait)
			t.Logf("refused %s after the 4-byte header alone", time.Since(start).Round(time.Millisecond))
		})
	}
	t.Run("exactly max_packet_size", func(t *testing.T) {
		c := wireDial(t, tb, pki, "tcp")
		r := bufio.NewReader(c)
		wireConnect(t, c, r, 5, secID("max"), 60, "", "")
		// topic "t" (3) + packet id (2) + properties (1) + payload
		pkt := secPublishPkt(5, "t", 1, 9, make([]byte, limit-4-6))
		if len(pkt) != limit {
			t.Fatalf("test packet is %d bytes, want %d", len(pkt), limit)
		}
		if _, err := c.Write(pkt); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(wireWait))
		if h, body, err := secReadPkt(r); err != nil || h != 0x40 {
			t.Fatalf("got %#x % x %v, want PUBACK", h, body, err)
		}
	})
}

// TestWireLargePublish: reading bodies incrementally does not hurt a
// legitimate large packet: a 1 MiB publish with max_packet_size 2 MiB
// arrives intact over TCP and WebSocket, and no body bytes stay counted
// afterwards.
func TestWireLargePublish(t *testing.T) {
	budget := membudget.New(256 << 20)
	tb, pki := wireStart(t, nil, budget, func(c *Config) { c.Limits.MaxPacketSize = 2 << 20 })
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	for _, transport := range []string{"tcp", "ws"} {
		t.Run(transport, func(t *testing.T) {
			sub := wireDial(t, tb, pki, "tcp")
			sr := bufio.NewReader(sub)
			wireConnect(t, sub, sr, 4, secID("bigsub"), 60, "", "")
			topic := "big/" + transport
			if _, err := sub.Write(secSubscribePkt(4, 1, topic, 1)); err != nil {
				t.Fatal(err)
			}
			_ = sub.SetReadDeadline(time.Now().Add(wireWait))
			if h, _, err := secReadPkt(sr); err != nil || h != 0x90 {
				t.Fatalf("SUBACK: %#x %v", h, err)
			}

			pub := wireDial(t, tb, pki, transport)
			pr := bufio.NewReader(pub)
			wireConnect(t, pub, pr, 4, secID("bigpub"), 60, "", "")
			if _, err := pub.Write(secPublishPkt(4, topic, 1, 7, payload)); err != nil {
				t.Fatal(err)
			}
			_ = pub.SetReadDeadline(time.Now().Add(wireWait))
			if h, _, err := secReadPkt(pr); err != nil || h != 0x40 {
				t.Fatalf("PUBACK: %#x %v", h, err)
			}
			_ = sub.SetReadDeadline(time.Now().Add(wireWait))
			h, body, err := secReadPkt(sr)
			if err != nil || h&0xF0 != 0x30 || !bytes.HasSuffix(body, payload) || len(body) != 2+len(topic)+2+len(payload) {
				t.Fatalf("subscriber got %#x, %d bytes, %v; want the 1 MiB publish", h, len(body), err)
			}
		})
	}
	secEventually(t, wireWait, "bodies released", func() bool { return tb.Stats().PacketBytesReading.Load() == 0 })
}

// TestWirePacketBudgetRefuses: a body the memory budget cannot take closes
// its connection and is counted; other clients go on.
func TestWirePacketBudgetRefuses(t *testing.T) {
	budget := membudget.New(512 << 10)
	acct := budget.Account(packetAccount)
	tb, pki := wireStart(t, nil, budget, func(c *Config) { c.Limits.MaxPacketSize = 2 << 20 })
	c := wireDial(t, tb, pki, "tcp")
	wireConnect(t, c, bufio.NewReader(c), 4, secID("budget"), 60, "", "")
	if _, err := c.Write(secPublishPkt(4, "b/1", 1, 1, make([]byte, 1<<20))); err != nil {
		t.Logf("write: %v (closed while writing)", err)
	}
	wireClosed(t, c, wireWait)
	var refused uint64
	for _, s := range budget.Stats() {
		if s.Name == packetAccount {
			refused = s.Refused
		}
	}
	if refused == 0 {
		t.Fatal("no refusal counted on mqtt_packets")
	}
	headroom := packetHeadroom(512<<10, 2<<20)
	secEventually(t, wireWait, "mqtt_packets back to its headroom", func() bool { return acct.Used() == headroom })

	ok := wireDial(t, tb, pki, "tcp")
	r := bufio.NewReader(ok)
	wireConnect(t, ok, r, 4, secID("small"), 60, "", "")
	if _, err := ok.Write(secPublishPkt(4, "b/2", 1, 2, make([]byte, 100<<10))); err != nil {
		t.Fatal(err)
	}
	_ = ok.SetReadDeadline(time.Now().Add(wireWait))
	if h, _, err := secReadPkt(r); err != nil || h != 0x40 {
		t.Fatalf("PUBACK for a 100 KiB publish: %#x %v", h, err)
	}
}

// TestWirePacketHeadroom: when other holders (offline queues, MQTT-SN and
// CoAP peers) have taken all the memory budget they can, packet bodies
// still have the headroom mqtt_packets reserved at start: a 1 MiB publish
// goes through.
func TestWirePacketHeadroom(t *testing.T) {
	budget := membudget.New(64 << 20)
	tb, pki := wireStart(t, nil, budget, func(c *Config) { c.Limits.MaxPacketSize = 2 << 20 })
	other := budget.Account("test_other")
	for n := int64(1 << 20); n > 0; n /= 2 {
		for other.Reserve(n) {
		}
	}
	t.Logf("budget %d MiB: mqtt_packets holds %d MiB of headroom, the rest is taken (%d bytes free)",
		budget.Limit()>>20, budget.Account(packetAccount).Used()>>20, budget.Limit()-budget.Used())
	c := wireDial(t, tb, pki, "tcp")
	r := bufio.NewReader(c)
	wireConnect(t, c, r, 4, secID("headroom"), 60, "", "")
	if _, err := c.Write(secPublishPkt(4, "h/1", 1, 3, make([]byte, 1<<20))); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wireWait))
	if h, _, err := secReadPkt(r); err != nil || h != 0x40 {
		t.Fatalf("PUBACK for 1 MiB with the budget taken by others: %#x %v", h, err)
	}
}

// TestPacketPoolAccounting: bodies draw on the headroom first, then on the
// budget; whatever the order of releases, the budget gets back exactly what
// was taken from it beyond the headroom, and close returns the headroom.
func TestPacketPoolAccounting(t *testing.T) {
	budget := membudget.New(1 << 20)
	var reading atomic.Int64
	p := newPacketPool(budget, 64<<10, &reading) // headroom: a quarter, 256 KiB
	acct := budget.Account(packetAccount)
	if p.headroom != 256<<10 || acct.Used() != 256<<10 {
		t.Fatalf("headroom %d, account %d", p.headroom, acct.Used())
	}
	for i := range 2 { // the second goes beyond the headroom
		if !p.Reserve(200 << 10) {
			t.Fatalf("reserve %d refused", i)
		}
	}
	if acct.Used() != 456<<10 || reading.Load() != 400<<10 {
		t.Fatalf("account %d, reading %d", acct.Used(), reading.Load())
	}
	if p.Reserve(700 << 10) { // 456 + 700 KiB > 1 MiB
		t.Fatal("reserve over the budget accepted")
	}
	p.Release(200 << 10)
	p.Release(200 << 10)
	if acct.Used() != 256<<10 || reading.Load() != 0 {
		t.Fatalf("after release: account %d, reading %d", acct.Used(), reading.Load())
	}
	p.close()
	if acct.Used() != 0 {
		t.Fatalf("after close: account %d", acct.Used())
	}
	// No budget: counts only, never refuses.
	q := newPacketPool(nil, 1<<20, &reading)
	if !q.Reserve(1<<30) || reading.Load() != 1<<30 {
		t.Fatal("unlimited pool refused or did not count")
	}
	q.Release(1 << 30)
	q.close()
}
