package gateway_test

// End-to-end tests of the southbound parts through the built binary (issue
// 4): a Modbus TCP slave played by Debian's python3-pymodbus, a serial NMEA
// sensor on a socat pty pair, and MQTT clients (mosquitto_sub/pub) on the
// gateway's broker seeing readings, statuses and set-point results.
//
// Without /usr/bin/python3 with pymodbus, or without socat, the tests are
// skipped, unless CI is set in the environment: then they fail (as the
// other e2e tests do for the mosquitto clients).

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/peertest"
)

// python is Debian's interpreter, which python3-pymodbus installs into.
const python = "/usr/bin/python3"

// simScript is a Modbus TCP slave for these tests, on python3-pymodbus
// (3.0 API). Usage: sim.py PORT. It answers every unit id with one map:
//
//	holding 0      INT16 -1234            (temp: scale 0.1 → -123.4)
//	holding 2-3    FLOAT32 21.5, ABCD      (flow)
//	holding 4-5    FLOAT32 -7.25, CDAB     (level: words swapped)
//	holding 6-7    FLOAT32 20.0, CDAB      (sp: the set-point)
//	holding 20-23  STRING "FG-1000"        (model)
//	coil 3         off                     (relay)
//	input 0        2301                    (voltage: scale 0.1 → 230.1)
//	discrete 0     on                      (door)
const simScript = `import struct
import sys

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.server import StartTcpServer


def words(fmt, value, swap=False):
    hi, lo = struct.unpack(">HH", struct.pack(fmt, value))
    return [lo, hi] if swap else [hi, lo]


port = int(sys.argv[1])
hr = [0] * 100
hr[0] = -1234 & 0xFFFF
hr[2:4] = words(">f", 21.5)
hr[4:6] = words(">f", -7.25, swap=True)
hr[6:8] = words(">f", 20.0, swap=True)
hr[20:24] = struct.unpack(">4H", b"FG-1000\x00")
ir = [7] * 100
ir[0] = 2301
store = ModbusSlaveContext(
    hr=ModbusSequentialDataBlock(0, hr),
    ir=ModbusSequentialDataBlock(0, ir),
    co=ModbusSequentialDataBlock(0, [False] * 100),
    di=ModbusSequentialDataBlock(0, [True] * 100),
    zero_mode=True,
)
StartTcpServer(context=ModbusServerContext(slaves=store, single=True),
               address=("127.0.0.1", port))
`

// plcDevice is the Modbus device of the tests (YAML, indented for
// southbound.modbus.devices), polled every 100 ms.
const plcDevice = `
      - name: plc
        tcp: {address: "%s"}
        unit_id: 1
        timeout: 300ms
        poll_groups: [{name: fast, interval: 100ms}]
        points:
          - {name: temp, register: holding, address: 0, type: INT16, scale: 0.1, unit: "°C"}
          - {name: flow, register: holding, address: 2, type: FLOAT32, byte_order: ABCD, unit: "m3/h"}
          - {name: level, register: holding, address: 4, type: FLOAT32, byte_order: CDAB}
          - {name: sp, register: holding, address: 6, type: FLOAT32, byte_order: CDAB, writable: true, read_back: true}
          - {name: model, register: holding, address: 20, type: STRING, length: 4}
          - {name: relay, register: coil, address: 3, writable: true, read_back: true}
`

// meterDevice is the device added by a reload, on the same slave (and so
// the same line) with another unit id.
const meterDevice = `
      - name: meter
        tcp: {address: "%s"}
        unit_id: 2
        timeout: 300ms
        poll_groups: [{name: slow, interval: 200ms}]
        points:
          - {name: voltage, register: input, address: 0, type: UINT16, scale: 0.1, unit: V}
          - {name: door, register: discrete, address: 0}
`

// requireTool fails the test (skips it under SKIP_PEERS=1) when ok is false.
func requireTool(t *testing.T, ok bool, what, install string) {
	t.Helper()
	if !ok {
		peertest.Missing(t, what, install)
	}
}

