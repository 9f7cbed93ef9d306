//go:build !unix

package board

import "errors"

// RaiseFileLimit is not supported on this system.
func RaiseFileLimit() (uint64, error) {
	return 0, errors.New("board: no RLIMIT_NOFILE on this system")
}

// FileLimit returns 0: the limit of open files is unknown here.
func FileLimit() uint64 { return 0 }
