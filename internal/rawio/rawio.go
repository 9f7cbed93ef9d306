// Package rawio gives accepted TCP connections Read and Write methods that
// issue the non-blocking read(2) and write(2) as raw system calls.
//
// Why: the standard library's socket I/O goes through the runtime's
// entersyscall/exitsyscall, and entering a system call wakes the runtime's
// monitor thread (sysmon) whenever it was parked because every P was idle.
// A broker at a moderate, steady rate (10,000 messages/s on two cores) is
// exactly that load: it goes idle between bursts, and each burst paid for a
// sysmon wake-up and its 20 µs polling loop. Profiles showed sysmon's
// nanosleep and futex calls at about 15 % of the broker's CPU, more than the
// MQTT work itself. Sockets are non-blocking, so the call never blocks and
// does not need to hand its P off: a raw system call is safe, and readiness
// waiting still goes through the netpoller (syscall.RawConn), so deadlines
// and Close behave exactly as with *net.TCPConn. Measured in docs/bench.md.
//
// Built with -race, the calls go through the syscall package instead, so
// the race detector sees the ordering that data through a socket creates.
package rawio

import "net"

// Wrap returns c with raw-syscall Read and Write when c is a *net.TCPConn on
// a platform that supports it, and c unchanged otherwise.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	return wrapTCP(tc)
}

// Listener wraps every connection accepted by ln with Wrap.
type Listener struct {
	net.Listener
}

// Accept waits for the next connection and wraps it.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}