// modbusSim is the pymodbus slave, which the test stops and starts again on
// the same port.
type modbusSim struct {
	t      *testing.T
	script string
	addr   string
	cmd    *exec.Cmd
	done   chan struct{}
	out    *syncBuffer
}

// startModbusSim writes simScript and runs it on a free port.
func startModbusSim(t *testing.T) *modbusSim {
	t.Helper()
	err := exec.Command(python, "-c", "import pymodbus.server").Run()
	requireTool(t, err == nil, python+" with pymodbus", "apt-get install python3-pymodbus")
	s := &modbusSim{
		t:      t,
		script: filepath.Join(t.TempDir(), "sim.py"),
		addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
		out:    &syncBuffer{},
	}
	if err := os.WriteFile(s.script, []byte(simScript), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("pymodbus output:\n%s", s.out)
		}
	})
	s.start()
	return s
}

// start runs the slave and waits until its port accepts.
func (s *modbusSim) start() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.addr)
	s.cmd = exec.Command(python, s.script, port)
	s.cmd.Stdout = s.out
	s.cmd.Stderr = s.out
	s.cmd.WaitDelay = 2 * time.Second
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start pymodbus: %v", err)
	}
	done := make(chan struct{})
	s.done = done
	cmd := s.cmd
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	exited := false
	ok := waitFor(10*time.Second, func() bool {
		select {
		case <-done:
			exited = true
			return true
		default:
		}
		c, err := net.DialTimeout("tcp", s.addr, 100*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	if exited {
		s.t.Fatalf("pymodbus exited at start: %v\n%s", cmd.ProcessState, s.out)
	}
	if !ok {
		s.t.Fatalf("pymodbus: %s does not accept after 10 s\n%s", s.addr, s.out)
	}
}

// stop kills the slave (a device pulled off the network) and waits for it.
func (s *modbusSim) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// mqttMsg is one message seen by a subscriber started with topicFormat.
type mqttMsg struct {
	topic   string
	payload string
}

// topicFormat makes mosquitto_sub print the topic before the payload; given
// after startSub's own -F, it replaces it (the last -F wins).
var topicFormat = []string{"-F", msgPrefix + "%t %p"}

// topicMessages returns what s (started with topicFormat) received so far.
func topicMessages(s *subscriber) []mqttMsg {
	var out []mqttMsg
	for _, m := range s.messages() {
		topic, payload, _ := strings.Cut(m, " ")
		out = append(out, mqttMsg{topic: topic, payload: payload})
	}
	return out
}

// jsonObject decodes a payload that must be a JSON object.
func jsonObject(t *testing.T, m mqttMsg) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(m.payload), &v); err != nil {
		t.Fatalf("%s: payload %q is not a JSON object: %v", m.topic, m.payload, err)
	}
	return v
}

// nextMsg waits (at most d) for a message on topic, at index from or later
// in s's output, whose JSON object satisfies match (nil: any). It returns
// the index after the message and its decoded payload.
func nextMsg(t *testing.T, s *subscriber, from int, topic string, d time.Duration, match func(map[string]any) bool) (int, map[string]any) {
	t.Helper()
	var found map[string]any
	next := from
	ok := waitFor(d, func() bool {
		msgs := topicMessages(s)
		for ; next < len(msgs); next++ {
			if msgs[next].topic != topic {
				continue
			}
			v := jsonObject(t, msgs[next])
			if match == nil || match(v) {
				found = v
				next++
				return true
			}
		}
		return false
	})
	if !ok {
		var seen []string
		for _, m := range topicMessages(s)[from:] {
			if m.topic == topic {
				seen = append(seen, m.payload)
			}
		}
		if len(seen) > 5 {
			seen = seen[len(seen)-5:]
		}
		t.Fatalf("no matching message on %s within %v; the last ones there: %q", topic, d, seen)
	}
	return next, found
}

