package mqttsn

import (
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/membudget"
	"github.com/fieldgate/fieldgate/internal/testwait"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// heapAndGoroutines returns the live heap (after GC) and the number of
// goroutines.
func heapAndGoroutines() (heap int64, goroutines int) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc + m.StackInuse), runtime.NumGoroutine()
}

// flood sends one CONNECT from each of n fresh UDP sockets on ip (so from n
// distinct source ports) and returns the sockets, open until the test ends.
func flood(t *testing.T, gw *net.UDPAddr, ip net.IP, n int) []*net.UDPConn {
	t.Helper()
	conns := make([]*net.UDPConn, 0, n)
	for i := range n {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		conns = append(conns, c)
		b, err := Encode(nil, Packet{Type: TypeConnect, Flags: Flags{CleanSession: true}, ProtocolID: 1, Duration: 600, ClientID: fmt.Sprintf("flood-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteToUDP(b, gw); err != nil {
			t.Fatal(err)
		}
		if i%256 == 255 {
			// Let the gateway's socket buffer drain a little: the bound
			// must hold for datagrams that arrive, not for the kernel.
			time.Sleep(time.Millisecond) // kept sleep: paces the flood, nothing to observe
		}
	}
	return conns
}

// connackOf reads the CONNACK a flooding socket got, if any.
func connackOf(c *net.UDPConn, wait time.Duration) (ReturnCode, bool) {
	buf := make([]byte, 64)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	n, err := c.Read(buf)
	if err != nil {
		return 0, false
	}
	p, err := Decode(buf[:n])
	if err != nil || p.Type != TypeConnack {
		return 0, false
	}
	return p.ReturnCode, true
}

// settle waits until the gateway has read what it will read of a flood and
// every admitted device has its session (or was refused by the broker): its
// counters stay unchanged for a quiet window of 200 ms.
func settle(t *testing.T, g *Gateway) {
	t.Helper()
	const quiet = 200 * time.Millisecond
	last, since := int64(-1), time.Now()
	testwait.For(t, 30*time.Second, "the gateway to settle", func() bool {
		g.mu.Lock()
		admitted := int64(g.admitted)
		g.mu.Unlock()
		n := g.Stats().DatagramsIn*1_000_000 + g.Stats().ClientsConnected*1000 + admitted
		if n != last {
			last, since = n, time.Now()
			return false
		}
		return time.Since(since) >= quiet
	})
}

// TestConnectFlood is issue 17 item 7: one CONNECT datagram per source port
// held ~75 KB and 4 goroutines each, without bound (9,344 of them: 729 MiB
// and 37k goroutines). Now the devices are capped per address, in all, and
// by the memory budget; the refused get CONNACK 0x01; and a device from
// another address still connects.
func TestConnectFlood(t *testing.T) {
	const datagrams = 5000
	tests := []struct {
		name    string
		cfg     func(*Config)
		budget  int64 // bytes; 0: none
		cap     int   // most sessions the flood may hold
		otherOK bool  // a device from 127.0.0.2 still connects
	}{
		{"defaults: 16 per address", nil, 0, 16, true},
		{"max_clients", func(c *Config) { c.MaxClientsPerAddress = 0; c.MaxClients = 300 }, 0, 300, false},
		{"memory budget", func(c *Config) { c.MaxClientsPerAddress = 0 }, 200 * sessionCost, 200, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var budget *membudget.Budget
			if tc.budget > 0 {
				budget = membudget.New(tc.budget)
			}
			e := startEnvOpts(t, nil, tc.cfg, WithBudget(budget))
			heap0, g0 := heapAndGoroutines()
			start := time.Now()
			conns := flood(t, e.g.Addr().(*net.UDPAddr), net.IPv4(127, 0, 0, 1), datagrams)
			settle(t, e.g)
			heap1, g1 := heapAndGoroutines()
			s := e.g.Stats()
			t.Logf("%d CONNECTs (%d read) in %s: %d sessions, %d refused; heap+stacks %+.1f MiB, goroutines %+d",
				datagrams, s.DatagramsIn, time.Since(start).Round(time.Millisecond), s.ClientsConnected,
				s.Drops[DropSessionLimit], float64(heap1-heap0)/(1<<20), g1-g0)
			if s.ClientsConnected > int64(tc.cap) || s.ClientsConnected == 0 {
				t.Errorf("%d sessions, want 1..%d", s.ClientsConnected, tc.cap)
			}
			if s.Drops[DropSessionLimit] == 0 {
				t.Error("no CONNECT refused")
			}
			// Generous bounds: 4 goroutines and well under 128 KB a session.
			if g1-g0 > 4*tc.cap+16 {
				t.Errorf("goroutines grew by %d for at most %d sessions", g1-g0, tc.cap)
			}
			if limit := int64(tc.cap)*128<<10 + 8<<20; heap1-heap0 > limit {
				t.Errorf("heap grew by %.1f MiB, bound %.1f MiB", float64(heap1-heap0)/(1<<20), float64(limit)/(1<<20))
			}
			if budget != nil {
				if used := budget.Used(); used > tc.budget {
					t.Errorf("budget used %d > %d", used, tc.budget)
				}
			}
			// The last sockets were refused: CONNACK 0x01 (congestion).
			refused := 0
			for _, c := range conns[len(conns)-20:] {
				if rc, ok := connackOf(c, time.Second); ok {
					if rc != RejectedCongestion {
						t.Fatalf("a refused CONNECT got CONNACK 0x%02x, want 0x01", rc)
					}
					refused++
				}
			}
			if refused == 0 {
				t.Error("none of the last 20 flooding sockets got CONNACK 0x01")
			}
			if tc.otherOK {
				other, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
				if err != nil {
					t.Skipf("cannot bind 127.0.0.2: %v", err)
				}
				t.Cleanup(func() { _ = other.Close() })
				c := &snClient{t: t, conn: other, gw: e.g.Addr().(*net.UDPAddr)}
				c.connect("legit", true, 60)
				c.send(Packet{Type: TypePingreq})
				c.expect(TypePingresp)
			}
		})
	}
}

// TestSessionCost measures what one MQTT-SN device costs, for sessionCost
// (the budget's estimate) and the numbers in docs/security.md.
func TestSessionCost(t *testing.T) {
	const n = 500
	e := startEnv(t, nil, func(c *Config) { c.MaxClientsPerAddress = 0 })
	heap0, g0 := heapAndGoroutines()
	flood(t, e.g.Addr().(*net.UDPAddr), net.IPv4(127, 0, 0, 1), n)
	eventually(t, "all connected", func() bool { return e.g.Stats().ClientsConnected == n })
	heap1, g1 := heapAndGoroutines()
	per := (heap1 - heap0) / n
	t.Logf("per MQTT-SN session: %d bytes of heap and stacks, %.2f goroutines", per, float64(g1-g0)/n)
	if per > sessionCost {
		t.Errorf("a session holds %d bytes, more than sessionCost (%d): raise it", per, sessionCost)
	}
}

// TestSessionsCountAgainstMaxConnections: MQTT-SN devices are broker
// sessions, so the broker's max_connections applies to them (refused with
// 0x89 server busy, answered CONNACK 0x01).
func TestSessionsCountAgainstMaxConnections(t *testing.T) {
	e := startEnv(t, func(b *mqtt.Config) { b.Limits.MaxConnections = 3 }, nil)
	for i := range 3 {
		e.dial(t).connect(fmt.Sprintf("mc-%d", i), true, 60)
	}
	c := e.dial(t)
	c.send(Packet{Type: TypeConnect, Flags: Flags{CleanSession: true}, ProtocolID: 1, Duration: 60, ClientID: "mc-4"})
	if ack := c.expect(TypeConnack); ack.ReturnCode != RejectedCongestion {
		t.Fatalf("4th device with max_connections 3: %+v", ack)
	}
	if n := e.b.Info().ClientsConnected; n != 3 {
		t.Fatalf("broker counts %d connections, want 3", n)
	}
}

// TestIdleSessionsReaped: a device that never completes its CONNECT (will
// handshake) is forgotten after connect_timeout, and one that goes silent
// after 1.5 × its keep alive; their slots of the per-address cap come back.
func TestIdleSessionsReaped(t *testing.T) {
	e := startEnv(t, nil, func(c *Config) {
		c.MaxClientsPerAddress = 2
		c.ConnectTimeout = time.Second
	})
	half := e.dial(t)
	half.send(Packet{Type: TypeConnect, Flags: Flags{Will: true, CleanSession: true}, ProtocolID: 1, Duration: 60, ClientID: "half"})
	half.expect(TypeWillTopicReq)
	silent := e.dial(t)
	silent.connect("silent", true, 1)
	third := e.dial(t)
	third.send(Packet{Type: TypeConnect, Flags: Flags{CleanSession: true}, ProtocolID: 1, Duration: 60, ClientID: "third"})
	if ack := third.expect(TypeConnack); ack.ReturnCode != RejectedCongestion {
		t.Fatalf("third device of the address: %+v", ack)
	}
	start := time.Now()
	eventually(t, "both reaped", func() bool {
		e.g.mu.Lock()
		defer e.g.mu.Unlock()
		return e.g.admitted == 0
	})
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("reaped after %s, want about 1.5 s", d)
	}
	third.connect("third", true, 60)
}

// TestPublishToSysRefused: a device may not REGISTER a $SYS topic to
// publish to it (the broker would never acknowledge the publish).
func TestPublishToSysRefused(t *testing.T) {
	e := startEnv(t, nil, nil)
	c := e.dial(t)
	c.connect("sys", true, 60)
	start := time.Now()
	c.send(Packet{Type: TypeRegister, MsgID: 1, TopicName: "$SYS/x"})
	if ack := c.expect(TypeRegack); ack.ReturnCode != RejectedNotSupported {
		t.Fatalf("REGACK %+v", ack)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("answered after %s", d)
	}
}
