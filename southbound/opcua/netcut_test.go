package opcua

import (
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/opcuatest"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// blackhole is a TCP proxy that can silently drop every byte in both
// directions, as a cut cable or a dead switch does: no reset, no FIN.
type blackhole struct {
	ln     net.Listener
	target string
	cut    atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func newBlackhole(t *testing.T, target string) *blackhole {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, target: target}
	b.wg.Go(b.accept)
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *blackhole) accept() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", b.target)
		if err != nil {
			c.Close()
			continue
		}
		b.mu.Lock()
		b.conns = append(b.conns, c, up)
		b.mu.Unlock()
		b.wg.Go(func() { b.pipe(up, c) })
		b.wg.Go(func() { b.pipe(c, up) })
	}
}

// pipe copies src to dst, dropping what it reads while the cable is cut.
func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !b.cut.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				dst.Close()
			}
			return
		}
	}
}

// testNetworkCut cuts the network silently: the watchdog notices within
// its period plus the timeout, the server goes offline and its values
// stale, and when the network is back the gateway resumes the session the
// server kept: the counter's changes queued on the server during the cut
// arrive (no gap in its values), and the stats say resumed.
func testNetworkCut(t *testing.T, srv *opcuatest.Server) {
	bh := newBlackhole(t, srv.Endpoint()[len("opc.tcp://"):])
	s := Server{Name: "plc", Endpoint: "opc.tcp://" + bh.ln.Addr().String(), Timeout: time.Second, QueueSize: 500, Points: []Point{
		{Name: "temp", Node: opcuatest.NodePress4Temp},
		{Name: "counter", Node: opcuatest.NodeCounter, SamplingInterval: 50 * time.Millisecond},
	}}
	r := newRig(t, Config{Servers: []Server{s}}, Options{})
	r.waitStatus("plc", "online")
	r.waitValue("plc", "temp", "a value", func(p map[string]any) bool { return p["q"] == QualityGood })
	// The second cut ends a resumed session: resumed again.
	for cut := 1; cut <= 2; cut++ {
		cutAt := time.Now()
		bh.cut.Store(true)
		r.waitStatus("plc", "offline")
		if took := time.Since(cutAt); took > wait {
			t.Errorf("offline %s after the cut", took)
		}
		r.waitValue("plc", "temp", "a stale value", func(p map[string]any) bool { return p["q"] == QualityStale && num(p["v"]) == 81.25 })
		testwait.For(t, wait, "a timeout counted", func() bool { return r.svc.Stats()[0].Errors[ErrKindTimeout] >= uint64(cut) })
		bh.cut.Store(false)
		r.waitStatus("plc", "online")
		testwait.For(t, wait, "the session resumed", func() bool {
			st := r.svc.Stats()[0]
			return st.Resumed == uint64(cut) && st.Recreated == 0
		})
		// Temp does not change: its last value is good again.
		r.waitValue("plc", "temp", "a good value again", func(p map[string]any) bool {
			return p["q"] == QualityGood && num(p["v"]) == 81.25 && r.rec.last("southbound/plc/temp")["q"] == QualityGood
		})
		var last float64
		for _, p := range r.rec.payloads("southbound/plc/counter") {
			if p["q"] == QualityGood {
				last = num(p["v"])
			}
		}
		testwait.For(t, wait, "counter values after the cut", func() bool {
			p := r.rec.last("southbound/plc/counter")
			return p["q"] == QualityGood && num(p["v"]) > last+20
		})
	}
	// Every value the counter took (it counts every 100 ms, sampled
	// every 50 ms) is published, the cut's included. A lost notification
	// message would be a gap of about ten. (A message received just
	// before the cut whose acknowledgement was lost may come twice.)
	var vals []float64
	for _, p := range r.rec.payloads("southbound/plc/counter") {
		if p["q"] == QualityGood {
			vals = append(vals, num(p["v"]))
		}
	}
	slices.Sort(vals)
	for i := 1; i < len(vals); i++ {
		if vals[i]-vals[i-1] > 3 {
			t.Errorf("counter values jump from %v to %v", vals[i-1], vals[i])
		}
	}
	if st := r.svc.Stats()[0]; st.Connects != 3 || st.Reconnects != 2 {
		t.Errorf("stats %+v", st)
	}
}
