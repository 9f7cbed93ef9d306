// Package board is fieldgate's edge to the operating system and the
// hardware it runs on: the systemd notify protocol (READY, STATUS,
// RELOADING, STOPPING and watchdog pings), the hardware watchdog device
// with its magic close, the board's identity (model, serial number, MAC
// addresses), its health (CPU temperature, memory, free space on the data
// partition and the reserve the outbox honours) and the status LEDs under
// /sys/class/leds.
//
// Every hardware path is read below Options.Root, so tests lay out a
// temporary directory like sysfs and procfs; the notify protocol talks to
// whatever $NOTIFY_SOCKET names, so tests listen on a socket of their own.
package board

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/time/rate"
)

// Options configure a Board.
type Options struct {
	// Config is the board section, already validated.
	Config Config
	// Root is the directory below which /proc and /sys are read and the
	// LEDs written ("" = "/"). Tests pass a temporary directory.
	Root string
	// DataDir is a directory on the data partition (the gateway's data_dir);
	// its file system is the one whose free space is watched. "" disables
	// the disk checks.
	DataDir string
	// Logger receives the board's logs; nil discards them.
	Logger *slog.Logger
}

// Board is the running gateway's view of its board. Its methods are safe
// for concurrent use; Run owns the watchdogs and the heartbeat.
type Board struct {
	cfg     Config
	root    string
	dataDir string
	log     *slog.Logger

	leds  ledSet
	ident Identity

	// disk caches the last statfs of the data partition for ReserveReached.
	diskMu      sync.Mutex
	diskChecked time.Time
	reserveHit  atomic.Bool

	uplink, unhealthy atomic.Bool
	logNotify         rate.Sometimes
	logLED            rate.Sometimes
	running           atomic.Bool
}

// diskCacheFor is how long one statfs answers ReserveReached: the outbox
// asks before each append, and free space does not change faster than that
// matters.
const diskCacheFor = time.Second

// New reads the board's identity and prepares its LEDs. It opens no
// watchdog: Run does. A missing LED is logged and left alone.
func New(opts Options) (*Board, error) {
	root := opts.Root
	if root == "" {
		root = "/"
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Board{
		cfg:       opts.Config,
		root:      root,
		dataDir:   opts.DataDir,
		log:       log,
		logNotify: rate.Sometimes{Interval: time.Minute},
		logLED:    rate.Sometimes{Interval: time.Minute},
	}
	b.ident = readIdentity(root)
	b.leds = openLEDs(root, opts.Config.LEDs, log)
	if opts.DataDir != "" {
		if _, err := statDisk(opts.DataDir); err != nil {
			return nil, fmt.Errorf("board: data partition: %w", err)
		}
	}
	return b, nil
}

// Identity returns what New read of the board's identity.
func (b *Board) Identity() Identity { return b.ident }

// SetUplink switches the uplink LED: on while the cloud uplink is connected.
func (b *Board) SetUplink(connected bool) {
	b.uplink.Store(connected)
	b.setLED(b.leds.uplink, connected)
}

// SetFault switches the fault LED on or off (Run also switches it on while
// the health check fails or the data reserve is reached).
func (b *Board) SetFault(on bool) { b.setLED(b.leds.fault, on) }

func (b *Board) setLED(l *led, on bool) {
	if err := l.set(on); err != nil {
		b.logLED.Do(func() { b.log.Warn("LED write failed", "error", err) })
	}
}

// Run feeds the watchdogs until ctx is done and returns nil then. Every tick
// it calls healthy; only while healthy returns nil does it send WATCHDOG=1
// to systemd (at half of WATCHDOG_USEC, when systemd set one), ping the
// hardware watchdog device (at half of its timeout, when one is configured)
// and blink the heartbeat LED. A deadlocked gateway therefore stops the
// pings and is restarted by systemd or reset by the hardware.
//
// healthy runs in Run's goroutine and must return promptly (compare
// progress timestamps rather than wait). nil means always healthy.
//
// On return the hardware watchdog gets its magic close ('V') so that a
// clean stop does not reset the board, and the LEDs are switched off.
// Run returns an error at once when the watchdog device cannot be opened.
func (b *Board) Run(ctx context.Context, healthy func() error) error {
	if !b.running.CompareAndSwap(false, true) {
		return errors.New("board: Run called twice")
	}
	defer b.running.Store(false)
	if healthy == nil {
		healthy = func() error { return nil }
	}

	var hw *hardwareWatchdog
	if dev := b.cfg.Watchdog.Device; dev != "" {
		var err error
		if hw, err = openWatchdog(dev, b.cfg.Watchdog.Timeout, b.log); err != nil {
			return fmt.Errorf("board: %w", err)
		}
		defer func() {
			if err := hw.magicClose(); err != nil {
				b.log.Error("watchdog magic close failed: the board may reset", "device", dev, "error", err)
			} else {
				b.log.Info("watchdog disarmed", "device", dev)
			}
		}()
	}
	defer b.leds.off()

	sdInterval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		b.log.Warn("systemd watchdog: bad WATCHDOG_USEC, not pinging systemd", "error", err)
	}
	var sdTick, hwTick <-chan time.Time
	if sdInterval > 0 {
		t := time.NewTicker(sdInterval / 2)
		defer t.Stop()
		sdTick = t.C
		b.log.Info("systemd watchdog enabled", "interval", sdInterval)
	}
	if hw != nil {
		t := time.NewTicker(hw.timeout / 2)
		defer t.Stop()
		hwTick = t.C
		b.log.Info("hardware watchdog armed", "device", hw.path, "timeout", hw.timeout)
	}
	check := b.cfg.CheckInterval
	if check <= 0 {
		check = time.Second
	}
	beat := time.NewTicker(check / 2)
	defer beat.Stop()

	beatOn := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sdTick:
			if b.check(healthy) {
				b.notify(daemon.SdNotifyWatchdog)
			}
		case <-hwTick:
			if b.check(healthy) {
				if err := hw.ping(); err != nil {
					b.log.Error("watchdog ping failed", "device", hw.path, "error", err)
				}
			}
		case <-beat.C:
			if b.check(healthy) {
				beatOn = !beatOn
			} else {
				beatOn = false
			}
			b.setLED(b.leds.heartbeat, beatOn)
		}
	}
}

// check runs the health check, updates the fault LED and logs each change
// of state (so a failing check logs once, not every tick).
func (b *Board) check(healthy func() error) bool {
	err := healthy()
	reserve := b.ReserveReached()
	switch {
	case err != nil && !b.unhealthy.Swap(true):
		b.log.Error("health check failed: watchdog pings stopped", "error", err)
	case err == nil && b.unhealthy.Swap(false):
		b.log.Info("health check passes again: watchdog pings resumed")
	}
	b.SetFault(err != nil || reserve)
	return err == nil
}
