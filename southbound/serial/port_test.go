package serial

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"go.bug.st/serial/enumerator"

	"github.com/fieldgate/fieldgate/bus"
)

func TestDescribePorts(t *testing.T) {
	dir := t.TempDir()
	dev := filepath.Join(dir, "ttyUSB0")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	byID := filepath.Join(dir, "by-id")
	if err := os.Mkdir(byID, 0o755); err != nil {
		t.Fatal(err)
	}
	linkPath := filepath.Join(byID, "usb-FTDI_FT232R_A10K1234-if00-port0")
	if err := os.Symlink("../ttyUSB0", linkPath); err != nil {
		t.Fatal(err)
	}
	// A dangling link (device gone) is skipped.
	if err := os.Symlink("../ttyUSB9", filepath.Join(byID, "usb-gone")); err != nil {
		t.Fatal(err)
	}
	links := byIDLinks(byID)
	if want := map[string]string{dev: linkPath}; !reflect.DeepEqual(links, want) {
		t.Fatalf("byIDLinks = %v, want %v", links, want)
	}
	if got := byIDLinks(filepath.Join(dir, "missing")); len(got) != 0 {
		t.Errorf("missing dir: %v", got)
	}

	details := []*enumerator.PortDetails{
		{}, // the enumerator's entry for a port without sysfs details
		{Name: dev, IsUSB: true, VID: "0403", PID: "6001", SerialNumber: "A10K1234", Manufacturer: "FTDI", Product: "FT232R USB UART"},
	}
	got := describePorts([]string{"/dev/ttyS0", dev}, details, links, map[string]string{dev: "gps"})
	want := []PortInfo{
		{Name: "/dev/ttyS0"},
		{Name: dev, ByID: linkPath, USB: true, VID: "0403", PID: "6001", SerialNumber: "A10K1234",
			Manufacturer: "FTDI", Product: "FT232R USB UART", Sensor: "gps"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("describePorts\n got %+v\nwant %+v", got, want)
	}
}

// TestPortsOnThisMachine lists the real ports: whatever the machine has,
// it must not fail, and a port a sensor holds open is listed with it.
func TestPortsOnThisMachine(t *testing.T) {
	line := newFakeLine(t)
	b := bus.NewMemory(nil)
	s := startService(t, testConfig(Sensor{Name: "gps", Port: line.path, Parser: "nmea"}), b)
	waitStats(t, s, "online", func(st SensorStats) bool { return st.Online })
	ports, err := s.Ports()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range ports {
		t.Logf("port %+v", p)
		if p.Name == line.path && p.Sensor == "gps" {
			found = true
		}
	}
	if !found {
		t.Errorf("the sensor's port %s is not listed", line.path)
	}
}

func TestLogLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLogLimiter(func() time.Time { return now })
	logged, suppressed := 0, 0
	for range 1000 {
		if ok, n := l.allow(); ok {
			logged++
			suppressed += n
		}
	}
	// A burst goes through, the rest is held back and counted; the line
	// logged one interval later reports it.
	if logged != dropLogBurst {
		t.Errorf("logged %d of 1000, want the burst of %d", logged, dropLogBurst)
	}
	now = now.Add(dropLogInterval)
	ok, held := l.allow()
	if !ok || suppressed+held != 1000-logged {
		t.Errorf("after %s: ok %v, suppressed %d, want %d", dropLogInterval, ok, suppressed+held, 1000-logged)
	}
}
