//go:build linux && race

package rawio

import "syscall"

// Under the race detector the calls go through the syscall package, whose
// Read and Write tell the detector about the happens-before edges that data
// through the kernel creates (a packet written by one goroutine and read by
// another). Raw calls would hide those edges and report races that cannot
// happen. Everything else (waiting, errors) is the same code as without it.

func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return n, errnoOf(err)
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return n, errnoOf(err)
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if e, ok := err.(syscall.Errno); ok {
		return e
	}
	return syscall.EIO
}
