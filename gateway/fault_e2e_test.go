package gateway_test

// The fault-injection suite (issue 11): each test runs the real fieldgate
// binary (built with the tag faultinject, see internal/clock) against real
// peers, breaks one thing, and asserts what the user sees (the uplink's
// status and counters on /metrics and $SYS, /readyz, log lines, device
// statuses) and that nothing the gateway acknowledged is lost: QoS 1
// publishers on the gateway's broker remember every acknowledged number,
// and every one of them must arrive at the cloud (Debian's mosquitto), in
// order per topic; duplicates are counted, not failed. The measured times
// are logged; the assertions are the bounds, generous. Results:
// docs/reliability.md and the notes.

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	goserial "go.bug.st/serial"

	"github.com/fieldgate/fieldgate/internal/peertest"
)

// waitMetric waits (at most d) until the metric with key prefix satisfies ok.
func waitMetric(fg *faultGateway, prefix string, d time.Duration, ok func(float64) bool) (float64, bool) {
	var v float64
	found := waitFor(d, func() bool {
		var has bool
		v, has = fg.metric(prefix)
		return has && ok(v)
	})
	return v, found
}

// uplinkConnected waits until the uplink is connected, and returns when.
func uplinkConnected(t *testing.T, fg *faultGateway, d time.Duration) time.Time {
	t.Helper()
	if _, ok := waitMetric(fg, "fieldgate_uplink_connected", d, func(v float64) bool { return v == 1 }); !ok {
		t.Fatalf("uplink not connected within %v; metrics: %v", d, uplinkMetrics(fg))
	}
	return time.Now()
}

// uplinkMetrics are the uplink's and outbox's samples, for failure messages.
func uplinkMetrics(fg *faultGateway) map[string]float64 {
	out := map[string]float64{}
	for k, v := range fg.metrics() {
		if strings.HasPrefix(k, "fieldgate_uplink") || strings.HasPrefix(k, "fieldgate_outbox") {
			out[k] = v
		}
	}
	return out
}