// sameJSON compares a decoded JSON value with want: numbers within 1e-9
// (a scaled register is computed in float64), the rest exactly.
func sameJSON(got, want any) bool {
	if g, ok := got.(float64); ok {
		w, ok := want.(float64)
		return ok && math.Abs(g-w) <= 1e-9*math.Max(1, math.Abs(w))
	}
	return reflect.DeepEqual(got, want)
}

// reading matches a point's reading: value v, quality q and unit (none
// when "").
func reading(v any, q, unit string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		u, hasUnit := m["unit"]
		if unit == "" && hasUnit || unit != "" && u != unit {
			return false
		}
		_, hasTS := m["ts"].(float64)
		return hasTS && m["q"] == q && sameJSON(m["v"], v)
	}
}

// status matches a device status with state (and, for offline, an error).
func status(state string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		if m["state"] != state {
			return false
		}
		_, hasErr := m["err"].(string)
		return hasErr == (state == "offline")
	}
}

// retained reads the retained message of topic with a new subscriber.
func retained(t *testing.T, g *gateway, topic string) map[string]any {
	t.Helper()
	s := g.startSub(t, append([]string{"-t", topic, "--retained-only", "-C", "1", "-W", "5"}, topicFormat...)...)
	s.wait(10 * time.Second)
	msgs := topicMessages(s)
	if len(msgs) != 1 {
		t.Fatalf("retained message of %s: got %d messages, want 1; output:\n%s", topic, len(msgs), s.out)
	}
	return jsonObject(t, msgs[0])
}

// southboundConfig is a gateway config on g's port and data dir with
// southbound lines (YAML at the level of southbound:, indented by 2).
// The test clients are anonymous: broker.auth.anonymous_deny_publish (by
// default the southbound write commands) is emptied so that they may write.
func southboundConfig(g *gateway, southbound string) string {
	return gatewayConfig(g.dataDir, g.port, "auth:\n  anonymous_deny_publish: []\n") + "southbound:\n" + southbound
}

// modbusSection is southbound.modbus with devices (each a YAML list item).
func modbusSection(devices ...string) string {
	return "  modbus:\n    offline_after: 3\n    devices:" + strings.Join(devices, "")
}

