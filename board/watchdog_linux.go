package board

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// hardwareWatchdog is an open Linux watchdog device (/dev/watchdog). Once
// opened, the driver resets the board unless it is written to within its
// timeout; writing 'V' just before closing disarms it ("magic close"),
// unless the kernel was built with CONFIG_WATCHDOG_NOWAYOUT.
type hardwareWatchdog struct {
	path    string
	f       *os.File
	timeout time.Duration
}

// openWatchdog opens the device, asks the driver for the given timeout and
// reads back the one it applies. A plain file (tests) answers no ioctl:
// then the configured timeout paces the pings.
func openWatchdog(path string, timeout time.Duration, log *slog.Logger) (*hardwareWatchdog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("watchdog %s: open: %w", path, err)
	}
	w := &hardwareWatchdog{path: path, f: f, timeout: timeout}
	fd := int(f.Fd())
	if secs := int(timeout / time.Second); secs > 0 {
		if err := unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, secs); err != nil && !errors.Is(err, unix.ENOTTY) {
			log.Warn("watchdog: driver refused the timeout, keeping its own", "device", path, "timeout", timeout, "error", err)
		}
	}
	if secs, err := unix.IoctlGetInt(fd, unix.WDIOC_GETTIMEOUT); err == nil && secs > 0 {
		w.timeout = time.Duration(secs) * time.Second
	}
	if w.timeout < 2*time.Millisecond {
		w.timeout = 2 * time.Millisecond
	}
	if err := w.ping(); err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

// ping restarts the driver's countdown.
func (w *hardwareWatchdog) ping() error {
	if _, err := w.f.Write([]byte{'1'}); err != nil {
		return fmt.Errorf("watchdog %s: ping: %w", w.path, err)
	}
	return nil
}

// magicClose writes 'V' and closes the device, which disarms the watchdog.
func (w *hardwareWatchdog) magicClose() error {
	_, err := w.f.Write([]byte{'V'})
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("watchdog %s: magic close: %w", w.path, err)
	}
	return nil
}
