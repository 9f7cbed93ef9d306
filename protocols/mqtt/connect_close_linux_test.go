package mqtt

import (
	"bufio"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fieldgate/fieldgate/internal/rawio"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// Tests of clientConn.Close (issue 18, connect churn): a client that is
// done sending is closed at once with a FIN; everything else still lingers,
// so that a DISCONNECT written last is not destroyed by a reset.

// closePair returns a loopback TCP connection wrapped as the broker wraps an
// accepted one (raw-syscall I/O, per-address slot, clientConn), and the
// client's end.
func closePair(t *testing.T) (*clientConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.DialTimeout("tcp", ln.Addr().String(), wireWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	cc := newClientConn(&countedConn{Conn: rawio.Wrap(server)}, 0)
	t.Cleanup(func() { _ = cc.Close() })
	return cc, client.(*net.TCPConn)
}

// readUntilDone reads from c as the engine would until the client is done.
func readUntilDone(t *testing.T, c *clientConn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(wireWait))
	buf := make([]byte, 256)
	for c.done.Load() == doneNot {
		if _, err := c.Read(buf); err != nil && c.done.Load() == doneNot {
			t.Fatalf("read before the client was done: %v", err)
		}
	}
}

// socketClosed reports whether the broker's end of c has been closed.
func socketClosed(c *clientConn) bool {
	return errors.Is(c.Conn.SetReadDeadline(time.Time{}), net.ErrClosed)
}

// expectFIN reads from the client's end until the broker's FIN: io.EOF,
// not a reset.
func expectFIN(t *testing.T, client net.Conn) {
	t.Helper()
	_ = client.SetReadDeadline(time.Now().Add(wireWait))
	got, err := io.ReadAll(client)
	if err != nil {
		t.Fatalf("client read % x, then %v; want a clean close (FIN)", got, err)
	}
}

// tcpClose is the kernel's TCP_CLOSE state, as TCP_INFO reports it.
const tcpClose = 7

// tcpState returns the kernel's TCP state of the socket of c.
func tcpState(t *testing.T, c net.Conn) uint8 {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatalf("TCP_INFO: %v", ierr)
	}
	return info.State
}

// disconnectPkt is an MQTT DISCONNECT (any version: reason 0, no properties).
var disconnectPkt = []byte{0xE0, 0x00}

func TestConnectCloseAfterDisconnectAtOnce(t *testing.T) {
	for _, level := range []byte{4, 5} {
		cc, client := closePair(t)
		msg := append(wireConnectPkt(level, "bye", 60, "", ""), disconnectPkt...)
		if _, err := client.Write(msg); err != nil {
			t.Fatal(err)
		}
		readUntilDone(t, cc)
		if got := cc.done.Load(); got != doneDisconnect {
			t.Fatalf("v%d: done = %d after DISCONNECT, want %d", level, got, doneDisconnect)
		}
		if err := cc.Close(); err != nil {
			t.Fatalf("v%d: close: %v", level, err)
		}
		if !socketClosed(cc) {
			t.Fatalf("v%d: the socket is still open after Close: it lingers for a client that said DISCONNECT", level)
		}
		expectFIN(t, client)
	}
}

func TestConnectCloseAfterEOFAtOnce(t *testing.T) {
	cc, client := closePair(t)
	if _, err := client.Write(wireConnectPkt(5, "half", 60, "", "")); err != nil {
		t.Fatal(err)
	}
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	readUntilDone(t, cc)
	if got := cc.done.Load(); got != doneEOF {
		t.Fatalf("done = %d after EOF, want %d", got, doneEOF)
	}
	// What the broker writes before closing still reaches the client.
	if _, err := cc.Write([]byte{0x20, 0x02, 0x00, 0x00}); err != nil {
		t.Fatal(err)
	}
	if err := cc.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if !socketClosed(cc) {
		t.Fatal("the socket is still open after Close: it lingers for a client that closed its side")
	}
	_ = client.SetReadDeadline(time.Now().Add(wireWait))
	got, err := io.ReadAll(client)
	if err != nil || len(got) != 4 || got[0] != 0x20 {
		t.Fatalf("client read % x, %v; want the CONNACK, then a clean close", got, err)
	}
}

