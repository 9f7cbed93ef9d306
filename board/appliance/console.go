package appliance

import (
	"fmt"
	"os"
	"syscall"
)

// Console is the kernel console: on a board, its serial console.
const Console = "/dev/console"

// WriteConsole writes msg to the terminal device path (Console) when this
// process may open it for writing, without blocking on a stalled line and
// without making it the controlling terminal. An error says why not; the
// caller usually logs it at debug level, since most processes may not.
func WriteConsole(path, msg string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("appliance: console: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(msg); err != nil {
		return fmt.Errorf("appliance: console %s: %w", path, err)
	}
	return nil
}

// SetupBanner is the text shown on the console and in the terminal while
// the first-boot setup is not done.
func SetupBanner(code string) string {
	return "\r\n*** fieldgate first boot: open the setup page and enter the setup code " + code + " ***\r\n\r\n"
}
