package mqtt

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// unreadBytes returns how many bytes of the connection's socket the kernel
// holds unread (SIOCINQ; a FIN is not counted).
func unreadBytes(sc syscall.Conn) (int, error) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("unread bytes: %w", err)
	}
	var n int
	var ioErr error
	if err := rc.Control(func(fd uintptr) { n, ioErr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		return 0, fmt.Errorf("unread bytes: %w", err)
	}
	if ioErr != nil {
		return 0, fmt.Errorf("unread bytes: SIOCINQ: %w", ioErr)
	}
	return n, nil
}

// listenConfig is how the broker's TCP listeners open their socket. TCP
// keep-alive is set once on the listening socket, and every accepted socket
// inherits it from there (Linux copies SO_KEEPALIVE and the TCP_KEEP*
// values into the new socket): the standard library would otherwise make
// four setsockopt calls per accepted connection, which were about 8 % of
// the broker's CPU under connect churn.
func listenConfig() net.ListenConfig {
	return net.ListenConfig{
		KeepAlive: -1, // not per connection: inherited from the listening socket
		Control: func(_, _ string, rc syscall.RawConn) error {
			var optErr error
			if err := rc.Control(func(fd uintptr) { optErr = setKeepAlive(int(fd)) }); err != nil {
				return fmt.Errorf("tcp keep-alive: %w", err)
			}
			return optErr
		},
	}
}

// setKeepAlive turns TCP keep-alive on for fd with tcpKeepAlive's timing.
func setKeepAlive(fd int) error {
	opts := []struct {
		level, opt, value int
		name              string
	}{
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1, "SO_KEEPALIVE"},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(tcpKeepAlive.Idle.Seconds()), "TCP_KEEPIDLE"},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(tcpKeepAlive.Interval.Seconds()), "TCP_KEEPINTVL"},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, tcpKeepAlive.Count, "TCP_KEEPCNT"},
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.value); err != nil {
			return fmt.Errorf("tcp keep-alive: set %s: %w", o.name, err)
		}
	}
	return nil
}
