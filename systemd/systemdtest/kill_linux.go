package systemdtest

import "syscall"

// syscallKill sends SIGKILL to pid; for PID 1 of a pid namespace, that ends
// the namespace and everything in it.
func syscallKill(pid int) { syscall.Kill(pid, syscall.SIGKILL) }
