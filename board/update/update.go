// Package update installs A/B update bundles through RAUC and marks the
// booted slot good only once the gateway has run healthy for a while.
//
// RAUC installs a bundle into the slot not booted and switches the
// bootloader to it; the new slot boots with a limited number of attempts.
// Manager.RunMarkGood marks it good (de.pengutronix.rauc.Installer.Mark
// "good" "booted") only after the gateway has been healthy without a break
// for the configured time; a slot never marked good is given up by the
// bootloader, which boots the old one again. Nothing here marks a slot
// bad: falling back is the bootloader's job, and it happens even when the
// new gateway cannot run at all.
//
// Installer is the part of RAUC's D-Bus interface the gateway uses. Busctl
// implements it over the system bus with systemd's busctl (no D-Bus
// library in the binary); StandIn is a stand-in for where RAUC's service
// cannot run (tests, development machines) and says so in its name.
//
// `fieldgate run -update rauc` wires a Manager over Busctl into the page
// and the API; the appliance image (yocto/meta-fieldgate, fieldgate-os)
// runs the gateway so. Without RAUC's service the gateway runs on and
// reports ErrUnavailable.
package update

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Progress is RAUC's Progress property: percent done, what it does, and
// the nesting depth of that step.
type Progress struct {
	Percent int    `json:"percent"`
	Message string `json:"message"`
	Depth   int    `json:"depth"`
}

// Installer is the part of RAUC's de.pengutronix.rauc.Installer D-Bus
// interface the gateway uses.
type Installer interface {
	// InstallBundle starts installing the bundle at source (a path or a
	// URL RAUC can stream from); it returns once RAUC accepted the job.
	InstallBundle(ctx context.Context, source string) error
	// Operation is "idle" or "installing".
	Operation(ctx context.Context) (string, error)
	// Progress of the running or last installation.
	Progress(ctx context.Context) (Progress, error)
	// LastError is the last installation's error, "" if it succeeded.
	LastError(ctx context.Context) (string, error)
	// BootSlot is the slot the system booted from (e.g. "A").
	BootSlot(ctx context.Context) (string, error)
	// Mark marks slot ("booted", "other" or a slot name) with state
	// ("good", "bad" or "active") and returns the slot and RAUC's message.
	Mark(ctx context.Context, state, slot string) (slotName, message string, err error)
}

// Rebooter reboots the board (into the slot RAUC made primary).
type Rebooter interface {
	Reboot(ctx context.Context) error
}

// Status is what the page shows of an update.
type Status struct {
	Operation string   `json:"operation"`
	Progress  Progress `json:"progress"`
	LastError string   `json:"last_error,omitempty"`
	BootSlot  string   `json:"boot_slot,omitempty"`
	// MarkedGood is when this run marked the booted slot good (zero: not
	// yet).
	MarkedGood time.Time `json:"marked_good,omitzero"`
}

// ErrBusy is returned by Install while an installation runs.
var ErrBusy = errors.New("update: an installation is already running")

// ErrUnavailable is wrapped by an Installer's errors when RAUC's D-Bus
// service cannot be reached at all (no busctl, no system bus, no
// de.pengutronix.rauc): the gateway runs on, and Status, Install and the
// mark-good loop say so instead of failing it.
var ErrUnavailable = errors.New("RAUC is not available on this system (its D-Bus service de.pengutronix.rauc does not answer)")

// Manager runs installations and marks the booted slot good.
type Manager struct {
	inst Installer
	boot Rebooter
	log  *slog.Logger
	now  func() time.Time

	mu         sync.Mutex
	markedGood time.Time
}

// NewManager returns a Manager over inst, rebooting with boot (nil: the
// Installer when it is a Rebooter); log nil discards, now nil is time.Now.
func NewManager(inst Installer, log *slog.Logger, now func() time.Time) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	m := &Manager{inst: inst, log: log, now: now}
	m.boot, _ = inst.(Rebooter)
	return m
}

