package mqtt

import (
	"log/slog"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fieldgate/fieldgate/internal/rawio"
)

// TestConnectListenerKeepAlive: TCP keep-alive is set once on the listening
// socket, not per accept, and every accepted socket inherits it with the
// standard library's timing (a client with MQTT keep alive 0 relies on it).
func TestConnectListenerKeepAlive(t *testing.T) {
	for _, raw := range []bool{false, true} {
		l := &listener{id: "tcp", protocol: "tcp", address: "127.0.0.1:0", rawIO: raw}
		if err := l.Init(slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
		client, err := net.DialTimeout("tcp", l.Address(), wireWait)
		if err != nil {
			t.Fatal(err)
		}
		server, err := l.ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if _, isRaw := server.(*rawio.Conn); isRaw != raw {
			t.Fatalf("raw_io %v: accepted a %T", raw, server)
		}
		sc, err := server.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]struct{ level, opt, value int }{
			"SO_KEEPALIVE":  {unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			"TCP_KEEPIDLE":  {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
			"TCP_KEEPINTVL": {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
			"TCP_KEEPCNT":   {unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
			"TCP_NODELAY":   {unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
		}
		for name, o := range want {
			var got int
			var gerr error
			if err := sc.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), o.level, o.opt) }); err != nil {
				t.Fatal(err)
			}
			if gerr != nil || got != o.value {
				t.Errorf("raw_io %v: accepted socket %s = %d (%v), want %d", raw, name, got, gerr, o.value)
			}
		}
		_ = client.Close()
		_ = server.Close()
		_ = l.ln.Close()
	}
}