// TestConnectCloseBytesAfterDisconnect: bytes that follow a DISCONNECT
// (a client breaking [MQTT-3.14.4-1]) mean the client is not done: the
// close lingers, and the client sees a FIN, not a reset.
func TestConnectCloseBytesAfterDisconnect(t *testing.T) {
	cc, client := closePair(t)
	msg := append(wireConnectPkt(5, "chatty", 60, "", ""), disconnectPkt...)
	msg = append(msg, 0xC0, 0x00) // PINGREQ after the DISCONNECT
	if _, err := client.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = cc.SetReadDeadline(time.Now().Add(wireWait))
	var seen int
	buf := make([]byte, 256)
	for seen < len(msg) {
		n, err := cc.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		seen += n
	}
	if cc.done.Load() != doneNot {
		t.Fatal("client counted as done though a packet followed its DISCONNECT")
	}
	if err := cc.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	expectFIN(t, client)
}

// TestConnectCloseUnreadInputLingers: a client that said DISCONNECT, then
// sent more that the broker never read: a plain close would answer with a
// reset, so Close lingers and drains, and the client sees a FIN.
func TestConnectCloseUnreadInputLingers(t *testing.T) {
	cc, client := closePair(t)
	if _, err := client.Write(append(wireConnectPkt(5, "unread", 60, "", ""), disconnectPkt...)); err != nil {
		t.Fatal(err)
	}
	readUntilDone(t, cc)
	if _, err := client.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, wireWait, "the extra bytes to arrive unread", func() bool {
		n, err := unreadBytes(cc.Conn.(syscall.Conn))
		if err != nil {
			t.Fatalf("SIOCINQ: %v", err)
		}
		return n == 1000
	})
	if err := cc.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	expectFIN(t, client)
}

// TestConnectChurnCleanClose goes through the broker: a client that sends
// DISCONNECT gets a FIN, and the broker's socket is closed at once, not
// after lingering: more data from the client is answered with a reset.
func TestConnectChurnCleanClose(t *testing.T) {
	tb, pki := wireStart(t, nil, nil, nil)
	for _, level := range []byte{4, 5} {
		for range 20 {
			c := wireDial(t, tb, pki, "tcp")
			wireConnect(t, c, bufio.NewReader(c), level, secID("churn"), 60, "", "")
			if _, err := c.Write(disconnectPkt); err != nil {
				t.Fatal(err)
			}
			expectFIN(t, c)
			// The broker's socket is gone, so a byte more draws a reset
			// (a lingering socket would read it, and its close would send
			// nothing more): the client's socket goes from CLOSE_WAIT to
			// CLOSE.
			if _, err := c.Write([]byte{0xC0}); err != nil {
				t.Fatal(err)
			}
			testwait.For(t, wireWait, "a reset from the closed socket", func() bool {
				return tcpState(t, c) == tcpClose
			})
			_ = c.Close()
		}
	}
	testwait.For(t, wireWait, "every client to be gone", func() bool { return tb.Info().ClientsConnected == 0 })
}

// TestConnectFloodGetsDisconnect: a client that floods an oversized packet
// is still told why it was cut off (DISCONNECT 0x95), and then sees a FIN:
// the broker lingers, draining its input, instead of resetting the
// connection.
func TestConnectFloodGetsDisconnect(t *testing.T) {
	tb, pki := wireStart(t, nil, nil, func(c *Config) { c.Limits.MaxPacketSize = 1024 })
	for range 5 {
		c := wireDial(t, tb, pki, "tcp")
		r := bufio.NewReader(c)
		wireConnect(t, c, r, 5, secID("flood"), 60, "", "")
		stop := make(chan struct{})
		flooded := make(chan struct{})
		go func() {
			defer close(flooded)
			chunk := make([]byte, 32<<10)
			copy(chunk, append([]byte{0x30}, secVarint(1<<20)...)) // PUBLISH of 1 MiB
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = c.SetWriteDeadline(time.Now().Add(wireWait))
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		}()
		_ = c.SetReadDeadline(time.Now().Add(wireWait))
		h, body, err := secReadPkt(r)
		close(stop)
		if err != nil || h != 0xE0 || len(body) < 1 || body[0] != 0x95 {
			t.Fatalf("flooding client got %#x % x %v, want DISCONNECT 0x95", h, body, err)
		}
		<-flooded
		// Then a FIN: a close with the flood unread would have sent a
		// reset, which on a real network can destroy the DISCONNECT still
		// in flight.
		_ = c.SetReadDeadline(time.Now().Add(wireWait))
		if rest, err := io.ReadAll(r); err != nil {
			t.Fatalf("after DISCONNECT 0x95: read % x, then %v; want a clean close (FIN)", rest, err)
		}
		_ = c.Close()
	}
}
