//go:build unix

package board

import (
	"fmt"
	"syscall"
)

// RaiseFileLimit raises the soft limit of open files (RLIMIT_NOFILE) to
// the hard limit and returns the new soft limit. The Go runtime already
// does so at start on Linux, but only for itself: setting it explicitly
// makes the limit the gateway relies on visible and keeps it for child
// processes. Every socket of the broker and of the page is a descriptor,
// so this is what lets a flood of connections hit the parts' own caps
// rather than "too many open files".
func RaiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("board: get RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("board: raise RLIMIT_NOFILE to %d: %w", lim.Max, err)
	}
	return uint64(lim.Cur), nil
}

// FileLimit returns the soft limit of open files (0 when unknown).
func FileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	return uint64(lim.Cur)
}
