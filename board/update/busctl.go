package update

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// RAUC's D-Bus names.
const (
	raucService   = "de.pengutronix.rauc"
	raucPath      = "/"
	raucInterface = "de.pengutronix.rauc.Installer"
)

// Busctl is RAUC's D-Bus service on the system bus, reached with
// systemd's busctl (`busctl --system --json=short`). When busctl, the
// system bus or RAUC's service is missing, its errors wrap ErrUnavailable.
type Busctl struct {
	// Run runs busctl with args and returns its standard output (nil:
	// exec busctl). Tests give recorded answers.
	Run func(ctx context.Context, args ...string) ([]byte, error)
}

func (b Busctl) run(ctx context.Context, args ...string) ([]byte, error) {
	if b.Run != nil {
		return b.Run(ctx, args...)
	}
	cmd := exec.CommandContext(ctx, "busctl", append([]string{"--system", "--json=short"}, args...)...)
	out, err := cmd.Output()
	if errors.Is(err, exec.ErrNotFound) {
		return nil, fmt.Errorf("%w: busctl (systemd) is not installed", ErrUnavailable)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		msg := strings.TrimSpace(string(ee.Stderr))
		if serviceMissing(msg) {
			return nil, fmt.Errorf("%w: busctl %s: %s", ErrUnavailable, args[0], msg)
		}
		return nil, fmt.Errorf("busctl %s: %w: %s", args[0], err, msg)
	}
	return out, err
}

// serviceMissing tells from busctl's error message that RAUC's service,
// or the system bus itself, is not there (as opposed to a failed call).
func serviceMissing(msg string) bool {
	for _, s := range []string{
		"was not provided by any .service files", // no RAUC on the bus, none to activate
		"ServiceUnknown",
		"Failed to connect to bus", // no system bus (a container, a development machine)
		"Failed to connect to system scope bus",
		"Could not activate remote peer", // activation failed (RAUC's unit cannot start)
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// reply is busctl's JSON form of a D-Bus value.
type reply struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// property reads one property of the Installer into v.
func (b Busctl) property(ctx context.Context, name, wantType string, v any) error {
	out, err := b.run(ctx, "get-property", raucService, raucPath, raucInterface, name)
	if err != nil {
		return err
	}
	var r reply
	if err := json.Unmarshal(out, &r); err != nil {
		return fmt.Errorf("rauc %s: %w", name, err)
	}
	if r.Type != wantType {
		return fmt.Errorf("rauc %s: type %q, want %q", name, r.Type, wantType)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		return fmt.Errorf("rauc %s: %w", name, err)
	}
	return nil
}

// InstallBundle calls InstallBundle(source, {}).
func (b Busctl) InstallBundle(ctx context.Context, source string) error {
	_, err := b.run(ctx, "call", raucService, raucPath, raucInterface, "InstallBundle", "sa{sv}", source, "0")
	return err
}

// Operation reads the Operation property.
func (b Busctl) Operation(ctx context.Context) (string, error) {
	var s string
	return s, b.property(ctx, "Operation", "s", &s)
}

// LastError reads the LastError property.
func (b Busctl) LastError(ctx context.Context) (string, error) {
	var s string
	return s, b.property(ctx, "LastError", "s", &s)
}

// BootSlot reads the BootSlot property.
func (b Busctl) BootSlot(ctx context.Context) (string, error) {
	var s string
	return s, b.property(ctx, "BootSlot", "s", &s)
}

// Progress reads the Progress property, a (isi) struct.
func (b Busctl) Progress(ctx context.Context) (Progress, error) {
	var raw []json.RawMessage
	if err := b.property(ctx, "Progress", "(isi)", &raw); err != nil {
		return Progress{}, err
	}
	var p Progress
	if len(raw) != 3 || json.Unmarshal(raw[0], &p.Percent) != nil || json.Unmarshal(raw[1], &p.Message) != nil || json.Unmarshal(raw[2], &p.Depth) != nil {
		return Progress{}, fmt.Errorf("rauc Progress: not (isi): %s", raw)
	}
	return p, nil
}

// Reboot asks systemd-logind to reboot (org.freedesktop.login1.Manager
// Reboot, not interactive); the image's polkit rule lets the service
// user do it.
func (b Busctl) Reboot(ctx context.Context) error {
	_, err := b.run(ctx, "call", "org.freedesktop.login1", "/org/freedesktop/login1", "org.freedesktop.login1.Manager", "Reboot", "b", "false")
	if err != nil && (strings.Contains(err.Error(), "Access denied") || strings.Contains(err.Error(), "nteractive authentication required")) {
		return fmt.Errorf("the gateway may not reboot the board (the image has no polkit rule for it): reboot it from the console or over SSH (sudo systemctl reboot): %w", err)
	}
	return err
}

// Mark calls Mark(state, slot) → (slot name, message).
func (b Busctl) Mark(ctx context.Context, state, slot string) (string, string, error) {
	out, err := b.run(ctx, "call", raucService, raucPath, raucInterface, "Mark", "ss", state, slot)
	if err != nil {
		return "", "", err
	}
	var r reply
	var data []string
	if err := json.Unmarshal(out, &r); err != nil || r.Type != "ss" || json.Unmarshal(r.Data, &data) != nil || len(data) != 2 {
		return "", "", fmt.Errorf("rauc Mark: unexpected answer %q", out)
	}
	return data[0], data[1], nil
}
