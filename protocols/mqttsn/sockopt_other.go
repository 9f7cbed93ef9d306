//go:build !unix

package mqttsn

import "syscall"

// allowBroadcast does nothing here: broadcasts may be refused.
func allowBroadcast(_, _ string, _ syscall.RawConn) error { return nil }
