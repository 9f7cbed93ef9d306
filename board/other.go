//go:build !linux

package board

import (
	"errors"
	"log/slog"
	"time"
)

// errNotLinux is what the hardware parts answer off Linux.
var errNotLinux = errors.New("board: only supported on linux")

type hardwareWatchdog struct {
	path    string
	timeout time.Duration
}

func openWatchdog(string, time.Duration, *slog.Logger) (*hardwareWatchdog, error) {
	return nil, errNotLinux
}
func (*hardwareWatchdog) ping() error       { return errNotLinux }
func (*hardwareWatchdog) magicClose() error { return errNotLinux }
func statDisk(string) (disk, error)         { return disk{}, errNotLinux }