// TestFaultCorruptSegment: the outbox's segment file is damaged under the
// running gateway (garbage written over its middle, as bad flash would)
// while the cloud is away and messages wait in it. The gateway keeps
// running, reports the damage (an ERROR log line naming what was lost by
// cause, corrupt segments and drops on /metrics), takes new messages, and
// every acknowledged message that is not counted lost reaches the cloud
// in order once it is back.
func TestFaultCorruptSegment(t *testing.T) {
	t.Parallel()
	c := newCloud(t) // away until the damage is done
	gw := startFaultGateway(t, faultSetup{cloudPort: c.port})
	l := startLoad(t, gw.addr, 4, time.Millisecond)
	l.waitAcked(t, 2000, 30*time.Second)

	segs, _ := filepath.Glob(filepath.Join(gw.dataDir, "outbox", "seg-*.db"))
	if len(segs) == 0 {
		t.Fatal("no outbox segment")
	}
	seg := segs[0]
	fi, err := os.Stat(seg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(seg, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// 64 KiB of garbage from the middle of the file (pages of records and
	// of the tree), the file's size unchanged.
	garbage := []byte(strings.Repeat("\xde\xad\xbe\xef", 16<<10))
	if _, err := f.WriteAt(garbage, fi.Size()/2&^4095); err != nil {
		t.Fatal(err)
	}
	f.Close()
	damaged := time.Now()
	t.Logf("damaged %s (%d bytes) at offset %d", filepath.Base(seg), fi.Size(), fi.Size()/2&^4095)

	// New messages are still taken after the damage.
	l.waitAcked(t, 1000, 30*time.Second)
	c.start()
	cloudBack := time.Now()
	reconnected := uplinkConnected(t, gw, 20*time.Second)
	l.halt()
	acked, refused := l.total()

	// What the gateway says it lost, by cause.
	var lost float64
	lostByCause := map[string]float64{}
	waitFor(20*time.Second, func() bool {
		return gw.metricSum("fieldgate_outbox_depth") == 0
	})
	for k, v := range gw.metrics() {
		if strings.HasPrefix(k, "fieldgate_outbox_drops") && (strings.Contains(k, "corrupt") || strings.Contains(k, "checksum") || strings.Contains(k, "truncated")) {
			lost += v
			lostByCause[k] = v
		}
	}
	res := checkDeliveredLossy(t, l, c, 30*time.Second, int(lost))
	logs := gw.log.String()
	report := logLines(logs, "level=ERROR", 3)
	if len(report) == 0 || !strings.Contains(strings.Join(report, "\n"), "lost_corrupt") {
		t.Errorf("the damage is not reported at error level with what was lost (lost_corrupt=...)")
	}
	corrupt, _ := gw.metric("fieldgate_outbox_corrupt_segments")
	if corrupt < 1 || lost < 1 {
		t.Errorf("/metrics: fieldgate_outbox_corrupt_segments %v, drops %v: the damage is not counted", corrupt, lostByCause)
	}
	if !gw.running() {
		t.Fatal("the gateway exited after the damage")
	}
	t.Logf("corrupt segment while running: %d acknowledged (%d refused), %d missing in the cloud, %d counted lost by the gateway %v, %d duplicates; uplink connected %v after the cloud started, %v after the damage; the log says:\n%s",
		acked, refused, res.missing, int(lost), lostByCause, res.dups, reconnected.Sub(cloudBack).Round(time.Millisecond), reconnected.Sub(damaged).Round(time.Millisecond), strings.Join(report, "\n"))
}

// metricSum is the sum of every sample whose key starts with prefix.
func (fg *faultGateway) metricSum(prefix string) float64 {
	var s float64
	for k, v := range fg.metrics() {
		if strings.HasPrefix(k, prefix) {
			s += v
		}
	}
	return s
}

// TestFaultBlackholedCloud: mid-drain, the path to the cloud starts
// dropping everything (no RST, no FIN: a proxy that stops reading and
// forwarding but keeps the sockets open). The uplink notices through its
// keep alive and write timeouts, shows itself disconnected, keeps taking
// messages into the outbox, and reconnects when the path returns; nothing
// acknowledged is lost, order holds.
func TestFaultBlackholedCloud(t *testing.T) {
	t.Parallel()
	c := startCloud(t)
	proxy := startHoleProxy(t, fmt.Sprintf("127.0.0.1:%d", c.port))
	gw := startFaultGateway(t, faultSetup{cloudPort: proxy.port()})
	uplinkConnected(t, gw, 20*time.Second)
	l := startLoad(t, gw.addr, 4, 0)
	l.waitAcked(t, 3000, 30*time.Second)

	proxy.blackhole()
	holed := time.Now()
	ackedAtHole, _ := l.total()
	if _, ok := waitMetric(gw, "fieldgate_uplink_connected", 30*time.Second, func(v float64) bool { return v == 0 }); !ok {
		t.Fatalf("the uplink still says connected 30 s into the black hole; %v", uplinkMetrics(gw))
	}
	noticed := time.Since(holed)
	// Publishers are still acknowledged: the outbox takes it.
	l.waitAcked(t, 1000, 20*time.Second)
	depth, _ := gw.metric("fieldgate_outbox_depth")
	proxy.heal()
	healed := time.Now()
	uplinkConnected(t, gw, 20*time.Second)
	back := time.Since(healed)
	l.waitAcked(t, 1000, 20*time.Second)
	l.halt()
	res := checkDelivered(t, l, c, 60*time.Second)
	reconnects, _ := gw.metric("fieldgate_uplink_reconnects")
	if !strings.Contains(gw.log.String(), "uplink") || reconnects < 1 {
		t.Errorf("no reconnect counted (%v) after the black hole", reconnects)
	}
	if noticed > 15*time.Second {
		t.Errorf("the black hole was noticed after %v; keepalive 2s wants well under 15 s", noticed)
	}
	if back > 5*time.Second {
		t.Errorf("reconnected %v after the path came back; the bound is 5 s", back)
	}
	t.Logf("black-holed cloud: %d acknowledged before the hole, %d in all; lost connection noticed after %v; outbox depth %v while holed; reconnected %v after the path returned; %d received, %d duplicates, 0 lost",
		ackedAtHole, res.acked, noticed.Round(time.Millisecond), depth, back.Round(time.Millisecond), res.received, res.dups)
}

// TestFaultDiskFull: the data partition fills up. As root the data dir is
// a 16 MiB tmpfs filled by a file the test writes (board.reserve_mb 0: the
// real ENOSPC path); otherwise board.reserve_mb is set above the free
// space with policy refuse_new. Publishers get a refusal they can see
// (an MQTT 5 reason code ≥ 0x80 on the PUBACK), the log and /metrics say
// why, what was acknowledged is kept, and once space returns publishes
// are acknowledged again; everything acknowledged reaches the cloud.
func TestFaultDiskFull(t *testing.T) {
	t.Parallel()
	c := newCloud(t) // away: the outbox grows on the small partition
	dataDir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		t.Fatal(err)
	}
	// FIELDGATE_FAULT_NO_TMPFS=1 takes the path of a non-root run.
	tmpfs := os.Geteuid() == 0 && os.Getenv("FIELDGATE_FAULT_NO_TMPFS") == ""
	if tmpfs {
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m,mode=0750", "tmpfs", dataDir).CombinedOutput(); err != nil {
			tmpfs = false
			t.Logf("no tmpfs (%v: %s): falling back to board.reserve_mb", err, out)
		} else {
			t.Cleanup(func() {
				if out, err := exec.Command("umount", dataDir).CombinedOutput(); err != nil {
					t.Logf("umount %s: %v: %s; lazy unmount", dataDir, err, out)
					_ = exec.Command("umount", "-l", dataDir).Run()
				}
			})
		}
	}
	setup := faultSetup{cloudPort: c.port, dataDir: dataDir, extra: "board: {reserve_mb: 0, check_interval: 200ms}\n"}
	if !tmpfs {
		setup.uplinkExtra = "outbox: {policy: refuse_new}\n"
	}
	gw := startFaultGateway(t, setup)
	l := startLoad(t, gw.addr, 2, 2*time.Millisecond)
	l.waitAcked(t, 500, 30*time.Second)

	filler := filepath.Join(dataDir, "filler")
	full := time.Now()
	if tmpfs {
		fillDisk(t, filler)
	} else {
		// Without root: the board's reserve set above the free space (the
		// board's config needs a restart).
		l.halt()
		var st syscall.Statfs_t
		if err := syscall.Statfs(dataDir, &st); err != nil {
			t.Fatal(err)
		}
		reserve := setup
		reserve.extra = fmt.Sprintf("board: {reserve_mb: %d, check_interval: 200ms}\n", int64(st.Bavail)*int64(st.Bsize)>>20+1024)
		gw.rewrite(reserve)
		gw.stop(syscall.SIGTERM)
		gw.start()
		full = time.Now()
		l = l.restart(t)
	}
	if !waitFor(20*time.Second, func() bool { _, r := l.total(); return r >= 20 }) {
		a, r := l.total()
		t.Fatalf("disk full: publishers saw no refusal within 20 s (%d acknowledged, %d refused)", a, r)
	}
	refusedAfter := time.Since(full)
	ackedFull, refusedFull := l.total()
	l.mu.Lock()
	codes := fmt.Sprint(l.codes)
	l.mu.Unlock()
	metricsFull := map[string]float64{}
	for k, v := range uplinkMetrics(gw) {
		if strings.Contains(k, "drops") || strings.Contains(k, "refused") || strings.HasSuffix(k, "depth") {
			metricsFull[k] = v
		}
	}
	if metricsFull["fieldgate_uplink_refused"] < 1 && metricsFull["fieldgate_outbox_drops_write_failed"] < 1 {
		t.Errorf("/metrics counts no refusal while the disk is full: %v", metricsFull)
	}

	// Space returns.
	if tmpfs {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	} else {
		l.halt()
		gw.rewrite(setup)
		gw.stop(syscall.SIGTERM)
		gw.start()
		l = l.restart(t)
	}
	freed := time.Now()
	l.waitAcked(t, 200, 30*time.Second)
	recovered := time.Since(freed)
	l.halt()
	c.start()
	uplinkConnected(t, gw, 20*time.Second)
	res := checkDelivered(t, l, c, 60*time.Second)
	// ENOSPC fails the outbox's commit (an error); the reserve is a
	// warning from the board and the outbox.
	want := "level=ERROR"
	if !tmpfs {
		want = "data partition below its reserve"
	}
	var logs strings.Builder
	for _, l := range gw.logs { // every run: the fallback restarts the gateway
		logs.WriteString(l.String())
	}
	report := logLines(logs.String(), want, 3)
	if len(report) == 0 {
		t.Errorf("nothing logged (%q) while the disk was full", want)
	}
	appendFailed := strings.Count(logs.String(), "outbox append failed")
	if !gw.running() {
		t.Fatal("the gateway exited on a full disk")
	}
	t.Logf("disk full (tmpfs %v): first refusal %v after the disk filled (reason codes %s); %d acknowledged / %d refused while full; publishes acknowledged again %v after space returned; %d acknowledged in all, all in the cloud (%d duplicates); metrics while full: %v; %d lines \"outbox append failed\"; the log says:\n%s",
		tmpfs, refusedAfter.Round(time.Millisecond), codes, ackedFull, refusedFull, recovered.Round(time.Millisecond), res.acked, res.dups, metricsFull, appendFailed, strings.Join(report, "\n"))
}