// TestSouthboundModbusPymodbus: a pymodbus slave polled through the binary.
// Readings of every point type arrive on southbound/plc/<point> with the
// right JSON, the retained status says online; a set-point and a coil
// written with mosquitto_pub are confirmed on .../set/result and polled
// back; with the slave gone the device goes offline (retained) after
// offline_after failed polls and online again when it returns; and a reload
// (SIGHUP) that adds a device starts polling it without a restart.
func TestSouthboundModbusPymodbus(t *testing.T) {
	t.Parallel()
	requireTools(t)
	sim := startModbusSim(t)
	g := startGatewayWith(t, "", func(g *gateway) string {
		return southboundConfig(g, modbusSection(fmt.Sprintf(plcDevice, sim.addr)))
	})
	pid := g.cmd.Process.Pid
	s := g.sub(t, append([]string{"-t", "southbound/#"}, topicFormat...)...)
	const wait = 5 * time.Second

	// Readings and status.
	start := time.Now()
	at, _ := nextMsg(t, s, 0, "southbound/plc/status", wait, status("online"))
	t.Logf("plc online %v after subscribing", time.Since(start).Round(time.Millisecond))
	for _, p := range []struct {
		point string
		v     any
		unit  string
	}{
		{"temp", -123.4, "°C"},
		{"flow", 21.5, "m3/h"},
		{"level", -7.25, ""},
		{"sp", 20.0, ""},
		{"model", "FG-1000", ""},
		{"relay", false, ""},
	} {
		_, m := nextMsg(t, s, 0, "southbound/plc/"+p.point, wait, nil)
		if !reading(p.v, "good", p.unit)(m) {
			t.Errorf("southbound/plc/%s: got %v, want v=%v q=good unit=%q and a ts", p.point, m, p.v, p.unit)
		}
		if ts, _ := m["ts"].(float64); math.Abs(ts-float64(time.Now().UnixMilli())) > 60e3 {
			t.Errorf("southbound/plc/%s: ts %v is not now", p.point, m["ts"])
		}
		if _, ok := m["ts_sync"]; ok {
			t.Errorf("southbound/plc/%s: ts_sync present with a synchronised clock: %v", p.point, m)
		}
	}
	if m := retained(t, g, "southbound/plc/status"); !status("online")(m) {
		t.Errorf("retained southbound/plc/status = %v, want state online", m)
	}

	// Set-points: FLOAT32 in CDAB order and a coil, both read back.
	g.mustPub("-q", "1", "-t", "southbound/plc/sp/set", "-m", `{"id":"e2e-1","v":42.25}`)
	at, res := nextMsg(t, s, at, "southbound/plc/sp/set/result", wait, nil)
	if want := map[string]any{"id": "e2e-1", "ok": true, "err": nil, "v": 42.25}; !reflect.DeepEqual(res, want) {
		t.Errorf("sp set result = %v, want %v", res, want)
	}
	nextMsg(t, s, at, "southbound/plc/sp", wait, reading(42.25, "good", ""))
	g.mustPub("-q", "1", "-t", "southbound/plc/relay/set", "-m", "true")
	at, res = nextMsg(t, s, at, "southbound/plc/relay/set/result", wait, nil)
	if want := map[string]any{"id": nil, "ok": true, "err": nil, "v": true}; !reflect.DeepEqual(res, want) {
		t.Errorf("relay set result = %v, want %v", res, want)
	}
	nextMsg(t, s, at, "southbound/plc/relay", wait, reading(true, "good", ""))
	// A point that is not writable, and a value the type cannot hold: refused
	// with a reason, and the device stays polled.
	g.mustPub("-q", "1", "-t", "southbound/plc/model/set", "-m", `{"id":2,"v":"X"}`)
	at, res = nextMsg(t, s, at, "southbound/plc/model/set/result", wait, nil)
	if res["id"] != 2.0 || res["ok"] != false || !strings.Contains(fmt.Sprint(res["err"]), "not writable") {
		t.Errorf("set on a read-only point: result %v, want id 2, ok false and err \"... not writable\"", res)
	}
	g.mustPub("-q", "1", "-t", "southbound/plc/sp/set", "-m", `{"id":3,"v":"high"}`)
	at, res = nextMsg(t, s, at, "southbound/plc/sp/set/result", wait, nil)
	if res["id"] != 3.0 || res["ok"] != false || res["err"] == nil {
		t.Errorf("set of a string on a FLOAT32: result %v, want id 3, ok false and an err", res)
	}
	at, _ = nextMsg(t, s, at, "southbound/plc/sp", wait, reading(42.25, "good", ""))

	// The slave disappears: offline_after (3) failed polls, each publishing
	// the last good values as stale, then offline, retained.
	sim.stop()
	killed := time.Now()
	before := at
	at, off := nextMsg(t, s, at, "southbound/plc/status", wait, status("offline"))
	t.Logf("plc offline %v after the slave was killed: %v", time.Since(killed).Round(time.Millisecond), off["err"])
	var stale int
	for _, m := range topicMessages(s)[before:at] {
		if m.topic != "southbound/plc/temp" {
			continue
		}
		if v := jsonObject(t, m); reading(-123.4, "stale", "°C")(v) {
			stale++
		}
	}
	if stale != 3 {
		t.Errorf("%d stale readings of temp before the offline status, want offline_after = 3", stale)
	}
	if m := retained(t, g, "southbound/plc/status"); !status("offline")(m) {
		t.Errorf("retained southbound/plc/status with the slave gone = %v, want state offline with err", m)
	}

	// It comes back (with its initial registers): online, good readings.
	sim.start()
	back := time.Now()
	at, _ = nextMsg(t, s, at, "southbound/plc/status", wait, status("online"))
	t.Logf("plc online again %v after the slave restarted", time.Since(back).Round(time.Millisecond))
	at, _ = nextMsg(t, s, at, "southbound/plc/sp", wait, reading(20.0, "good", ""))
	if m := retained(t, g, "southbound/plc/status"); !status("online")(m) {
		t.Errorf("retained southbound/plc/status after the slave returned = %v, want state online", m)
	}

	// A reload adds a second device on the same slave: polled without a
	// restart, and the first one keeps being polled.
	reloads := strings.Count(g.log.String(), "config reloaded")
	g.writeFile(southboundConfig(g, modbusSection(fmt.Sprintf(plcDevice, sim.addr), fmt.Sprintf(meterDevice, sim.addr))))
	g.signal(syscall.SIGHUP)
	if !g.waitLog("config reloaded", reloads+1, wait) {
		t.Fatalf("no \"config reloaded\" after SIGHUP")
	}
	nextMsg(t, s, at, "southbound/meter/status", wait, status("online"))
	nextMsg(t, s, at, "southbound/meter/voltage", wait, reading(230.1, "good", "V"))
	nextMsg(t, s, at, "southbound/meter/door", wait, reading(true, "good", ""))
	nextMsg(t, s, at, "southbound/plc/flow", wait, reading(21.5, "good", "m3/h"))
	if m := retained(t, g, "southbound/meter/status"); !status("online")(m) {
		t.Errorf("retained southbound/meter/status = %v, want state online", m)
	}
	// The Modbus part was restarted in place, but plc, which stays, never
	// blinked offline: its next status is online again.
	if _, m := nextMsg(t, s, at, "southbound/plc/status", wait, nil); !status("online")(m) {
		t.Errorf("first plc status after the reload = %v, want online (no offline blip for a device that stays)", m)
	}
	if m := retained(t, g, "southbound/plc/status"); !status("online")(m) {
		t.Errorf("retained southbound/plc/status after the reload = %v, want state online", m)
	}
	if !g.running() || g.cmd.Process.Pid != pid || strings.Count(g.log.String(), "fieldgate started") != 1 {
		t.Errorf("the gateway restarted for the reload (running %v, pid %d → %d)", g.running(), pid, g.cmd.Process.Pid)
	}
	for _, bad := range []string{"need a restart", "part stopped", "reload refused"} {
		if strings.Contains(g.log.String(), bad) {
			t.Errorf("the log says %q after the reload", bad)
		}
	}
}

