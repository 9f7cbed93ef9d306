package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
)

// pair returns a wrapped server side and a plain client side of a real
// loopback TCP connection.
func pair(t *testing.T) (server net.Conn, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rl := Listener{Listener: ln}
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := rl.Accept()
		ch <- res{c, err}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.c.Close(); client.Close() })
	if runtime.GOOS == "linux" {
		if _, ok := r.c.(*Conn); !ok {
			t.Fatalf("accepted %T, want *rawio.Conn", r.c)
		}
	}
	return r.c, client
}

func TestEchoAndEOF(t *testing.T) {
	s, c := pair(t)
	go func() {
		_, _ = io.Copy(s, s) // echo through the raw Read and Write
		_ = s.(interface{ CloseWrite() error }).CloseWrite()
	}()
	msg := []byte("hello over raw syscalls")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

func TestLargeWriteToSlowReaderArrivesWhole(t *testing.T) {
	s, c := pair(t)
	want := make([]byte, 8<<20) // far more than the socket buffers hold
	for i := range want {
		want[i] = byte(i * 7)
	}
	done := make(chan error, 1)
	go func() {
		n, err := s.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		done <- err
		_ = s.Close()
	}()
	var got bytes.Buffer
	buf := make([]byte, 1000)
	for {
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Write: %v", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("received %d bytes, not the %d written in order", got.Len(), len(want))
	}
}

func TestReadDeadline(t *testing.T) {
	s, _ := pair(t)
	_ = s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := s.Read(make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read after deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read after deadline: %v is not a net.Error timeout", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("Read after deadline: %#v, want a *net.OpError with Op read", err)
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	s, _ := pair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 10))
		errc <- err
	}()
	testwait.For(t, 5*time.Second, "the reader to block in Read", func() bool { return parkedIn("[IO wait", "rawio.(*Conn).Read") })
	_ = s.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read on a closed conn: %v, want net.ErrClosed", err)
	}
	if _, err := s.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write on a closed conn: %v, want net.ErrClosed", err)
	}
}

func TestWriteToResetPeerIsAnError(t *testing.T) {
	s, c := pair(t)
	_ = c.(*net.TCPConn).SetLinger(0) // close with a reset
	_ = c.Close()
	// Writes before the reset arrives are still accepted: write until one fails.
	failed := testwait.Until(5*time.Second, func() bool {
		_, err := s.Write(make([]byte, 1024))
		return err != nil
	})
	if !failed {
		t.Fatal("writes to a reset peer never failed")
	}
	// A broken pipe on a socket is an error, never a SIGPIPE that kills us.
	if _, err := s.Read(make([]byte, 10)); err == nil {
		t.Fatal("Read from a reset peer: no error")
	}
}

func TestWrapLeavesOtherConnsAlone(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Fatal("Wrap changed a non-TCP conn")
	}
}

func TestZeroLength(t *testing.T) {
	s, _ := pair(t)
	if n, err := s.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", n, err)
	}
	if n, err := s.Write(nil); n != 0 || err != nil {
		t.Fatalf("Write(nil) = %d, %v", n, err)
	}
}

// parkedIn reports whether some goroutine is parked in state (as the
// runtime's stack dump writes it, for example "[IO wait") with fn on its
// stack.
func parkedIn(state, fn string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte(state)) && bytes.Contains(g, []byte(fn)) {
			return true
		}
	}
	return false
}
