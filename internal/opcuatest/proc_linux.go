package opcuatest

import "syscall"

// sysProcAttr kills the node process when the test process dies, so that a
// crashed test leaves no server behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
