//go:build !faultinject

package clock

import "log/slog"

// FaultInjection reports whether this build honours OffsetFileEnv (the
// tag faultinject). It does not.
const FaultInjection = false

// ForProcess is the clock of the gateway process: Real. (A build with the
// tag faultinject may return a FileOffset clock instead; see
// process_faultinject.go.) log is unused here.
func ForProcess(log *slog.Logger) Clock {
	_ = log
	return Real{}
}
