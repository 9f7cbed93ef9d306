package mqtt

import (
	"bufio"
	"net"
	"strconv"
	"testing"
	"time"
)

// BenchmarkConnectChurn runs connect/disconnect cycles against a broker on
// loopback, as cmd/mqttbench's churn scenario does, one at a time: dial,
// CONNECT (clean session), CONNACK, DISCONNECT, close. For profiling the
// connect path in-process:
//
//	go test -run '^$' -bench ConnectChurn -cpuprofile cpu.out ./protocols/mqtt/
func BenchmarkConnectChurn(b *testing.B) {
	tb := startBroker(b, "-", func(c *Config) { c.Limits.MaxConnectionsPerAddress = 0 })
	addr := tb.Addr("tcp")
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		c, err := net.DialTimeout("tcp", addr, wireWait)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(wireConnectPkt(4, "churn-"+strconv.Itoa(i), 60, "", "")); err != nil {
			b.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(wireWait))
		if h, body, err := secReadPkt(bufio.NewReader(c)); err != nil || h != 0x20 || len(body) < 2 || body[1] != 0 {
			b.Fatalf("CONNACK: %#x % x %v", h, body, err)
		}
		if _, err := c.Write([]byte{0xE0, 0x00}); err != nil { // DISCONNECT
			b.Fatal(err)
		}
		_ = c.Close()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cycles/s")
}
