package mqtt

import (
	"fmt"
	"net"
	"testing"

	"github.com/fieldgate/fieldgate/internal/rawio"
)

// TestRawIOSwitch runs a real client round trip over TCP with
// broker.listeners.raw_io on and off, and checks which socket path the TCP
// listener took: internal/rawio's when on, the standard library's when off.
func TestRawIOSwitch(t *testing.T) {
	for _, raw := range []bool{true, false} {
		t.Run(fmt.Sprintf("raw_io=%v", raw), func(t *testing.T) {
			tb := startBroker(t, "-", func(c *Config) { c.Listeners.RawIO = raw })
			l, ok := tb.srv.Listeners.Get("tcp")
			if !ok {
				t.Fatal("no tcp listener")
			}
			if got := usesRawIO(l.(*listener)); got != raw {
				t.Fatalf("tcp listener uses rawio = %v, want %v", got, raw)
			}

			sub := connectV3(t, tb, "sub", 4, nil)
			sub.sub(t, "rawio/#", 1)
			pub := connectV3(t, tb, "pub", 4, nil)
			for i := range 100 {
				pub.pub(t, fmt.Sprintf("rawio/%d", i%3), 1, false, fmt.Sprintf("m%d", i))
			}
			for i := range 100 {
				m := recv(t, sub.Msgs, waitFor, "message")
				if want := fmt.Sprintf("m%d", i); string(m.Payload()) != want {
					t.Fatalf("message %d: got %q, want %q", i, m.Payload(), want)
				}
			}
		})
	}
}

// usesRawIO reports whether l wraps its accepted connections with rawio.
func usesRawIO(l *listener) bool {
	l.mu.Lock()
	ln := l.ln
	l.mu.Unlock()
	for {
		switch v := ln.(type) {
		case rawio.Listener:
			return true
		case capListener:
			ln = v.Listener
		case net.Listener:
			return false
		}
	}
}
