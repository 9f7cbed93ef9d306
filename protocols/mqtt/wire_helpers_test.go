package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/quic-go/quic-go"

	"github.com/fieldgate/fieldgate/internal/membudget"
	"github.com/fieldgate/fieldgate/internal/quicconn"
	"github.com/fieldgate/fieldgate/internal/testpki"
)

// Helpers of the wire_*_test.go files (issue 17: a hostile LAN).

const wireWait = 5 * time.Second

// wireStart starts a broker on loopback without a store, with the given
// logger (nil: the test log at WARN) and memory budget (nil: none). TLS,
// WebSocket and QUIC listeners are on as well, with a throwaway PKI.
func wireStart(t *testing.T, log *slog.Logger, budget *membudget.Budget, mutate func(*Config)) (*testBroker, *testpki.PKI) {
	t.Helper()
	pki := testpki.New(t, "wire test CA")
	cfg := testConfig()
	cfg.Listeners.TLS.Enabled = true
	cfg.Listeners.TLS.TLSFiles = TLSFiles{Cert: pki.CertFile, Key: pki.KeyFile, MinVersion: "1.2"}
	cfg.Listeners.QUIC.Enabled = true
	cfg.Listeners.QUIC.Address = "127.0.0.1:0"
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config invalid: %v", err)
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	b, err := New(cfg, Options{Logger: log, Version: "test", Budget: budget})
	if err != nil {
		t.Fatalf("new broker: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb := &testBroker{Broker: b, cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { tb.done <- b.Run(ctx) }()
	t.Cleanup(tb.stop)
	return tb, pki
}

// wireDial opens a raw byte stream to the broker over one transport: "tcp",
// "tls", "ws" (binary WebSocket messages) or "quic" (the first stream).
func wireDial(t *testing.T, tb *testBroker, pki *testpki.PKI, transport string) net.Conn {
	t.Helper()
	var c net.Conn
	switch transport {
	case "tcp":
		nc, err := net.DialTimeout("tcp", tb.Addr("tcp"), wireWait)
		if err != nil {
			t.Fatalf("dial tcp: %v", err)
		}
		c = nc
	case "tls":
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: wireWait}, Config: &tls.Config{RootCAs: pki.Pool}}
		nc, err := d.Dial("tcp", tb.Addr("tls"))
		if err != nil {
			t.Fatalf("dial tls: %v", err)
		}
		c = nc
	case "ws":
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: wireWait}
		ws, _, err := d.Dial("ws://"+tb.Addr("ws")+"/mqtt", nil)
		if err != nil {
			t.Fatalf("dial ws: %v", err)
		}
		c = &wsConn{ws: ws} // the listener's adapter works for the client side too
	case "quic":
		ctx, cancel := context.WithTimeout(context.Background(), wireWait)
		defer cancel()
		qc, err := quic.DialAddr(ctx, tb.Addr("quic"), &tls.Config{RootCAs: pki.Pool, NextProtos: []string{quicconn.ALPN}}, nil)
		if err != nil {
			t.Fatalf("dial quic: %v", err)
		}
		st, err := qc.OpenStreamSync(ctx)
		if err != nil {
			t.Fatalf("open quic stream: %v", err)
		}
		c = quicconn.New(qc, st)
	default:
		t.Fatalf("unknown transport %q", transport)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// wireClosed reads from c until the broker closes it and returns what was
// read, or fails when c is still open after d.
func wireClosed(t *testing.T, c net.Conn, d time.Duration) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	got, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %s (read % x)", d, got)
	}
	return got
}

// wireOpen asserts that c stays open (nothing to read, no close) for d.
func wireOpen(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("connection closed or answered (err %v), want it open", err)
	}
	_ = c.SetReadDeadline(time.Time{})
}

// wireConnectPkt builds a CONNECT for protocol level 4 or 5 with the given
// keep alive (seconds; 0 disables it) and optional credentials.
func wireConnectPkt(level byte, id string, keepalive uint16, user, pass string) []byte {
	return secConnectPktKeepalive(level, id, keepalive, user, pass)
}

// wireConnect sends CONNECT on c and fails unless the CONNACK accepts it.
func wireConnect(t *testing.T, c net.Conn, r *bufio.Reader, level byte, id string, keepalive uint16, user, pass string) {
	t.Helper()
	if _, err := c.Write(wireConnectPkt(level, id, keepalive, user, pass)); err != nil {
		t.Fatalf("write CONNECT: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wireWait))
	h, body, err := secReadPkt(r)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil || h != 0x20 || len(body) < 2 || body[1] != 0 {
		t.Fatalf("CONNACK: %#x % x %v, want accepted", h, body, err)
	}
}

// wireMem is a heap reading taken after a full collection.
type wireMem struct {
	heapInuse  uint64 // bytes in use now
	totalAlloc uint64 // bytes allocated since the start, ever
}

func wireReadMem() wireMem {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return wireMem{heapInuse: m.HeapInuse, totalAlloc: m.TotalAlloc}
}

// since reports the growth of the heap in use and the bytes allocated
// since before, in MiB.
func (m wireMem) since(before wireMem) (inuse, allocated float64) {
	const mib = 1 << 20
	return (float64(m.heapInuse) - float64(before.heapInuse)) / mib, float64(m.totalAlloc-before.totalAlloc) / mib
}

// wireLog is a log handler's output shared by goroutines.
type wireLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *wireLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *wireLog) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
