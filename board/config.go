package board

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// Config is the board's section of the gateway config (`board:` in YAML).
// The gateway's config package embeds it; its defaults come from
// DefaultConfig and nowhere else.
type Config struct {
	// Watchdog configures the hardware watchdog fed directly by fieldgate,
	// for boards without systemd (under systemd, leave the device empty and
	// let systemd own /dev/watchdog with RuntimeWatchdogSec).
	Watchdog Watchdog `yaml:"watchdog"`
	// LEDs names the status LEDs under /sys/class/leds; "" leaves one unused.
	LEDs LEDs `yaml:"leds"`
	// ReserveMB is the free space, in MiB, kept on the data partition: below
	// it the outbox stops growing (its policy applies) before the disk is full.
	// 0 disables the check.
	ReserveMB int `yaml:"reserve_mb"`
	// CheckInterval is how often the health check runs and the heartbeat LED
	// blinks when no watchdog asks for more often.
	CheckInterval time.Duration `yaml:"check_interval"`
	// CPUs is how Go code uses the cores: "adaptive" (one core while the
	// gateway uses less than a quarter of one, all cores above half of one;
	// see CPUScaler) or "all" (the Go runtime's default). The GOMAXPROCS
	// environment variable overrides both.
	CPUs string `yaml:"cpus"`
}

// Watchdog configures the hardware watchdog device.
type Watchdog struct {
	// Device is the watchdog character device, e.g. /dev/watchdog; "" means
	// fieldgate does not open one (the `-watchdog` flag overrides it).
	Device string `yaml:"device"`
	// Timeout is asked of the driver (WDIOC_SETTIMEOUT) and, when the driver
	// does not report its own, used to pace the pings (at half of it).
	Timeout time.Duration `yaml:"timeout"`
}

// LEDs are the names of LEDs under /sys/class/leds (for instance "led0",
// "ACT", "green:status").
type LEDs struct {
	// Heartbeat blinks while the health check passes.
	Heartbeat string `yaml:"heartbeat"`
	// Uplink is on while the cloud uplink is connected.
	Uplink string `yaml:"uplink"`
	// Fault is on while the health check fails or the data reserve is reached.
	Fault string `yaml:"fault"`
}

// Ranges accepted by Validate.
const (
	minWatchdogTimeout = time.Second
	maxWatchdogTimeout = time.Hour
	minCheckInterval   = 100 * time.Millisecond
	maxCheckInterval   = time.Minute
	maxReserveMB       = 1 << 20 // 1 TiB
)

// DefaultConfig returns the board section's defaults: no hardware watchdog
// opened by fieldgate, no LEDs, a 64 MiB reserve, a check every second,
// adaptive use of the cores.
func DefaultConfig() Config {
	return Config{
		Watchdog:      Watchdog{Device: "", Timeout: 30 * time.Second},
		ReserveMB:     64,
		CheckInterval: time.Second,
		CPUs:          CPUsAdaptive,
	}
}

// Validate checks the section and returns every problem found, joined with
// errors.Join; each is one line "path: reason" with the path relative to the
// section (the gateway config prefixes "board.").
func (c Config) Validate() error {
	var errs []error
	addf := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if d := c.Watchdog.Device; d != "" && !filepath.IsAbs(d) {
		addf("watchdog.device", "must be an absolute path, got %q", d)
	}
	if t := c.Watchdog.Timeout; t < minWatchdogTimeout || t > maxWatchdogTimeout {
		addf("watchdog.timeout", "must be between %s and %s, got %s", minWatchdogTimeout, maxWatchdogTimeout, t)
	}
	if c.ReserveMB < 0 || c.ReserveMB > maxReserveMB {
		addf("reserve_mb", "must be between 0 and %d, got %d", maxReserveMB, c.ReserveMB)
	}
	if t := c.CheckInterval; t < minCheckInterval || t > maxCheckInterval {
		addf("check_interval", "must be between %s and %s, got %s", minCheckInterval, maxCheckInterval, t)
	}
	if c.CPUs != CPUsAdaptive && c.CPUs != CPUsAll {
		addf("cpus", "must be %q or %q, got %q", CPUsAdaptive, CPUsAll, c.CPUs)
	}
	for _, l := range []struct{ path, name string }{
		{"leds.heartbeat", c.LEDs.Heartbeat},
		{"leds.uplink", c.LEDs.Uplink},
		{"leds.fault", c.LEDs.Fault},
	} {
		if l.name == "" {
			continue
		}
		if l.name == "." || l.name == ".." || strings.ContainsAny(l.name, "/\x00") {
			addf(l.path, "must be an LED name under /sys/class/leds, got %q", l.name)
		}
	}
	return errors.Join(errs...)
}
