package mqtt

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/quic-go/quic-go"

	"github.com/fieldgate/fieldgate/internal/quicconn"
)

// TestWireConnectionsPerAddress is issue 17, item 7, third bullet: one
// address filled all 10,000 connection slots in 2.5 s. With the default
// max_connections_per_address (64), cap+10 connections from 127.0.0.1 get
// exactly cap CONNACKs; the rest are closed at accept and counted. The same
// address is refused on the other listeners too, another address
// (127.0.0.2) still connects, the gateway's own in-process sessions are not
// capped, and a slot comes back when a connection closes.
func TestWireConnectionsPerAddress(t *testing.T) {
	tb, pki := wireStart(t, nil, nil, nil)
	limit := DefaultConfig().Limits.MaxConnectionsPerAddress
	if limit != 64 {
		t.Fatalf("default max_connections_per_address %d, want 64", limit)
	}
	addr := tb.Addr("tcp")

	// Open cap+10 connections at once, as a flood would.
	type result struct {
		c  net.Conn
		ok bool
	}
	results := make([]result, limit+10)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, wireWait)
			if err != nil {
				return // a refused dial counts as refused
			}
			results[i].c = c
			_ = c.SetDeadline(time.Now().Add(wireWait))
			if _, err := c.Write(wireConnectPkt(4, fmt.Sprintf("flood-%d", i), 60, "", "")); err != nil {
				return
			}
			h, body, err := secReadPkt(bufio.NewReader(c))
			results[i].ok = err == nil && h == 0x20 && len(body) == 2 && body[1] == 0
			_ = c.SetDeadline(time.Time{})
		}()
	}
	wg.Wait()
	var open []net.Conn
	refused := 0
	for _, r := range results {
		if r.c != nil {
			t.Cleanup(func() { _ = r.c.Close() })
		}
		if r.ok {
			open = append(open, r.c)
		} else {
			refused++
		}
	}
	t.Logf("%d connections from 127.0.0.1 in %s: %d accepted, %d refused", len(results), time.Since(start).Round(time.Millisecond), len(open), refused)
	if len(open) != limit {
		t.Fatalf("%d connections accepted from one address, want exactly %d", len(open), limit)
	}
	if n := tb.Stats().ConnectionsOverAddressLimit.Load(); n != 10 {
		t.Fatalf("ConnectionsOverAddressLimit = %d, want 10", n)
	}

	t.Run("other listeners count the same address", func(t *testing.T) {
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: wireWait}
		if ws, _, err := d.Dial("ws://"+tb.Addr("ws")+"/mqtt", nil); err == nil {
			_ = ws.Close()
			t.Fatal("WebSocket upgrade from the capped address succeeded")
		}
		ctx, cancel := context.WithTimeout(context.Background(), wireWait)
		defer cancel()
		qc, err := quic.DialAddr(ctx, tb.Addr("quic"), &tls.Config{RootCAs: pki.Pool, NextProtos: []string{quicconn.ALPN}}, nil)
		if err == nil {
			st, err := qc.OpenStreamSync(ctx)
			if err == nil {
				c := quicconn.New(qc, st)
				_, _ = c.Write(wireConnectPkt(4, "quic-flood", 60, "", ""))
				if got := wireClosed(t, c, wireWait); len(got) != 0 {
					t.Fatalf("QUIC connection from the capped address got % x", got)
				}
			}
		}
	})

	t.Run("another address connects", func(t *testing.T) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: wireWait}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Skipf("cannot bind 127.0.0.2 here: %v", err)
		}
		defer c.Close()
		wireConnect(t, c, bufio.NewReader(c), 4, "other-address", 60, "", "")
	})

	t.Run("in-process sessions are not capped", func(t *testing.T) {
		for i := range limit + 5 {
			sessionConnect(t, tb, SessionOptions{
				ClientID: fmt.Sprintf("sn-%d", i), CleanStart: true,
				Remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000 + i},
			})
		}
	})

	t.Run("a closed connection gives its slot back", func(t *testing.T) {
		_ = open[0].Close()
		secEventually(t, wireWait, "slot released", func() bool {
			return wireCount(tb, "127.0.0.1") < limit
		})
		c, err := net.DialTimeout("tcp", addr, wireWait)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wireConnect(t, c, bufio.NewReader(c), 4, "after-close", 60, "", "")
	})
}

// wireCount returns the open connections the listeners count for ip.
func wireCount(tb *testBroker, ip string) int {
	l, ok := tb.srv.Listeners.Get("tcp")
	if !ok {
		return -1
	}
	return l.(*listener).conns.count(ip)
}

// TestWireConnectionsPerAddressUnlimited: 0 turns the cap off.
func TestWireConnectionsPerAddressUnlimited(t *testing.T) {
	tb, pki := wireStart(t, nil, nil, func(c *Config) { c.Limits.MaxConnectionsPerAddress = 0 })
	for i := range 80 {
		c := wireDial(t, tb, pki, "tcp")
		wireConnect(t, c, bufio.NewReader(c), 4, fmt.Sprintf("many-%d", i), 60, "", "")
	}
	if n := tb.Stats().ConnectionsOverAddressLimit.Load(); n != 0 {
		t.Fatalf("ConnectionsOverAddressLimit = %d with no cap", n)
	}
}