// fillDisk writes path until the file system is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !strings.Contains(err.Error(), "no space") {
				t.Fatalf("filling the disk: %v", err)
			}
			return
		}
	}
}

// TestFaultClockJump: the gateway's wall clock jumps an hour back, then two
// hours forward, then back to the host's time (the faultinject build's
// clock; the host clock is shared with every other test and is not
// touched). Readings of a Modbus device and a serial sensor carry the
// jumped time in "ts"; the outbox loses and reorders nothing; polling and
// the uplink neither stall nor spin.
func TestFaultClockJump(t *testing.T) {
	t.Parallel()
	socat := peertest.Need(t, "socat", "socat")
	sim := startModbusSim(t)
	dir := t.TempDir()
	sensorLink, deviceLink := filepath.Join(dir, "ttyGPS"), filepath.Join(dir, "ttyDevice")
	pty := exec.Command(socat, "pty,raw,echo=0,link="+sensorLink, "pty,raw,echo=0,link="+deviceLink)
	if err := pty.Start(); err != nil {
		t.Fatalf("start socat: %v", err)
	}
	t.Cleanup(func() { _ = pty.Process.Kill(); _ = pty.Wait() })
	if !waitFor(5*time.Second, func() bool { _, err := os.Stat(deviceLink); return err == nil }) {
		t.Fatal("socat made no pty")
	}
	device, err := os.OpenFile(deviceLink, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer device.Close()

	c := startCloud(t)
	gw := startFaultGateway(t, faultSetup{cloudPort: c.port, extra: fmt.Sprintf(`southbound:
  modbus:
    devices:
      - name: plc
        tcp: {address: %q}
        unit_id: 1
        timeout: 300ms
        poll_groups: [{name: fast, interval: 100ms}]
        points:
          - {name: temp, register: holding, address: 0, type: INT16, scale: 0.1}
  serial:
    reconnect_min: 100ms
    reconnect_max: 500ms
    sensors:
      - {name: gps, port: %q, baud: 9600, parser: nmea, terminator: '\r\n'}
`, sim.addr, sensorLink)})
	w := watch(t, gw.addr, "southbound/plc/temp", "southbound/gps", "southbound/gps/status")
	if _, err := w.first("southbound/gps/status", `"online"`, time.Time{}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	uplinkConnected(t, gw, 20*time.Second)
	l := startLoad(t, gw.addr, 4, time.Millisecond)
	l.waitAcked(t, 500, 30*time.Second)

	pid := gw.cmd.Process.Pid
	for _, off := range []time.Duration{-time.Hour, time.Hour, 0} {
		gw.setClockOffset(t, off)
		jumped := time.Now()
		// Wait until the clock is read again (every 20 ms), then look.
		modbusTS, err := w.stampAfter("southbound/plc/temp", jumped.Add(100*time.Millisecond), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		modbusSkew := time.Duration(modbusTS-time.Now().Add(off).UnixMilli()) * time.Millisecond
		if modbusSkew.Abs() > 10*time.Second {
			t.Errorf("offset %v: Modbus ts is %v from the shifted clock", off, modbusSkew)
		}
		// No wait here: the Modbus reading above arrived at least 100 ms
		// after the clock file changed, 5 times the 20 ms after which every
		// clock of the process reads the file again on its next Now.
		if _, err := device.WriteString(nmeaGGA + "\r\n"); err != nil {
			t.Fatal(err)
		}
		serialTS, err := w.stampAfter("southbound/gps", jumped, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		serialSkew := time.Duration(serialTS-time.Now().Add(off).UnixMilli()) * time.Millisecond
		if serialSkew.Abs() > 10*time.Second {
			t.Errorf("offset %v: serial ts is %v from the shifted clock", off, serialSkew)
		}
		// Neither a stall nor a spin: polls and acknowledgements go on at
		// their pace, and the CPU stays low.
		cpu0, _ := procCPU(pid)
		polls0 := len(w.payloads("southbound/plc/temp"))
		acked0, _ := l.total()
		window := 2 * time.Second
		time.Sleep(window) // kept sleep: a measurement window (CPU, polls and acknowledgements counted over it), not synchronisation
		cpu1, _ := procCPU(pid)
		polls := len(w.payloads("southbound/plc/temp")) - polls0
		acked1, _ := l.total()
		if polls < 5 || polls > 60 {
			t.Errorf("offset %v: %d Modbus readings in %v at a 100 ms interval", off, polls, window)
		}
		if share := (cpu1 - cpu0).Seconds() / window.Seconds(); share > 0.9 {
			t.Errorf("offset %v: the gateway used %.0f%% of a core (a spin?)", off, 100*share)
		}
		if acked1-acked0 < 100 {
			t.Errorf("offset %v: only %d publishes acknowledged in %v", off, acked1-acked0, window)
		}
		t.Logf("clock offset %v: Modbus ts %v, serial ts %v from the shifted clock (arrival, not sampling, time); %d readings and %d acknowledged publishes in %v; gateway CPU %.0f%% of a core",
			off, modbusSkew, serialSkew, polls, acked1-acked0, window, 100*(cpu1-cpu0).Seconds()/window.Seconds())
	}
	l.halt()
	res := checkDelivered(t, l, c, 60*time.Second)
	if strings.Contains(gw.log.String(), "part stuck") {
		t.Errorf("a part was reported stuck across the clock jumps")
	}
	t.Logf("clock jumps: %d acknowledged, all in the cloud in order, %d duplicates", res.acked, res.dups)
}

// stampAfter waits for a message on topic that arrived after since and
// returns its "ts" (Unix ms).
func (w *statusWatch) stampAfter(topic string, since time.Time, d time.Duration) (int64, error) {
	var ts int64
	ok := waitFor(d, func() bool {
		for _, m := range w.payloads(topic) {
			if m.at.Before(since) {
				continue
			}
			var v struct {
				TS float64 `json:"ts"`
			}
			if json.Unmarshal([]byte(m.payload), &v) == nil && v.TS > 0 {
				ts = int64(math.Round(v.TS))
				return true
			}
		}
		return false
	})
	if !ok {
		return 0, fmt.Errorf("no reading on %s after %v within %v", topic, since.Format(time.TimeOnly), d)
	}
	return ts, nil
}

// logLines returns at most n lines of logs that contain want.
func logLines(logs, want string, n int) []string {
	var out []string
	for line := range strings.Lines(logs) {
		if strings.Contains(line, want) && len(out) < n {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// TestFaultSIGSTOP: the whole gateway is stopped (SIGSTOP) for 60 s, as
// a board whose process is frozen, and continued. Its publishers lose
// their connections (keep alive) and reconnect; the cloud drops the
// bridge and the bridge reconnects; /readyz and the parts are healthy
// again; no part is restarted for a pause that was not its own; nothing
// acknowledged is lost. It runs in parallel with the other tests.
func TestFaultSIGSTOP(t *testing.T) {
	t.Parallel()
	c := startCloud(t)
	gw := startFaultGateway(t, faultSetup{cloudPort: c.port})
	uplinkConnected(t, gw, 20*time.Second)
	if !waitFor(20*time.Second, func() bool { return gw.readyz() == 200 }) {
		t.Fatalf("/readyz is %d before the stop", gw.readyz())
	}
	l := startLoad(t, gw.addr, 4, 2*time.Millisecond)
	l.waitAcked(t, 500, 30*time.Second)
	reconnects0, _ := gw.metric("fieldgate_uplink_reconnects")
	restarts0 := gw.metricSum("fieldgate_part_restarts_total")

	gw.signal(syscall.SIGSTOP)
	stopped := time.Now()
	const pause = 60 * time.Second
	time.Sleep(pause) // kept sleep: the fault's duration, a real 60 s outage
	acked0, _ := l.total()
	gw.signal(syscall.SIGCONT)
	resumed := time.Now()

	// Publishers: acknowledged again.
	l.waitAcked(t, 200, 30*time.Second)
	pubBack := time.Since(resumed)
	if !waitFor(30*time.Second, func() bool { return gw.readyz() == 200 }) {
		t.Errorf("/readyz is %d 30 s after SIGCONT", gw.readyz())
	}
	readyBack := time.Since(resumed)
	if _, ok := waitMetric(gw, "fieldgate_uplink_reconnects", 30*time.Second, func(v float64) bool { return v > reconnects0 }); !ok {
		t.Logf("the uplink did not reconnect after the pause (the cloud kept its session): %v", uplinkMetrics(gw))
	}
	uplinkConnected(t, gw, 30*time.Second)
	uplinkBack := time.Since(resumed)
	l.waitAcked(t, 200, 30*time.Second)
	l.halt()
	res := checkDelivered(t, l, c, 60*time.Second)
	l.mu.Lock()
	reconns, timeouts := l.reconns, l.timeouts
	l.mu.Unlock()
	restarts := gw.metricSum("fieldgate_part_restarts_total") - restarts0
	if restarts > 0 {
		t.Errorf("%v part restarts after a pause of the whole process; the log says:\n%s", restarts, strings.Join(logLines(gw.log.String(), "part stuck", 5), "\n"))
	}
	t.Logf("SIGSTOP for %v: %d acknowledged before the stop; after SIGCONT publishers acknowledged again in %v (%d reconnections, %d publishes unanswered), /readyz 200 in %v, uplink connected in %v; %d acknowledged in all, all in the cloud, %d duplicates, %d never acknowledged but delivered; part restarts %v",
		resumed.Sub(stopped).Round(time.Millisecond), acked0, pubBack.Round(time.Millisecond), reconns, timeouts, readyBack.Round(time.Millisecond), uplinkBack.Round(time.Millisecond), res.acked, res.dups, res.unacked, restarts)
}

// rtuLine is a Modbus RTU device on a socat pty pair (the cable, its near
// end a symlink the gateway opens) served by Debian's pymodbus.
type rtuLine struct {
	t          *testing.T
	socat, sim *exec.Cmd
	near, far  string
}

// plugRTU makes the pty pair under a temporary name, starts the simulator
// on its far end, waits until it answers a read there, and only then
// gives the near end the name the gateway opens (as udev adds a by-id
// link): the port "returns" with a device that answers, and returns
// when that is.
func plugRTU(t *testing.T, near, far string) (*rtuLine, time.Time) {
	t.Helper()
	socat := peertest.Need(t, "socat", "socat")
	if out, err := exec.Command(python, "-c", "import pymodbus.server, serial_asyncio").CombinedOutput(); err != nil {
		peertest.Missing(t, fmt.Sprintf("pymodbus's serial server under %s (%v: %s)", python, err, strings.TrimSpace(string(out))), "apt-get install python3-pymodbus python3-serial-asyncio")
	}
	r := &rtuLine{t: t, near: near, far: far}
	staged := near + ".new"
	for _, link := range []string{near, staged, far} { // left by a killed socat
		if err := os.Remove(link); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	r.socat = exec.Command(socat, "pty,raw,echo=0,link="+staged, "pty,raw,echo=0,link="+far)
	if err := r.socat.Start(); err != nil {
		t.Fatalf("start socat: %v", err)
	}
	t.Cleanup(r.unplug)
	if !waitFor(5*time.Second, func() bool {
		_, err1 := os.Stat(staged)
		_, err2 := os.Stat(far)
		return err1 == nil && err2 == nil
	}) {
		t.Fatal("socat made no ptys within 5 s")
	}
	script, err := filepath.Abs("../southbound/modbus/testdata/pymodbus_rtu_server.py")
	if err != nil {
		t.Fatal(err)
	}
	r.sim = exec.Command(python, script, far)
	if err := r.sim.Start(); err != nil {
		t.Fatalf("start pymodbus: %v", err)
	}
	if err := rtuAnswers(staged, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(staged, near); err != nil {
		t.Fatal(err)
	}
	return r, time.Now()
}

// rtuAnswers waits (at most d) until the device on the serial port path
// answers a read of holding register 0 of unit 1.
func rtuAnswers(path string, d time.Duration) error {
	port, err := goserial.Open(path, &goserial.Mode{BaudRate: 9600, DataBits: 8, Parity: goserial.NoParity, StopBits: goserial.OneStopBit})
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer port.Close()
	if err := port.SetReadTimeout(200 * time.Millisecond); err != nil {
		return err
	}
	request := []byte{0x01, 0x03, 0x00, 0x00, 0x00, 0x01, 0x84, 0x0a} // with its CRC
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		_ = port.ResetInputBuffer()
		if _, err := port.Write(request); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		reply := make([]byte, 0, 7)
		buf := make([]byte, 7)
		for len(reply) < 7 {
			n, err := port.Read(buf[:7-len(reply)])
			if err != nil || n == 0 {
				break
			}
			reply = append(reply, buf[:n]...)
		}
		if len(reply) == 7 && reply[0] == 0x01 && reply[1] == 0x03 && reply[2] == 0x02 {
			return nil
		}
	}
	return fmt.Errorf("pymodbus on %s does not answer within %v", path, d)
}

// unplug kills the simulator and socat: both ptys vanish, as a USB
// adapter pulled out.
func (r *rtuLine) unplug() {
	for _, c := range []*exec.Cmd{r.socat, r.sim} {
		if c != nil && c.Process != nil && c.ProcessState == nil {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
}

// vanishMidRequest silences the device (SIGSTOP: a request now waits for
// its answer), waits a little so that one is pending, and pulls the port.
func (r *rtuLine) vanishMidRequest() time.Time {
	r.t.Helper()
	if err := r.sim.Process.Signal(syscall.SIGSTOP); err != nil {
		r.t.Fatal(err)
	}
	// A poll (every 100 ms) now sends a request that the stopped device
	// never reads: wait until its bytes wait in the device's end.
	if !waitFor(5*time.Second, func() bool { n, err := ptyPending(r.far); return err == nil && n > 0 }) {
		n, err := ptyPending(r.far)
		r.t.Fatalf("no request pending at the silenced device within 5 s (%d bytes queued, %v)", n, err)
	}
	gone := time.Now()
	_ = r.socat.Process.Kill()
	_ = r.socat.Wait()
	// Killed, socat leaves its links behind; udev would remove the node.
	_ = os.Remove(r.near)
	_ = r.sim.Process.Kill()
	_ = r.sim.Wait()
	return gone
}

// TestFaultSIGTERMWithVanishedRTU: a Modbus RTU adapter vanishes while a
// request waits for its reply; the device is reported offline ("serial
// port gone") within 3 × timeout × (retries + 1), the gateway stays under
// 2 % of a core while the port is gone, is back online within 2 s of the
// port returning, and a SIGTERM with the port gone again mid-request ends
// the process within 5 s with exit status 0.
func TestFaultSIGTERMWithVanishedRTU(t *testing.T) {
	t.Parallel()
	requireTools(t)
	dir := t.TempDir()
	near, far := filepath.Join(dir, "ttyRTU"), filepath.Join(dir, "ttyRTU-far")
	line, _ := plugRTU(t, near, far)
	c := newCloud(t) // the uplink waits for a cloud that never comes
	const timeout, retries = 300 * time.Millisecond, 1
	gw := startFaultGateway(t, faultSetup{cloudPort: c.port, extra: fmt.Sprintf(`southbound:
  modbus:
    offline_after: 1
    devices:
      - name: rtu
        rtu: {port: %q, baud: 9600}
        unit_id: 1
        timeout: %s
        retries: %d
        poll_groups: [{name: fast, interval: 100ms}]
        points:
          - {name: r0, register: holding, address: 0, type: UINT16}
`, near, timeout, retries)})
	w := watch(t, gw.addr, "southbound/rtu/status", "southbound/rtu/r0")
	if _, err := w.first("southbound/rtu/status", `"online"`, time.Time{}, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	pid := gw.cmd.Process.Pid

	// 1. Gone mid-request.
	gone := line.vanishMidRequest()
	offAt, err := w.first("southbound/rtu/status", "serial port gone", gone, 10*time.Second)
	if err != nil {
		t.Fatalf("%v; status messages: %v", err, w.payloads("southbound/rtu/status"))
	}
	toOffline := offAt.Sub(gone)
	if bound := 3 * timeout * (retries + 1); toOffline > bound {
		t.Errorf("offline %v after the port vanished; bound %v", toOffline, bound)
	}
	// 2. CPU while the port is gone.
	cpu0, _ := procCPU(pid)
	const window = 3 * time.Second
	time.Sleep(window) // kept sleep: a measurement window for the CPU used while the port is gone
	cpu1, _ := procCPU(pid)
	cpuShare := (cpu1 - cpu0).Seconds() / window.Seconds()
	if cpuShare > 0.10 {
		t.Errorf("%.1f%% of a core while the port is gone; the goal is under 2%%", 100*cpuShare)
	}
	// 3. The port returns (as another pty behind the same link).
	line, back := plugRTU(t, near, far)
	onAt, err := w.first("southbound/rtu/status", `"online"`, back, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	toOnline := onAt.Sub(back)
	if toOnline > 2*time.Second {
		t.Errorf("online %v after the port returned; bound 2 s", toOnline)
	}
	// 4. Gone mid-request again, and SIGTERM at once.
	line.vanishMidRequest()
	code, took := gw.stop(syscall.SIGTERM)
	if took > 5*time.Second {
		t.Errorf("SIGTERM took %v to end the process; bound 5 s", took)
	}
	if code != 0 {
		t.Errorf("exit status %d after SIGTERM; the log says:\n%s", code, strings.Join(logLines(gw.log.String(), "level=ERROR", 5), "\n"))
	}
	t.Logf("RTU adapter vanished mid-request: offline (serial port gone) after %v (bound %v); %.2f%% of a core while gone; online %v after the port returned; SIGTERM with the port gone mid-request: exit %d after %v",
		toOffline.Round(time.Millisecond), 3*timeout*(retries+1), 100*cpuShare, toOnline.Round(time.Millisecond), code, took.Round(time.Millisecond))
}
