//go:build linux

package web

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/bus"
)

// openFDs counts the process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// TestHostileBodyNeverSent is issue 17 item 6: the web server set only
// ReadHeaderTimeout, and ~20,000 POSTs that never sent their body ran the
// process out of descriptors, so that new MQTT connections failed with
// "too many open files". 1,000 connections send the headers of a POST with
// a Content-Length and never the body, with the open file limit lowered so
// that without the connection cap they would exhaust it. The page holds at
// most web.max_connections of them, closes each within web.read_timeout,
// and the broker accepts a client meanwhile.
func TestHostileBodyNeverSent(t *testing.T) {
	broker := startBroker(t)
	cfg := testConfig()
	cfg.ReadTimeout = time.Second
	cfg.WriteTimeout = 5 * time.Second
	cfg.IdleTimeout = time.Second
	fb := newFakeBackend()
	h := startOn(t, cfg, fb, fb, t.TempDir(), Options{})
	capConns := h.srv.conns
	if capConns != cfg.MaxConnections {
		t.Fatalf("cap %d, want %d", capConns, cfg.MaxConnections)
	}
	const attackers = 1000

	base := openFDs(t)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// Room for the attackers' own ends, the page's cap and some slack, but
	// not for an accepted connection per attacker.
	low := lim
	low.Cur = uint64(base + attackers + capConns + 200)
	if low.Cur < lim.Cur {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) })
	}

	// Our ends of the attackers' connections stay open until the end, so
	// that the process's descriptors are base + ours + the page's.
	var ours atomic.Int64
	var mu sync.Mutex
	var closedAt []time.Duration
	var conns []net.Conn
	var eofs atomic.Int64
	var wg sync.WaitGroup
	stopSampling := make(chan struct{})
	samplerDone := make(chan int)
	go func() {
		most := 0
		for {
			// A sample counts only when no attacker dialled during it.
			n := ours.Load()
			fds := openFDs(t)
			if ours.Load() == n {
				most = max(most, fds-base-int(n))
			}
			select {
			case <-stopSampling:
				samplerDone <- most
				return
			case <-time.After(10 * time.Millisecond): // sampling period
			}
		}
	}()
	begin := time.Now()
	for range attackers {
		c, err := net.Dial("tcp", h.srv.Addr().String())
		if err != nil {
			t.Fatalf("attacker dial: %v", err)
		}
		ours.Add(1)
		conns = append(conns, c)
		if _, err := io.WriteString(c, "POST /api/v1/login HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(2 * time.Minute))
			if _, err := io.Copy(io.Discard, c); err == nil {
				eofs.Add(1) // closed by the server
			}
			mu.Lock()
			closedAt = append(closedAt, time.Since(begin))
			mu.Unlock()
		}()
	}
	// The attack is at its height: the broker still accepts.
	mq, err := mqttConnect(broker, "during-attack")
	if err != nil {
		t.Fatalf("MQTT connect during the attack: %v", err)
	}
	mq.Close()
	atPeak := openFDs(t) - base - attackers
	wg.Wait()
	drained := time.Since(begin)
	close(stopSampling)
	most := <-samplerDone
	for _, c := range conns {
		c.Close()
	}

	slices.Sort(closedAt)
	t.Logf("%d bodiless POSTs, max_connections %d, read_timeout %v: at most %d descriptors held by the page (%d at the peak), all closed by the server in %v (first after %v); MQTT CONNECT during the attack: ok",
		attackers, capConns, cfg.ReadTimeout, most, atPeak, drained.Round(time.Millisecond), closedAt[0].Round(time.Millisecond))
	if most > capConns+20 {
		t.Errorf("the page held %d descriptors, cap %d", most, capConns)
	}
	if eofs.Load() != attackers {
		t.Errorf("%d of %d connections closed by the server", eofs.Load(), attackers)
	}
	// Accepted in turn, cap at a time: connection k is closed within
	// (k/cap + 1) read timeouts (generous slack for a loaded machine).
	for k, at := range closedAt {
		bound := time.Duration(k/capConns+1)*(cfg.ReadTimeout+time.Second) + 5*time.Second
		if at > bound {
			t.Errorf("connection %d closed after %v, bound %v", k, at, bound)
			break
		}
	}
	waitFor(t, func() bool { return openFDs(t) <= base+10 })
}

// TestHostileConnCapShare checks that the page never takes more than a
// quarter of the open file limit in connections.
func TestHostileConnCapShare(t *testing.T) {
	fb := newFakeBackend()
	h := startOn(t, testConfig(), fb, fb, t.TempDir(), Options{FileLimit: 400})
	if h.srv.conns != 100 {
		t.Fatalf("cap %d with 400 files, want 100", h.srv.conns)
	}
	h2 := startOn(t, testConfig(), fb, fb, t.TempDir(), Options{FileLimit: 1 << 20})
	if h2.srv.conns != DefaultConfig().MaxConnections {
		t.Fatalf("cap %d, want the configured %d", h2.srv.conns, DefaultConfig().MaxConnections)
	}
	logs := fb.ring.Logs(0, "", 100)
	if !slices.ContainsFunc(logs, func(e LogEntry) bool { return strings.Contains(e.Message, "max_connections lowered") }) {
		t.Errorf("no warning about the lowered cap in %v", logs)
	}
}

// TestHostileLiveStreamOutlivesTimeouts checks that the live view, which
// streams for as long as the browser stays, is not cut by read_timeout
// or write_timeout: it gets a deadline per write instead.
func TestHostileLiveStreamOutlivesTimeouts(t *testing.T) {
	cfg := testConfig()
	cfg.ReadTimeout = time.Second
	cfg.WriteTimeout = time.Second
	h := start(t, cfg, nil)
	c := h.setUp()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", h.base+"/api/v1/live?filter=plant/%23", nil)
	resp, err := c.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	waitFor(t, func() bool { return h.b.subscribers() == 1 })
	time.Sleep(2*cfg.ReadTimeout + cfg.WriteTimeout) // kept sleep: outliving the server's real socket deadlines is what is under test
	if h.b.subscribers() != 1 {
		t.Fatal("the stream ended at the server's timeouts")
	}
	h.b.publish(bus.Message{Topic: "plant/a", Payload: []byte("late"), Time: time.Now()})
	ev := readEvent(t, bufio.NewReader(resp.Body))
	if len(ev.Messages) != 1 || *ev.Messages[0].Text != "late" {
		t.Fatalf("got %+v", ev)
	}
}

// TestHostileWebLimitsValidate checks the new limits' validation.
func TestHostileWebLimitsValidate(t *testing.T) {
	tests := []struct {
		path string
		edit func(c *Config)
	}{
		{"login_concurrency", func(c *Config) { c.LoginConcurrency = 0 }},
		{"read_timeout", func(c *Config) { c.ReadTimeout = 0 }},
		{"write_timeout", func(c *Config) { c.WriteTimeout = 2 * time.Hour }},
		{"idle_timeout", func(c *Config) { c.IdleTimeout = time.Millisecond }},
		{"max_connections", func(c *Config) { c.MaxConnections = 1 }},
	}
	for _, tc := range tests {
		c := DefaultConfig()
		tc.edit(&c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.path+": ") {
			t.Errorf("%s: %v", tc.path, err)
		}
	}
}
