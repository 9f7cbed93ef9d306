package rawio

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// Conn is a *net.TCPConn whose Read and Write make raw system calls. Every
// other method (deadlines, CloseWrite, addresses) is the TCPConn's own.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn
}

func wrapTCP(tc *net.TCPConn) net.Conn {
	rc, err := tc.SyscallConn()
	if err != nil {
		return tc
	}
	return &Conn{TCPConn: tc, rc: rc}
}

// RawConn returns the connection's syscall.RawConn (made once, at Wrap),
// for a Poller.
func (c *Conn) RawConn() syscall.RawConn { return c.rc }

// Read reads up to len(p) bytes; it waits in the netpoller while the socket
// has nothing to read.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, e := sysRead(fd, p)
			switch e {
			case 0:
				n = r
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
	})
	if err != nil {
		return 0, c.opError("read", err)
	}
	if errno != 0 {
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p; it waits in the netpoller while the socket's send
// buffer is full.
func (c *Conn) Write(p []byte) (int, error) {
	n := 0
	var errno syscall.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			r, e := sysWrite(fd, p[n:])
			switch e {
			case 0:
				n += r
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	if err != nil {
		return n, c.opError("write", err)
	}
	if errno != 0 {
		return n, c.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// opError reports err like *net.TCPConn does, so callers that test for
// net.ErrClosed, os.ErrDeadlineExceeded or a timeout see the same errors.
func (c *Conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		e := *oe
		e.Op = op
		return &e
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
