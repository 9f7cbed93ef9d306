//go:build faultinject

package clock

import (
	"log/slog"
	"os"
)

// FaultInjection reports whether this build honours OffsetFileEnv (the
// tag faultinject). It does.
const FaultInjection = true

// ForProcess is the clock of the gateway process: a FileOffset clock on
// the file named by $FIELDGATE_FAULT_CLOCK_FILE when it is set (a warning
// says so: this is a test build), else Real.
func ForProcess(log *slog.Logger) Clock {
	path := os.Getenv(OffsetFileEnv)
	if path == "" {
		return Real{}
	}
	if log != nil {
		log.Warn("fault injection: the wall clock is shifted by the offset in a file (test build)", "file", path)
	}
	return NewFileOffset(path)
}