// Sentences of the serial test: the textbook GGA and RMC, and the RMC with
// a wrong checksum (6B for 6A).
const (
	nmeaGGA    = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
	nmeaRMC    = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"
	nmeaBadRMC = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6B"
)

// TestSouthboundSerialNMEA: an NMEA GPS on a socat pty pair. The test
// writes sentences on one end, the binary's sensor reads the other, and
// mosquitto_sub sees the readings on southbound/gps; a line with a bad
// checksum is dropped (logged with its cause) and loses nothing else;
// pulling the "adapter" (stopping socat) makes the retained status offline.
func TestSouthboundSerialNMEA(t *testing.T) {
	t.Parallel()
	requireTools(t)
	socat, err := exec.LookPath("socat")
	requireTool(t, err == nil, "socat", "apt-get install socat")

	dir := t.TempDir()
	sensorLink, deviceLink := filepath.Join(dir, "ttyGPS"), filepath.Join(dir, "ttyDevice")
	pty := exec.Command(socat, "pty,raw,echo=0,link="+sensorLink, "pty,raw,echo=0,link="+deviceLink)
	ptyOut := &syncBuffer{}
	pty.Stderr = ptyOut
	if err := pty.Start(); err != nil {
		t.Fatalf("start socat: %v", err)
	}
	ptyDone := make(chan struct{})
	go func() {
		_ = pty.Wait()
		close(ptyDone)
	}()
	stopPty := func() {
		select {
		case <-ptyDone:
		default:
			_ = pty.Process.Signal(syscall.SIGTERM)
			<-ptyDone
		}
	}
	t.Cleanup(stopPty)
	if !waitFor(5*time.Second, func() bool {
		_, err1 := os.Stat(sensorLink)
		_, err2 := os.Stat(deviceLink)
		return err1 == nil && err2 == nil
	}) {
		t.Fatalf("socat made no links within 5 s:\n%s", ptyOut)
	}
	device, err := os.OpenFile(deviceLink, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer device.Close()

	g := startGatewayWith(t, "", func(g *gateway) string {
		return southboundConfig(g, fmt.Sprintf(`  serial:
    reconnect_min: 100ms
    reconnect_max: 500ms
    sensors:
      - {name: gps, port: %q, baud: 9600, parser: nmea, terminator: '\r\n'}
`, sensorLink))
	})
	s := g.sub(t, append([]string{"-t", "southbound/#"}, topicFormat...)...)
	const wait = 5 * time.Second

	// Lines are written once the sensor has the port open.
	at, st := nextMsg(t, s, 0, "southbound/gps/status", wait, func(m map[string]any) bool { return m["state"] == "online" })
	if dev, _ := st["device"].(string); dev == "" {
		t.Errorf("online status %v names no device", st)
	}
	if _, err := device.WriteString(nmeaGGA + "\r\n" + nmeaBadRMC + "\r\n" + nmeaRMC + "\r\n"); err != nil {
		t.Fatal(err)
	}
	want := []map[string]any{
		{"sentence": "GGA", "talker": "GP", "time": "12:35:19", "lat": 48.1173, "lon": 11.516666666666667,
			"fix": true, "fix_quality": 1.0, "satellites": 8.0, "hdop": 0.9, "altitude": 545.4, "geoid_separation": 46.9},
		{"sentence": "RMC", "talker": "GP", "time": "12:35:19", "fix": true, "lat": 48.1173, "lon": 11.516666666666667,
			"speed_knots": 22.4, "speed_kmh": 22.4 * 1.852, "course": 84.4, "date": "1994-03-23",
			"datetime": "1994-03-23T12:35:19Z", "magnetic_variation": -3.1},
	}
	for i, w := range want {
		var m map[string]any
		at, m = nextMsg(t, s, at, "southbound/gps", wait, nil)
		if ts, _ := m["ts"].(float64); m["q"] != "good" || math.Abs(ts-float64(time.Now().UnixMilli())) > 60e3 {
			t.Errorf("reading %d: %v, want q good and ts now", i, m)
		}
		v, _ := m["v"].(map[string]any)
		if len(v) != len(w) {
			t.Errorf("reading %d: fields %v, want %v", i, v, w)
		}
		for k, wv := range w {
			if !sameJSON(v[k], wv) {
				t.Errorf("reading %d (%s): %s = %v, want %v", i, w["sentence"], k, v[k], wv)
			}
		}
	}
	if !g.waitLog("serial: line dropped", 1, wait) {
		t.Fatalf("the bad checksum is not in the log")
	}
	for _, l := range strings.Split(g.log.String(), "\n") {
		if strings.Contains(l, "serial: line dropped") && !(strings.Contains(l, "cause=checksum") && strings.Contains(l, "line=$GPRMC,123519")) {
			t.Errorf("drop log line %q, want cause=checksum and the start of the line", l)
		}
	}
	if m := retained(t, g, "southbound/gps/status"); m["state"] != "online" {
		t.Errorf("retained southbound/gps/status = %v, want status online", m)
	}

	// The adapter is pulled: offline, retained, with the error.
	stopPty()
	_, st = nextMsg(t, s, at, "southbound/gps/status", wait, func(m map[string]any) bool { return m["state"] == "offline" })
	if st["err"] == nil {
		t.Errorf("offline status %v has no error", st)
	}
	var readings int
	for _, m := range topicMessages(s) {
		if m.topic == "southbound/gps" {
			readings++
		}
	}
	if readings != len(want) {
		t.Errorf("%d readings on southbound/gps, want %d (the bad line dropped, nothing else)", readings, len(want))
	}
	if m := retained(t, g, "southbound/gps/status"); m["state"] != "offline" {
		t.Errorf("retained southbound/gps/status after the pty went away = %v, want status offline", m)
	}
}