// ErrNotInstalled is returned by Reboot when no installation finished
// successfully.
var ErrNotInstalled = errors.New("update: no installed update to boot (install one first)")

// Reboot reboots into the installed update: only when RAUC is idle and
// its last installation succeeded (100 %, no LastError).
func (m *Manager) Reboot(ctx context.Context) error {
	s, err := m.Status(ctx)
	if err != nil {
		return err
	}
	if s.Operation != "idle" {
		return ErrBusy
	}
	if s.LastError != "" || s.Progress.Percent != 100 {
		return ErrNotInstalled
	}
	if m.boot == nil {
		return errors.New("update: this installer cannot reboot the board")
	}
	m.log.Warn("update: rebooting into the installed update")
	if err := m.boot.Reboot(ctx); err != nil {
		return fmt.Errorf("update: reboot: %w", err)
	}
	return nil
}

// Install starts installing the bundle at source, unless one is being
// installed already (ErrBusy).
func (m *Manager) Install(ctx context.Context, source string) error {
	op, err := m.inst.Operation(ctx)
	if err != nil {
		return fmt.Errorf("update: cannot install: %w", err)
	}
	if op != "idle" {
		return ErrBusy
	}
	if err := m.inst.InstallBundle(ctx, source); err != nil {
		return fmt.Errorf("update: install: %w", err)
	}
	m.log.Info("update: installing bundle")
	return nil
}

// Status reads RAUC's state; its error wraps ErrUnavailable when RAUC's
// service cannot be reached.
func (m *Manager) Status(ctx context.Context) (Status, error) {
	var s Status
	var err, e error
	if s.Operation, e = m.inst.Operation(ctx); e != nil {
		if errors.Is(e, ErrUnavailable) {
			// One answer, not four of the same.
			return s, fmt.Errorf("update: %w", e)
		}
		err = errors.Join(err, e)
	}
	if s.Progress, e = m.inst.Progress(ctx); e != nil {
		err = errors.Join(err, e)
	}
	if s.LastError, e = m.inst.LastError(ctx); e != nil {
		err = errors.Join(err, e)
	}
	if s.BootSlot, e = m.inst.BootSlot(ctx); e != nil {
		err = errors.Join(err, e)
	}
	m.mu.Lock()
	s.MarkedGood = m.markedGood
	m.mu.Unlock()
	if err != nil {
		return s, fmt.Errorf("update: status: %w", err)
	}
	return s, nil
}

// RunMarkGood marks the booted slot good once healthy has reported true
// at every check (every interval) for after without a break, then returns
// nil; an unhealthy check starts the wait again. It returns ctx's error
// when ctx ends first; a failed Mark is logged (once per distinct error)
// and tried again at the next check. When RAUC is not available it says
// so once at the start and keeps trying, so that a RAUC started later is
// still used.
func (m *Manager) RunMarkGood(ctx context.Context, healthy func() bool, after, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	if _, err := m.inst.BootSlot(ctx); errors.Is(err, ErrUnavailable) {
		m.log.Warn("update: RAUC is not available: updates cannot be installed and the booted slot cannot be marked good until it is", "err", err)
	}
	var since time.Time
	var lastErr string
	for {
		now := m.now()
		switch {
		case !healthy():
			if !since.IsZero() {
				m.log.Info("update: unhealthy: the booted slot is not marked good yet")
			}
			since = time.Time{}
		case since.IsZero():
			since = now
		}
		if !since.IsZero() && now.Sub(since) >= after {
			slot, msg, err := m.inst.Mark(ctx, "good", "booted")
			if err == nil {
				m.mu.Lock()
				m.markedGood = now
				m.mu.Unlock()
				m.log.Info("update: booted slot marked good", "slot", slot, "rauc", msg, "healthy_for", now.Sub(since))
				return nil
			}
			if err.Error() != lastErr {
				m.log.Warn("update: marking the booted slot good failed; trying again", "err", err)
				lastErr = err.Error()
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
