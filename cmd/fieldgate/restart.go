package main

import (
	"errors"
	"log/slog"
	"os"
	"syscall"

	"github.com/fieldgate/fieldgate/gateway"
)

// restartGateway starts the gateway again after it stopped for a restart
// (the page's "Restart now", gateway.ErrRestart). Under systemd
// ($INVOCATION_ID or $NOTIFY_SOCKET set) the process exits and the unit's
// Restart=always starts a new one, so that systemd sees the restart, the
// watchdog and READY=1 start over and the journal shows it. Elsewhere the
// process replaces itself with a fresh copy of the binary (execve, same
// arguments, environment and process id), so a supervisor-less run or a
// shell keeps its process. err is Run's error: a clean stop exits 0, one
// that abandoned parts exits 1 (and, outside systemd, still re-executes:
// the abandoned goroutines die with the old image).
func restartGateway(log *slog.Logger, err error) int {
	clean := errors.Is(err, gateway.ErrRestart) && len(unwrapAll(err)) <= 1
	if !clean {
		log.Error("gateway stopped for a restart, abandoning parts", "err", err)
	}
	if os.Getenv("INVOCATION_ID") != "" || os.Getenv("NOTIFY_SOCKET") != "" {
		log.Info("restarting: exiting for systemd to start fieldgate again")
		if clean {
			return 0
		}
		return 1
	}
	exe, xerr := os.Executable()
	if xerr == nil {
		log.Info("restarting: executing fieldgate again", "path", exe)
		xerr = syscall.Exec(exe, os.Args, os.Environ())
	}
	log.Error("restart failed: cannot execute fieldgate again; start it by hand", "err", xerr)
	return 1
}

// unwrapAll lists the errors joined in err (err itself if it joins none).
func unwrapAll(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
