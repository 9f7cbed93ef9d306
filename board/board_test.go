package board

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
)

// fakeRoot lays out files below a temporary directory the way sysfs and
// procfs do; each key is a path relative to the root.
func fakeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if strings.HasSuffix(name, "/") { // a directory
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// ledFiles returns the sysfs files of one LED, as the kernel starts it.
func ledFiles(name string) map[string]string {
	d := "sys/class/leds/" + name + "/"
	return map[string]string{
		d + "trigger":        "none [mmc0] heartbeat timer\n",
		d + "brightness":     "0\n",
		d + "max_brightness": "255\n",
	}
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// testLogger logs to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// notifySocket listens on a unixgram socket and points NOTIFY_SOCKET at it,
// as systemd does for a Type=notify service.
func notifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	dir, err := os.MkdirTemp("", "fgn") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "")
	t.Setenv("WATCHDOG_PID", "")
	return conn
}

// recv returns the next datagram, or "" when none arrives within d.
func recv(t *testing.T, conn *net.UnixConn, d time.Duration) string {
	t.Helper()
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(d))
	n, err := conn.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestNotifyProtocol(t *testing.T) {
	conn := notifySocket(t)
	b, err := New(Options{Config: DefaultConfig(), Root: fakeRoot(t, nil), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	b.Ready()
	if got := recv(t, conn, 5*time.Second); got != "READY=1" {
		t.Errorf("Ready sent %q", got)
	}
	b.Status(StatusLine{Uplink: "connected quic", Outbox: 12, DevicesOK: 3, Devices: 4}.String())
	if got := recv(t, conn, 5*time.Second); got != "STATUS=uplink connected quic, outbox 12, devices 3/4 ok" {
		t.Errorf("Status sent %q", got)
	}
	b.Status("two\nlines")
	if got := recv(t, conn, 5*time.Second); got != "STATUS=two lines" {
		t.Errorf("Status with a line break sent %q", got)
	}

	before := monotonicUsec(t)
	b.Reloading()
	got := recv(t, conn, 5*time.Second)
	m := regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=(\d+)\n$`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("Reloading sent %q", got)
	}
	if usec, _ := strconv.ParseInt(m[1], 10, 64); usec < before || usec > monotonicUsec(t) {
		t.Errorf("MONOTONIC_USEC=%d not within the call (from %d)", usec, before)
	}
	b.Reloaded()
	if got := recv(t, conn, 5*time.Second); got != "READY=1" {
		t.Errorf("Reloaded sent %q", got)
	}
	b.Stopping()
	if got := recv(t, conn, 5*time.Second); got != "STOPPING=1" {
		t.Errorf("Stopping sent %q", got)
	}
}

func TestNotifyWithoutSystemdIsSilent(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	var logs bytes.Buffer
	b, err := New(Options{Config: DefaultConfig(), Root: fakeRoot(t, nil), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	b.Ready()
	b.Stopping()
	if logs.Len() != 0 {
		t.Errorf("logged without systemd: %s", logs.String())
	}
}

// health is a health check the test switches.
type health struct {
	fail  atomic.Bool
	calls atomic.Int64
}

func (h *health) check() error {
	h.calls.Add(1)
	if h.fail.Load() {
		return errors.New("bus does not dispatch")
	}
	return nil
}

// waitCalls waits until the check has run n more times, so that the last
// switch of fail is seen by a completed check.
func (h *health) waitCalls(t *testing.T, n int64) {
	t.Helper()
	target := h.calls.Load() + n
	testwait.For(t, 10*time.Second, fmt.Sprintf("the health check to run %d more times", n), func() bool { return h.calls.Load() >= target })
}

// runBoard starts Run and returns a stop function that waits for it.
func runBoard(t *testing.T, b *Board, h *health) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, h.check) }()
	var stopped bool
	var runErr error
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		}
		return runErr
	}
	t.Cleanup(func() { stop() })
	return stop
}

func TestRunPingsSystemdOnlyWhileHealthy(t *testing.T) {
	conn := notifySocket(t)
	t.Setenv("WATCHDOG_USEC", "100000") // pings every 50 ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	cfg := DefaultConfig()
	cfg.CheckInterval = time.Hour // only the watchdog ticks
	b, err := New(Options{Config: cfg, Root: fakeRoot(t, nil), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var h health
	runBoard(t, b, &h)

	start := time.Now()
	for range 3 {
		if got := recv(t, conn, 5*time.Second); got != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", got)
		}
	}
	t.Logf("3 pings in %s", time.Since(start))

	h.fail.Store(true)
	h.waitCalls(t, 2)
	for recv(t, conn, 10*time.Millisecond) != "" { // pings sent before the switch
	}
	if got := recv(t, conn, 400*time.Millisecond); got != "" {
		t.Fatalf("sent %q while the health check fails", got)
	}

	h.fail.Store(false)
	if got := recv(t, conn, 5*time.Second); got != "WATCHDOG=1" {
		t.Fatalf("after recovery got %q, want WATCHDOG=1", got)
	}
}

func TestRunIgnoresWatchdogOfAnotherPID(t *testing.T) {
	conn := notifySocket(t)
	t.Setenv("WATCHDOG_USEC", "20000")
	t.Setenv("WATCHDOG_PID", "1") // meant for someone else
	cfg := DefaultConfig()
	cfg.CheckInterval = time.Hour
	b, err := New(Options{Config: cfg, Root: fakeRoot(t, nil)})
	if err != nil {
		t.Fatal(err)
	}
	var h health
	runBoard(t, b, &h)
	if got := recv(t, conn, 200*time.Millisecond); got != "" {
		t.Fatalf("sent %q for another process's watchdog", got)
	}
}

func TestRunFeedsHardwareWatchdog(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	// The watchdog ticker and the file pings run on the bubble's fake clock.
	synctest.Test(t, func(t *testing.T) {
		root := fakeRoot(t, map[string]string{"dev/watchdog": ""})
		dev := filepath.Join(root, "dev/watchdog")
		cfg := DefaultConfig()
		cfg.CheckInterval = time.Hour
		cfg.Watchdog.Device = dev
		cfg.Watchdog.Timeout = 60 * time.Millisecond // a plain file answers no ioctl: pings every 30 ms
		b, err := New(Options{Config: cfg, Root: root, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		var h health
		stop := runBoard(t, b, &h)

		size := func() int64 {
			st, err := os.Stat(dev)
			if err != nil {
				t.Fatal(err)
			}
			return st.Size()
		}
		waitSize := func(n int64) {
			t.Helper()
			testwait.NoError(t, 10*time.Second, func() error {
				if got := size(); got < n {
					return fmt.Errorf("watchdog written %d bytes, want at least %d", got, n)
				}
				return nil
			})
		}
		waitSize(4) // the ping at open, then three more

		h.fail.Store(true)
		h.waitCalls(t, 2)
		frozen := size()
		h.waitCalls(t, 5) // five more ticks, all unhealthy
		if got := size(); got != frozen {
			t.Fatalf("watchdog fed while unhealthy: %d -> %d bytes", frozen, got)
		}
		h.fail.Store(false)
		waitSize(frozen + 1)

		if err := stop(); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(dev)
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.Repeat("1", len(data)-1) + "V"; string(data) != want {
			t.Errorf("watchdog got %q, want pings then the magic close %q", data, want)
		}
	})
}

func TestRunWatchdogMissing(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Watchdog.Device = filepath.Join(t.TempDir(), "no-watchdog")
	b, err := New(Options{Config: cfg, Root: fakeRoot(t, nil)})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Run(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "no-watchdog") {
		t.Fatalf("Run = %v, want an error naming the device", err)
	}
}

func TestLEDs(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	// The check ticker and the heartbeat run on the bubble's fake clock.
	synctest.Test(t, func(t *testing.T) {
		root := fakeRoot(t, merge(ledFiles("ACT"), ledFiles("green:uplink"), ledFiles("red:fault")))
		cfg := DefaultConfig()
		cfg.CheckInterval = 100 * time.Millisecond
		cfg.LEDs = LEDs{Heartbeat: "ACT", Uplink: "green:uplink", Fault: "red:fault"}
		b, err := New(Options{Config: cfg, Root: root, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		read := func(name, attr string) string {
			data, err := os.ReadFile(filepath.Join(root, "sys/class/leds", name, attr))
			if err != nil {
				t.Fatal(err)
			}
			return strings.TrimSpace(string(data))
		}
		waitFor := func(name, want string) {
			t.Helper()
			testwait.NoError(t, 10*time.Second, func() error {
				if got := read(name, "brightness"); got != want {
					return fmt.Errorf("LED %s brightness %q, want %q", name, got, want)
				}
				return nil
			})
		}
		for _, name := range []string{"ACT", "green:uplink", "red:fault"} {
			if got := read(name, "trigger"); got != "none" {
				t.Errorf("LED %s trigger %q, want none", name, got)
			}
		}
		b.SetUplink(true)
		waitFor("green:uplink", "255")
		b.SetUplink(false)
		waitFor("green:uplink", "0")

		var h health
		stop := runBoard(t, b, &h)
		waitFor("ACT", "255") // the heartbeat blinks
		waitFor("ACT", "0")
		waitFor("ACT", "255")
		h.fail.Store(true)
		waitFor("red:fault", "255")
		waitFor("ACT", "0")
		h.fail.Store(false)
		waitFor("red:fault", "0")
		b.SetUplink(true)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"ACT", "green:uplink", "red:fault"} {
			if got := read(name, "brightness"); got != "0" {
				t.Errorf("after Run LED %s brightness %q, want 0", name, got)
			}
		}
	})
}

func TestMissingLEDIsLoggedAndIgnored(t *testing.T) {
	var logs bytes.Buffer
	cfg := DefaultConfig()
	cfg.LEDs.Fault = "nonexistent"
	b, err := New(Options{Config: cfg, Root: fakeRoot(t, nil), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	b.SetFault(true)
	if !strings.Contains(logs.String(), "led=nonexistent") {
		t.Errorf("missing LED not logged: %s", logs.String())
	}
}

func TestRunTwice(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "")
	b, err := New(Options{Config: DefaultConfig(), Root: fakeRoot(t, nil)})
	if err != nil {
		t.Fatal(err)
	}
	var h health
	runBoard(t, b, &h)
	h.waitCalls(t, 1)
	if err := b.Run(context.Background(), nil); err == nil {
		t.Fatal("second Run did not fail")
	}
}
