package board

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// led is one LED under /sys/class/leds. A nil *led is an LED that is not
// configured or not present: setting it does nothing.
type led struct {
	dir string
	max int

	mu    sync.Mutex
	known bool // whether state is what was last written
	state bool
}

// ledSet holds the status LEDs.
type ledSet struct {
	heartbeat, uplink, fault *led
}

// openLEDs finds the configured LEDs below root/sys/class/leds and takes
// them over from any kernel trigger (trigger "none"). LEDs that are missing
// or not writable are logged and left out.
func openLEDs(root string, names LEDs, log *slog.Logger) ledSet {
	open := func(role, name string) *led {
		if name == "" {
			return nil
		}
		l, err := openLED(filepath.Join(root, "sys/class/leds", name))
		if err != nil {
			log.Warn("status LED unavailable", "role", role, "led", name, "error", err)
			return nil
		}
		return l
	}
	return ledSet{
		heartbeat: open("heartbeat", names.Heartbeat),
		uplink:    open("uplink", names.Uplink),
		fault:     open("fault", names.Fault),
	}
}

// openLED reads max_brightness and switches the trigger to "none".
func openLED(dir string) (*led, error) {
	max := 1
	if b, err := os.ReadFile(filepath.Join(dir, "max_brightness")); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			max = n
		}
	} else {
		return nil, fmt.Errorf("led %s: %w", dir, err)
	}
	if err := writeSysfs(filepath.Join(dir, "trigger"), "none"); err != nil {
		return nil, fmt.Errorf("led %s: %w", dir, err)
	}
	return &led{dir: dir, max: max}, nil
}

// set switches the LED on (max_brightness) or off; it writes only changes.
func (l *led) set(on bool) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.known && l.state == on {
		return nil
	}
	v := "0"
	if on {
		v = strconv.Itoa(l.max)
	}
	if err := writeSysfs(filepath.Join(l.dir, "brightness"), v); err != nil {
		l.known = false
		return fmt.Errorf("led %s: %w", l.dir, err)
	}
	l.known, l.state = true, on
	return nil
}

// off switches every LED off (errors ignored: it runs on the way out).
func (s ledSet) off() {
	for _, l := range []*led{s.heartbeat, s.uplink, s.fault} {
		_ = l.set(false)
	}
}

// writeSysfs writes one value to an existing sysfs attribute (never
// creating it, as sysfs would refuse anyway).
func writeSysfs(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
