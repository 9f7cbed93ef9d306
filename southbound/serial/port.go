package serial

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fieldgate/fieldgate/internal/devnode"
	goserial "go.bug.st/serial"
	"go.bug.st/serial/enumerator"
)

// byIDDir holds udev's stable links to USB serial devices.
const byIDDir = "/dev/serial/by-id"

var parities = map[string]goserial.Parity{
	"none":  goserial.NoParity,
	"odd":   goserial.OddParity,
	"even":  goserial.EvenParity,
	"mark":  goserial.MarkParity,
	"space": goserial.SpaceParity,
}

var stopBits = map[float64]goserial.StopBits{
	1:   goserial.OneStopBit,
	1.5: goserial.OnePointFiveStopBits,
	2:   goserial.TwoStopBits,
}

// mode returns the library's port settings for a validated sensor.
func mode(s Sensor) *goserial.Mode {
	return &goserial.Mode{
		BaudRate: s.Baud,
		DataBits: s.DataBits,
		Parity:   parities[s.Parity],
		StopBits: stopBits[s.StopBits],
	}
}

// openPort resolves path (following symlinks such as /dev/serial/by-id/...
// again on every call, since an adapter plugged in again may get a new
// /dev/ttyUSBn) and opens the device. It returns the port and the device
// it resolved to.
func openPort(path string, m *goserial.Mode) (goserial.Port, string, error) {
	dev, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, "", fmt.Errorf("resolve %s: %w", path, err)
	}
	p, err := goserial.Open(dev, m)
	if err != nil {
		return nil, dev, fmt.Errorf("open %s: %w", dev, err)
	}
	return p, dev, nil
}

// errPortGone marks the loss of an open port: an I/O error, a hang-up, or
// its device node gone. Its text is the reason in the retained status.
var errPortGone = errors.New("serial port gone")

// reasonPortGone is the status reason of a lost port.
var reasonPortGone = errPortGone.Error()

// presenceTick is how often a sensor waiting to reopen its port looks
// whether the port path (resolved through its symlinks) appeared or
// changed: a port that comes back is opened at once, not at the end of the
// backoff.
const presenceTick = 200 * time.Millisecond

// waitRetry waits d before the next attempt to open path, or less when
// path appears or starts resolving to another device node meanwhile. It
// reports false when ctx ended first.
func waitRetry(ctx context.Context, d time.Duration, path string) bool {
	seen := devnode.Identity(path)
	t := time.NewTimer(d)
	defer t.Stop()
	tick := time.NewTicker(presenceTick)
	defer tick.Stop()
	for {
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
		now := devnode.Identity(path)
		if now != "" && now != seen {
			return true
		}
		seen = now
	}
}

// PortInfo describes a serial port present on the system, for the web page.
type PortInfo struct {
	// Name is the device, e.g. /dev/ttyUSB0.
	Name string `json:"name"`
	// ByID is the stable /dev/serial/by-id/... link to it, when udev made
	// one (USB adapters); use it as a sensor's port.
	ByID string `json:"by_id,omitempty"`
	// USB is true for USB adapters; VID, PID (upper-case hex), serial
	// number, manufacturer and product come from sysfs when known.
	USB          bool   `json:"usb"`
	VID          string `json:"vid,omitempty"`
	PID          string `json:"pid,omitempty"`
	SerialNumber string `json:"serial_number,omitempty"`
	Manufacturer string `json:"manufacturer,omitempty"`
	Product      string `json:"product,omitempty"`
	// Sensor names the configured sensor that has the port open, if any.
	Sensor string `json:"sensor,omitempty"`
}

// listPorts lists the serial ports present, with USB details and by-id
// links, marking those that inUse (device → sensor name) has open. Ports
// opened by a sensor are listed even when the library's probe skips them
// (it cannot open a port held exclusively).
func listPorts(byID string, inUse map[string]string) ([]PortInfo, error) {
	names, err := goserial.GetPortsList()
	if err != nil {
		return nil, fmt.Errorf("serial: list ports: %w", err)
	}
	details, err := enumerator.GetDetailedPortsList()
	if err != nil {
		return nil, fmt.Errorf("serial: list port details: %w", err)
	}
	for dev := range inUse {
		if !slices.Contains(names, dev) {
			names = append(names, dev)
		}
	}
	slices.Sort(names)
	return describePorts(names, details, byIDLinks(byID), inUse), nil
}

// describePorts merges the port names with their details (matched by name:
// the enumerator leaves the name empty for ports without sysfs details),
// by-id links (device → link) and the sensors using them.
func describePorts(names []string, details []*enumerator.PortDetails, links, inUse map[string]string) []PortInfo {
	out := make([]PortInfo, 0, len(names))
	for _, name := range names {
		pi := PortInfo{Name: name, ByID: links[name], Sensor: inUse[name]}
		for _, d := range details {
			if d != nil && d.Name == name {
				pi.USB = d.IsUSB
				pi.VID, pi.PID, pi.SerialNumber = d.VID, d.PID, d.SerialNumber
				pi.Manufacturer, pi.Product = d.Manufacturer, d.Product
				break
			}
		}
		out = append(out, pi)
	}
	return out
}

// byIDLinks maps each device to the link in dir that points to it. A
// missing dir (no USB serial adapter plugged in) gives an empty map.
func byIDLinks(dir string) map[string]string {
	links := make(map[string]string)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return links
	}
	for _, e := range entries {
		link := filepath.Join(dir, e.Name())
		dev, err := filepath.EvalSymlinks(link)
		if err != nil {
			continue
		}
		if _, dup := links[dev]; !dup {
			links[dev] = link
		}
	}
	return links
}
