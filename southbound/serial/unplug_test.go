package serial

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	goserial "go.bug.st/serial"

	"github.com/fieldgate/fieldgate/bus"
)

// cpuShare is the share of one core the test process used during d.
func cpuShare(d time.Duration) float64 {
	var a, b syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &a)
	start := time.Now()
	time.Sleep(d) // kept sleep: the CPU measurement window itself, nothing to wait for
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &b)
	used := time.Duration(b.Utime.Nano() - a.Utime.Nano() + b.Stime.Nano() - a.Stime.Nano())
	return float64(used) / float64(time.Since(start))
}

// TestSocatUnplugIsALineError pulls the adapter (kills socat) under a by-id
// link: the sensor goes offline with "serial port gone" at once, costs no
// CPU while the port is missing, follows the link to another pty within
// 2 s of it appearing, and stops within 5 s while the port is gone.
func TestSocatUnplugIsALineError(t *testing.T) {
	dir := t.TempDir()
	byID := filepath.Join(dir, "usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0")
	a := startSocat(t, filepath.Join(dir, "a-sensor"), filepath.Join(dir, "a-device"))
	b := startSocat(t, filepath.Join(dir, "b-sensor"), filepath.Join(dir, "b-device")) // another pty number
	aDev, err := filepath.EvalSymlinks(filepath.Join(dir, "a-sensor"))
	if err != nil {
		t.Fatal(err)
	}
	bDev, err := filepath.EvalSymlinks(filepath.Join(dir, "b-sensor"))
	if err != nil {
		t.Fatal(err)
	}
	link(t, aDev, byID)

	bs := bus.NewMemory(nil)
	readings := collect(t, bs, "southbound/weather")
	status := collect(t, bs, "southbound/weather/status")
	cfg := DefaultConfig() // the real backoff: 1 s doubling to 30 s
	cfg.Sensors = []Sensor{{Name: "weather", Port: byID, Baud: 9600, Parser: "regex", Terminator: `\n`,
		Regex: `^T=(?P<temp>-?[0-9.]+)$`, Fields: []Field{{Name: "temp"}}}}
	s, err := New(cfg, bs, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitFor):
			t.Error("Run did not return at test end")
		}
	})

	if st := status.nextStatus(t); st.Status != StatusOnline || st.Device != aDev {
		t.Fatalf("status %+v, want online on %s", st, aDev)
	}
	if _, err := a.device.WriteString("T=21.5\n"); err != nil {
		t.Fatal(err)
	}
	if r := readings.nextReading(t); !equalFields(r.V, map[string]any{"temp": 21.5}) {
		t.Errorf("reading %v", r.V)
	}

	// Pull the adapter: the pty vanishes and udev removes the link.
	fault := time.Now()
	a.stop()
	if err := os.Remove(byID); err != nil {
		t.Fatal(err)
	}
	st := status.nextStatus(t)
	offlineAfter := time.Since(fault)
	if st.Status != StatusOffline || st.Error != reasonPortGone {
		t.Fatalf("status after unplug %+v, want offline: %s", st, reasonPortGone)
	}
	t.Logf("measured: offline (%s) %v after the unplug", st.Error, offlineAfter.Round(time.Millisecond))

	share := cpuShare(2 * time.Second)
	t.Logf("measured: CPU with the port gone: %.2f %% of a core over 2s", 100*share)
	if share > 0.10 {
		t.Errorf("CPU with the port gone %.1f %% of a core, want < 10 %% (goal 2 %%)", 100*share)
	}
	select {
	case m := <-status.ch:
		t.Errorf("status published again while the port stays missing: %s", m.Payload)
	default:
	}

	// Plugged in again: the link comes back pointing at another pty.
	back := time.Now()
	link(t, bDev, byID)
	st = status.nextStatus(t)
	onlineAfter := time.Since(back)
	if st.Status != StatusOnline || st.Device != bDev {
		t.Fatalf("status %+v, want online on %s", st, bDev)
	}
	t.Logf("measured: back online %v after the link returned", onlineAfter.Round(time.Millisecond))
	if onlineAfter > 2*time.Second {
		t.Errorf("back online after %v, want within 2 s", onlineAfter)
	}
	if _, err := b.device.WriteString("T=-3.25\n"); err != nil {
		t.Fatal(err)
	}
	if r := readings.nextReading(t); !equalFields(r.V, map[string]any{"temp": -3.25}) {
		t.Errorf("reading after replug %v", r.V)
	}

	// Gone again, and stopped while it is gone.
	b.stop()
	if err := os.Remove(byID); err != nil {
		t.Fatal(err)
	}
	if st := status.nextStatus(t); st.Status != StatusOffline || st.Error != reasonPortGone {
		t.Fatalf("status %+v, want offline: %s", st, reasonPortGone)
	}
	stop := time.Now()
	cancel()
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5 s with the port gone")
	}
	t.Logf("measured: Run returned %v after cancel with the port gone", time.Since(stop).Round(time.Millisecond))
	if st := status.nextStatus(t); st.Error != "stopped" {
		t.Errorf("status %+v, want offline: stopped", st)
	}
}

// hungPort is a port whose reads return (0, nil) at once, as a hung-up tty
// does under a serial library that does not report it.
type hungPort struct {
	goserial.Port // not called
	reads         int
}

func (p *hungPort) Read([]byte) (int, error)           { p.reads++; return 0, nil }
func (p *hungPort) SetReadTimeout(time.Duration) error { return nil }
func (p *hungPort) Close() error                       { return nil }

// TestHungUpReadsDoNotSpin: reads that return nothing at once end the
// connection as a line error after a few reads, instead of spinning.
func TestHungUpReadsDoNotSpin(t *testing.T) {
	sn, err := newSensor(testConfig(), validSensor(), bus.NewMemory(nil), testLogger(t), options{now: time.Now, synced: func() bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	p := &hungPort{}
	dev := filepath.Join(t.TempDir(), "tty")
	if err := os.WriteFile(dev, nil, 0o600); err != nil { // a node that exists
		t.Fatal(err)
	}
	start := time.Now()
	err = sn.serve(t.Context(), p, dev)
	if !errors.Is(err, errPortGone) || !strings.Contains(err.Error(), "hang-up") {
		t.Fatalf("serve: %v, want a line error for the hang-up", err)
	}
	if p.reads != emptyReads {
		t.Errorf("%d reads, want %d", p.reads, emptyReads)
	}
	t.Logf("hung-up port given up after %d reads in %v", p.reads, time.Since(start))
}
