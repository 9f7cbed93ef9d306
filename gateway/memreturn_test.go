package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/internal/memreturn"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// memReturnConns is how many MQTT connections TestMemoryReturnedAfterStorm
// opens and closes: twice memreturn.StormPeers.
const memReturnConns = 2000

// idleConnect opens one MQTT 3.1.1 connection (clean session, keep alive
// 60 s) as clientID and waits for its CONNACK.
func idleConnect(addr, clientID string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, byte(len(clientID) >> 8), byte(len(clientID))}
	body = append(body, clientID...)
	pkt := append([]byte{0x10, byte(len(body))}, body...) // under 128 bytes: one length byte
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var ack [4]byte
	if _, err = c.Write(pkt); err == nil {
		_, err = io.ReadFull(c, ack[:])
	}
	if err != nil || ack[0] != 0x20 || ack[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("client %s: CONNACK % x: %v", clientID, ack, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// heapNow reads the test process's heap in use and heap released, in bytes.
func heapNow() (inUse, released uint64) {
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
	}
	metrics.Read(s)
	return s[0].Value.Uint64() + s[1].Value.Uint64(), s[2].Value.Uint64()
}

// logRecord returns the first JSON log record with message msg, or nil.
func (b *syncBuf) logRecord(msg string) map[string]any {
	if recs := b.logRecords(msg); len(recs) > 0 {
		return recs[0]
	}
	return nil
}

// logRecords returns every JSON log record with message msg, in order.
func (b *syncBuf) logRecords(msg string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var recs []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			recs = append(recs, rec)
		}
	}
	return recs
}

// TestMemoryReturnedAfterStorm runs the gateway in this process, opens
// 2,000 real MQTT connections to its TCP listener on loopback and closes
// them: the memreturn part returns the heap once the count is steady after
// each storm, the arrivals and the departures (logged with the numbers,
// counted on /metrics). The second return waits for memreturn.MinInterval
// (30 s). The numbers are the test process's (the gateway and the
// clients): reported, not asserted.
func TestMemoryReturnedAfterStorm(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Gateway.DataDir = filepath.Join(dir, "data")
	cfg.Broker.Listeners.TCP.Address = "127.0.0.1:0"
	cfg.Broker.Listeners.WebSocket.Enabled = false
	cfg.Broker.Limits.MaxConnectionsPerAddress = 0
	cfg.MQTTSN.Enabled, cfg.CoAP.Enabled = false, false
	cfg.Web.Enabled, cfg.Web.Address, cfg.Web.MetricsAuth, cfg.Web.MDNS = true, "127.0.0.1:0", false, false
	g := startInProcess(t, Options{Config: cfg})
	defer func() {
		g.cancel()
		if err := <-g.done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	addr := g.logs.attr("fieldgate started", "mqtt_tcp")
	if addr == "" {
		t.Fatalf("no MQTT address logged:\n%s", g.logs.buf.String())
	}

	conns := make([]net.Conn, memReturnConns)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	// One connection first, seen by the part: its count starts at most 1,
	// so the rest arriving is a storm whenever the part started counting.
	first, err := idleConnect(addr, "storm-0")
	if err != nil {
		t.Fatal(err)
	}
	conns[0] = first
	web := g.web(t)
	testwait.For(t, 30*time.Second, "the memreturn part to count the first connection", func() bool {
		_, body := httpGet(t, web+"/metrics")
		return strings.Contains(body, "fieldgate_memory_return_peak_peers 1\n")
	})
	var next atomic.Int64
	next.Store(1)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < memReturnConns; i = next.Add(1) - 1 {
				c, err := idleConnect(addr, fmt.Sprintf("storm-%d", i))
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// The part reads the count once a second: the storm of arrivals is
	// returned once every connection is counted and the count is steady.
	var up map[string]any
	testwait.For(t, 30*time.Second, "the memory return after the arrivals", func() bool {
		up = g.logs.logRecord(memReturnMsg)
		return up != nil
	})
	if to, _ := up["peers"].(float64); to != memReturnConns {
		t.Fatalf("return after the arrivals logged at %v peers, want %d", to, memReturnConns)
	}
	inUseOpen, releasedOpen := heapNow()
	for i, c := range conns {
		c.Close()
		conns[i] = nil
	}
	var rec map[string]any
	testwait.For(t, memreturn.MinInterval+30*time.Second, "the memory return after the departures", func() bool {
		recs := g.logs.logRecords(memReturnMsg)
		if len(recs) < 2 {
			return false
		}
		rec = recs[1]
		return true
	})
	inUseAfter, releasedAfter := heapNow()
	peak, _ := rec["peers_before"].(float64)
	peers, _ := rec["peers"].(float64)
	if peak != memReturnConns || peers != 0 {
		t.Errorf("return logged for a fall of %v → %v peers, want %d → 0", peak, peers, memReturnConns)
	}
	t.Logf("%d connections open: heap in use %.1f MiB, released %.1f MiB", memReturnConns, mib(inUseOpen), mib(releasedOpen))
	t.Logf("after the return: heap in use %.1f MiB, released %.1f MiB", mib(inUseAfter), mib(releasedAfter))
	t.Logf("the return's log line: peers %v → %v, rss %v → %v MiB, heap in use %v → %v MiB, returned %v MiB, took %v",
		peak, peers, mibOf(rec["rss_before_bytes"]), mibOf(rec["rss_after_bytes"]),
		mibOf(rec["heap_in_use_before_bytes"]), mibOf(rec["heap_in_use_after_bytes"]), mibOf(rec["returned_bytes"]), durOf(rec["took"]))
	_, body := httpGet(t, web+"/metrics")
	if !strings.Contains(body, "fieldgate_memory_returns_total 2\n") || !strings.Contains(body, "fieldgate_memory_returned_bytes_total ") {
		t.Errorf("/metrics lacks fieldgate_memory_returns_total 1 and the bytes returned")
	}
}

// memReturnMsg is the message of memreturn's log line.
const memReturnMsg = "memory returned to the OS after a storm of peers"

// durOf is a JSON duration (nanoseconds) as a time.Duration.
func durOf(v any) time.Duration {
	f, _ := v.(float64)
	return time.Duration(f).Round(time.Microsecond)
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// mibOf is a JSON number of bytes in MiB, one decimal.
func mibOf(v any) string {
	f, _ := v.(float64)
	return fmt.Sprintf("%.1f", f/(1<<20))
}
