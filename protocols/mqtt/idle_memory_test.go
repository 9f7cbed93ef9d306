package mqtt

import (
	"bufio"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
)

// Issue 18 item 5: memory per idle connection, and memory given back when
// the connections close. The numbers are reported (t.Log, b.ReportMetric),
// not asserted as bounds; what is asserted is that closing the connections
// leaves nothing behind in the broker's tables and returns the heap.

// idleConns connects n MQTT 3.1.1 clients (clean session, keep alive 60 s)
// that then stay idle; each has read its CONNACK.
func idleConns(t testing.TB, addr string, n int, prefix string) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, waitFor)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		body := append(append(str("MQTT"), 4, 0x02, 0, 60), str(prefix+strconv.Itoa(i))...)
		if _, err := c.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(waitFor))
		var ack [4]byte
		if _, err := io.ReadFull(bufio.NewReaderSize(c, 16), ack[:]); err != nil || ack != [4]byte{0x20, 2, 0, 0} {
			t.Fatalf("connack %d: % x %v", i, ack, err)
		}
		conns = append(conns, c)
	}
	return conns
}

// memInUse is the heap and the goroutine stacks in use, after a GC.
func memInUse() (heap, stack uint64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse, m.StackInuse
}

// idleConnCost connects n idle clients to tb and returns the heap and stack
// bytes per connection, with the connections (the caller closes them). The
// test's own ends of the connections (a socket each, no goroutine) are
// counted too.
func idleConnCost(t testing.TB, tb *testBroker, n int, prefix string) (heapPer, stackPer float64, conns []net.Conn) {
	h0, s0 := memInUse()
	conns = idleConns(t, tb.Addr("tcp"), n, prefix)
	testwait.For(t, time.Minute, "clients registered", func() bool { return len(tb.Clients()) >= n })
	// Idle connections park after parkAfter: their reader goroutines end.
	testwait.For(t, time.Minute, "connections parked", func() bool { return tb.Stats().ParkedConnections.Load() >= int64(n) })
	h1, s1 := memInUse()
	return float64(int64(h1)-int64(h0)) / float64(n), float64(int64(s1)-int64(s0)) / float64(n), conns
}

// idleLimits lets one address open thousands of connections at once.
func idleLimits(c *Config) {
	c.Limits.MaxConnections = 100_000
	c.Limits.MaxConnectionsPerAddress = 100_000
	c.Limits.ConnectRate = 0
}

func TestIdleConnectionsReleased(t *testing.T) {
	const n = 2000
	tb := startBroker(t, "", idleLimits)
	// Round 0 grows what stays (the client table, pools, stack caches);
	// round 1 must leave nothing more behind.
	var afterRound0 uint64
	for round := 0; round < 2; round++ {
		h0, s0 := memInUse()
		heapPer, stackPer, conns := idleConnCost(t, tb, n, "idle-"+strconv.Itoa(round)+"-")
		t.Logf("round %d: %d idle connections: heap %.0f B, stacks %.0f B, total %.2f KiB per connection",
			round, n, heapPer, stackPer, (heapPer+stackPer)/1024)
		for _, c := range conns {
			_ = c.Close()
		}
		testwait.For(t, time.Minute, "clients gone", func() bool { return len(tb.Clients()) == 0 })
		testwait.For(t, time.Minute, "engine forgot the clients", func() bool { return engineClients(tb, "idle-") == 0 })
		h1, s1 := memInUse()
		t.Logf("round %d: after close: heap %+d B, stacks %+d B", round, int64(h1)-int64(h0), int64(s1)-int64(s0))
		if round == 0 {
			afterRound0 = h1 + s1
			continue
		}
		// Generous: a leak of even 10 % of what the connections held shows.
		if grown := int64(h1+s1) - int64(afterRound0); grown > int64(0.1*(heapPer+stackPer)*n)+256<<10 {
			t.Fatalf("round %d: %d B more held than after round 0, %d connections closed", round, grown, n)
		}
	}
}

// BenchmarkIdleConnectionMemory reports the heap and stack bytes the broker
// holds per idle MQTT 3.1.1 connection (1000 of them per iteration).
func BenchmarkIdleConnectionMemory(b *testing.B) {
	const n = 1000
	tb := startBroker(b, "-", idleLimits)
	var heap, stack float64
	for i := 0; i < b.N; i++ {
		heapPer, stackPer, conns := idleConnCost(b, tb, n, "bench-"+strconv.Itoa(i)+"-")
		heap += heapPer
		stack += stackPer
		for _, c := range conns {
			_ = c.Close()
		}
		testwait.For(b, time.Minute, "clients gone", func() bool { return len(tb.Clients()) == 0 })
	}
	b.ReportMetric(heap/float64(b.N), "heapB/conn")
	b.ReportMetric(stack/float64(b.N), "stackB/conn")
	b.ReportMetric((heap+stack)/float64(b.N), "B/conn")
}

// engineClients counts the engine's clients whose id starts with prefix.
func engineClients(tb *testBroker, prefix string) int {
	n := 0
	for id := range tb.srv.Clients.GetAll() {
		if strings.HasPrefix(id, prefix) {
			n++
		}
	}
	return n
}
