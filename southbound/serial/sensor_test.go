package serial

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

const waitFor = 5 * time.Second // how long to wait for something that must happen

// fakeLine is a pty pair standing in for a serial line: the test writes
// on the master, the sensor opens the slave by its path.
type fakeLine struct {
	master *os.File
	slave  *os.File // kept open by the test so the pair lives until closed
	path   string
}

// newFakeLine opens a pty pair, closed at test end.
func newFakeLine(t *testing.T) *fakeLine {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	// creack/pty leaves the master in blocking mode, where Close does not
	// interrupt a pending Read: move it to the runtime poller.
	fd, err := syscall.Dup(int(m.Fd()))
	_ = m.Close()
	if err != nil {
		_ = s.Close()
		t.Fatalf("dup pty master: %v", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		t.Fatalf("pty master non-blocking: %v", err)
	}
	l := &fakeLine{master: os.NewFile(uintptr(fd), "ptmx"), slave: s, path: s.Name()}
	t.Cleanup(l.unplug)
	return l
}

// write sends text as the device would.
func (l *fakeLine) write(t *testing.T, text string) {
	t.Helper()
	if _, err := io.WriteString(l.master, text); err != nil {
		t.Fatalf("write to pty: %v", err)
	}
}

// unplug closes both ends, as pulling a USB adapter does.
func (l *fakeLine) unplug() {
	_ = l.master.Close()
	_ = l.slave.Close()
}

// link points the symlink at path to target, replacing it atomically as
// udev does with /dev/serial/by-id links.
func link(t *testing.T, target, path string) {
	t.Helper()
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// testLogger logs to the test's output at debug level.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// collector gathers the messages published on one topic filter.
type collector struct {
	ch chan bus.Message
}

func collect(t *testing.T, b bus.Bus, filter string) *collector {
	t.Helper()
	c := &collector{ch: make(chan bus.Message, 1000)}
	unsub, err := b.Subscribe(filter, func(m bus.Message) {
		select {
		case c.ch <- m:
		default:
			t.Errorf("collector %s full", filter)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unsub)
	return c
}

// next returns the next message, failing the test after waitFor.
func (c *collector) next(t *testing.T) bus.Message {
	t.Helper()
	select {
	case m := <-c.ch:
		return m
	case <-time.After(waitFor):
		t.Fatal("no message within", waitFor)
		return bus.Message{}
	}
}

// nextReading decodes the next reading.
func (c *collector) nextReading(t *testing.T) reading {
	t.Helper()
	m := c.next(t)
	if m.Origin != Origin {
		t.Errorf("reading origin %q, want %q", m.Origin, Origin)
	}
	var r reading
	if err := json.Unmarshal(m.Payload, &r); err != nil {
		t.Fatalf("reading %s: %v", m.Payload, err)
	}
	return r
}

// nextStatus decodes the next status message, which must be retained.
func (c *collector) nextStatus(t *testing.T) statusMsg {
	t.Helper()
	m := c.next(t)
	if !m.Retain || m.QoS != 1 {
		t.Errorf("status %s: retain %v qos %d, want retained QoS 1", m.Payload, m.Retain, m.QoS)
	}
	var s statusMsg
	if err := json.Unmarshal(m.Payload, &s); err != nil {
		t.Fatalf("status %s: %v", m.Payload, err)
	}
	return s
}

// startService runs a service until the test ends; Run must then return.
func startService(t *testing.T, cfg Config, b bus.Bus, opts ...Option) *Service {
	t.Helper()
	s, err := New(cfg, b, testLogger(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitFor):
			t.Error("Run did not return after cancel")
		}
	})
	return s
}

// waitStats polls the first sensor's stats until ok says yes.
func waitStats(t *testing.T, s *Service, what string, ok func(SensorStats) bool) SensorStats {
	t.Helper()
	var st SensorStats
	testwait.NoError(t, waitFor, func() error {
		if st = s.Stats()[0]; !ok(st) {
			return fmt.Errorf("waiting for %s; stats %+v", what, st)
		}
		return nil
	})
	return st
}

// testConfig is the default section with fast reconnects.
func testConfig(sensors ...Sensor) Config {
	cfg := DefaultConfig()
	cfg.ReconnectMin = 10 * time.Millisecond
	cfg.ReconnectMax = 100 * time.Millisecond
	cfg.Sensors = sensors
	return cfg
}

var fixedNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func TestNMEASensorOverPTY(t *testing.T) {
	line := newFakeLine(t)
	b := bus.NewMemory(nil)
	readings := collect(t, b, "southbound/gps")
	status := collect(t, b, "southbound/gps/status")
	s := startService(t, testConfig(Sensor{Name: "gps", Port: line.path, Parser: "nmea", MaxLine: 100, Baud: 4800}),
		b, WithClock(func() time.Time { return fixedNow }))

	if st := status.nextStatus(t); st.Status != StatusOnline || st.Device != line.path || st.TSSync != nil {
		t.Fatalf("first status %+v, want online on %s", st, line.path)
	}
	gga := "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
	rmc := "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"
	line.write(t, strings.Join([]string{
		gga,
		withChecksum("GPGSV,3,1,11,03,03,111,00"), // ignored
		gga[:len(gga)-2] + "00",                   // bad checksum
		"\x00\xff\xfe\x01binary\x02",              // garbage
		"$" + strings.Repeat("X", 150),            // over-long
		"$GPGGA,123519,bad",                       // no checksum
		"",                                        // empty: skipped
		withChecksum("GPRMC,1,A"),                 // malformed
		rmc,
	}, "\r\n")+"\r\n")

	r := readings.nextReading(t)
	if r.Q != "good" || r.TS != fixedNow.UnixMilli() || r.TSSync != nil {
		t.Errorf("reading %+v: want q good, ts %d, no ts_sync", r, fixedNow.UnixMilli())
	}
	if r.V["sentence"] != "GGA" || r.V["fix"] != true || r.V["satellites"] != 8.0 {
		t.Errorf("GGA reading %v", r.V)
	}
	r = readings.nextReading(t)
	if r.V["sentence"] != "RMC" || r.V["datetime"] != "1994-03-23T12:35:19Z" || r.V["speed_knots"] != 22.4 {
		t.Errorf("RMC reading %v", r.V)
	}

	st := waitStats(t, s, "all lines counted", func(st SensorStats) bool { return st.Lines == 8 && st.Readings == 2 })
	want := map[string]uint64{DropChecksum: 2, DropGarbage: 1, DropOverlong: 1, DropParse: 1}
	for cause, n := range want {
		if st.Dropped[cause] != n {
			t.Errorf("dropped[%s] = %d, want %d (stats %+v)", cause, st.Dropped[cause], n, st)
		}
	}
	if st.Readings != 2 || st.Ignored != 1 || !st.Online || st.Connects != 1 || st.LastReading != fixedNow {
		t.Errorf("stats %+v", st)
	}
	select {
	case m := <-readings.ch:
		t.Errorf("unexpected reading %s", m.Payload)
	default:
	}
}

func TestPolledRegexSensor(t *testing.T) {
	line := newFakeLine(t)
	b := bus.NewMemory(nil)
	readings := collect(t, b, "southbound/+")
	cfg := testConfig(Sensor{
		Name: "thermo", Port: line.path, Parser: "regex", Terminator: `\r`,
		Regex:   `^T=(?P<temp>-?\d+) RH=(?P<rh>\d+)% (?P<heater>ON|OFF)$`,
		Fields:  []Field{{Name: "temp", Type: "float", Scale: 0.1}, {Name: "rh", Type: "int"}, {Name: "heater", Type: "bool"}},
		Request: `READ\r`, RequestInterval: 20 * time.Millisecond,
	})
	// The device answers every request, with a reading that changes. At
	// test end the service stops first, then the line, then this goroutine.
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(line.unplug)
	wg.Go(func() {
		rd := bufio.NewReader(line.master)
		for i := 0; ; i++ {
			req, err := rd.ReadString('\r')
			if err != nil {
				return // the pty was closed at test end
			}
			if req != "READ\r" {
				t.Errorf("request %q, want READ\\r", req)
				return
			}
			heater := "OFF"
			if i%2 == 1 {
				heater = "ON"
			}
			// Lines end in \r\n although the terminator is \r: the \n is trimmed.
			if _, err := io.WriteString(line.master, "T=-"+string(rune('0'+i%10))+"5 RH=40% "+heater+"\r\n"); err != nil {
				return
			}
		}
	})
	// A board without RTC: the clock reads 1970.
	start := time.Unix(100, 0)
	s := startService(t, cfg, b, WithClock(func() time.Time { return start }))

	for i := range 3 {
		r := readings.nextReading(t)
		if r.TSSync == nil || *r.TSSync {
			t.Errorf("reading %d: ts_sync %v, want false with a 1970 clock", i, r.TSSync)
		}
		wantTemp := -float64(i%10*10+5) / 10
		if !equalFields(r.V, map[string]any{"temp": wantTemp, "rh": 40.0, "heater": i%2 == 1}) {
			t.Errorf("reading %d: %v", i, r.V)
		}
	}
	st := waitStats(t, s, "requests and readings", func(st SensorStats) bool { return st.Requests >= 3 && st.Readings >= 3 })
	if len(st.Dropped) != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestUnplugAndReplugUnderByIDLink(t *testing.T) {
	byID := filepath.Join(t.TempDir(), "usb-FTDI_FT232R_A10K1234-if00-port0")
	first := newFakeLine(t)
	second := newFakeLine(t) // opened now so it gets another /dev/pts number
	link(t, first.path, byID)

	b := bus.NewMemory(nil)
	readings := collect(t, b, "southbound/gps")
	status := collect(t, b, "southbound/gps/status")
	s := startService(t, testConfig(Sensor{Name: "gps", Port: byID, Parser: "nmea"}), b)

	if st := status.nextStatus(t); st.Status != StatusOnline || st.Device != first.path {
		t.Fatalf("status %+v, want online on %s", st, first.path)
	}
	first.write(t, withChecksum("GPRMC,120000,A,,,,,,,010125,,")+"\r\n")
	if r := readings.nextReading(t); r.V["time"] != "12:00:00" {
		t.Errorf("reading before unplug %v", r.V)
	}

	// Unplug: the device goes away and udev removes the link.
	first.unplug()
	if err := os.Remove(byID); err != nil {
		t.Fatal(err)
	}
	st := status.nextStatus(t)
	if st.Status != StatusOffline || st.Error == "" {
		t.Fatalf("status after unplug %+v, want offline with an error", st)
	}
	// While the link is missing the retries fail to resolve it.
	waitStats(t, s, "resolve failure", func(st SensorStats) bool {
		return !st.Online && strings.Contains(st.LastError, "resolve "+byID)
	})

	// Plugged in again: a new device name behind the same link.
	link(t, second.path, byID)
	for {
		st := status.nextStatus(t)
		if st.Status == StatusOnline {
			if st.Device != second.path {
				t.Fatalf("online on %s, want %s", st.Device, second.path)
			}
			break
		}
	}
	second.write(t, withChecksum("GPRMC,120001,A,,,,,,,010125,,")+"\r\n")
	if r := readings.nextReading(t); r.V["time"] != "12:00:01" {
		t.Errorf("reading after replug %v", r.V)
	}
	st2 := waitStats(t, s, "second reading counted", func(st SensorStats) bool { return st.Readings == 2 })
	if st2.Connects != 2 || st2.Disconnects != 1 || st2.Device != second.path || st2.Readings != 2 {
		t.Errorf("stats %+v", st2)
	}
}

func TestMissingPortAtStartAndShutdown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nothing-here")
	b := bus.NewMemory(nil)
	status := collect(t, b, "southbound/gps/status")
	cfg := testConfig(Sensor{Name: "gps", Port: path, Parser: "nmea"})
	s, err := New(cfg, b, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	st := status.nextStatus(t)
	if st.Status != StatusOffline || !strings.Contains(st.Error, "no such file or directory") {
		t.Errorf("status %+v, want offline: no such file", st)
	}
	// Retries with the same error publish nothing more.
	waitStats(t, s, "a few retries", func(st SensorStats) bool { return st.OpenErrors >= 3 })
	select {
	case m := <-status.ch:
		t.Errorf("status published again for the same error: %s", m.Payload)
	default:
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Run did not return")
	}
	for {
		st := status.nextStatus(t)
		if st.Error == "stopped" {
			break
		}
	}
	if err := s.Run(context.Background()); err == nil {
		t.Error("second Run accepted")
	}
}

func TestShutdownWhileReading(t *testing.T) {
	line := newFakeLine(t)
	b := bus.NewMemory(nil)
	status := collect(t, b, "southbound/gps/status")
	s, err := New(testConfig(Sensor{Name: "gps", Port: line.path, Parser: "nmea"}), b, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	if st := status.nextStatus(t); st.Status != StatusOnline {
		t.Fatalf("status %+v", st)
	}
	// The sensor is blocked in Read: cancelling must close the port.
	cancel()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("Run did not return while a read was pending")
	}
	if st := status.nextStatus(t); st.Status != StatusOffline || st.Error != "stopped" {
		t.Errorf("status %+v, want offline: stopped", st)
	}
	// The port was released: it can be opened again.
	p, _, err := openPort(line.path, mode(validSensor().withDefaults()))
	if err != nil {
		t.Fatalf("reopen after shutdown: %v", err)
	}
	_ = p.Close()
}

// TestKeepStatusOnStop: a sensor passed to KeepStatus leaves its retained
// status alone when the service stops (a config change replaces it), and
// still releases its port.
func TestKeepStatusOnStop(t *testing.T) {
	line := newFakeLine(t)
	b := bus.NewMemory(nil)
	status := collect(t, b, "southbound/gps/status")
	s, err := New(testConfig(Sensor{Name: "gps", Port: line.path, Parser: "nmea"}), b, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	if st := status.nextStatus(t); st.Status != StatusOnline {
		t.Fatalf("status %+v", st)
	}
	s.KeepStatus([]string{"gps"})
	cancel()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("Run did not return")
	}
	select {
	case m := <-status.ch:
		t.Fatalf("a sensor that stays published %s on stop", m.Payload)
	case <-time.After(100 * time.Millisecond):
	}
	p, _, err := openPort(line.path, mode(validSensor().withDefaults()))
	if err != nil {
		t.Fatalf("reopen after stop: %v", err)
	}
	_ = p.Close()
}
