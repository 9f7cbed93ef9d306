package main

// The binary phase: the fieldgate binary (built from ./cmd/fieldgate, or
// -bin) is started twice, without rules and with one rule that fails on
// every message, and MQTT clients over TCP publish QoS 1 into it as fast as
// it acknowledges while one subscriber counts what it delivers.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// binaryResult is one run of the binary phase.
type binaryResult struct {
	acked     float64 // QoS 1 publishes acknowledged per second
	delivered float64 // messages the subscriber received per second
	// cpuPerMsg is the fieldgate process's CPU time (user + system) per
	// message acknowledged, while publishing: the rate moves with the
	// other load of a shared machine, this barely does.
	cpuPerMsg time.Duration
	// pacedDelivered and pacedCPUPerMsg are the same at a steady rate
	// (acknowledged per second, and CPU per message acknowledged).
	pacedDelivered float64
	pacedCPUPerMsg time.Duration
}

// failingRuleYAML is the rules section of the binary phase's erroring run.
const failingRuleYAML = `rules:
  - id: fails
    enabled: true
    sql: SELECT payload.v * 'x' AS v FROM "load/#"
    actions:
      - log: {}
`

// buildFieldgate builds ./cmd/fieldgate into dir.
func buildFieldgate(dir string) (string, error) {
	path := filepath.Join(dir, "fieldgate")
	cmd := exec.Command("go", "build", "-o", path, "./cmd/fieldgate")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/fieldgate (run rulesbench from the module root): %w\n%s", err, out)
	}
	return path, nil
}

// binaryPhase starts bin with rulesYAML (may be empty) and measures for
// dur at saturation, then for dur at rate messages/s.
func binaryPhase(bin, rulesYAML string, dur time.Duration, publishers, rate int) (binaryResult, error) {
	bin, err := filepath.Abs(bin) // it runs in its own directory
	if err != nil {
		return binaryResult{}, fmt.Errorf("binary phase: %w", err)
	}
	dir, err := os.MkdirTemp("", "rulesbench-")
	if err != nil {
		return binaryResult{}, fmt.Errorf("binary phase: %w", err)
	}
	defer os.RemoveAll(dir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return binaryResult{}, fmt.Errorf("binary phase: free port: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := fmt.Sprintf(`version: 1
gateway: {data_dir: %q}
log: {level: warn}
broker:
  listeners:
    tcp: {enabled: true, address: %q}
    websocket: {enabled: false}
web: {enabled: false}
mqttsn: {enabled: false}
coap: {enabled: false}
%s`, filepath.Join(dir, "data"), addr, rulesYAML)
	cfgPath := filepath.Join(dir, "fieldgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return binaryResult{}, fmt.Errorf("binary phase: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	args := []string{"run", "-config", cfgPath}
	if binProfileDir != "" {
		binProfiles++
		args = append(args, "-cpuprofile", filepath.Join(binProfileDir, fmt.Sprintf("fieldgate-%d.prof", binProfiles)))
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return binaryResult{}, fmt.Errorf("binary phase: start %s: %w", bin, err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	var ready bool
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			ready = true
			break
		}
	}
	if !ready {
		return binaryResult{}, fmt.Errorf("binary phase: %s does not accept on %s", bin, addr)
	}

	sub, err := mqttDial(addr, "rulesbench-sub")
	if err != nil {
		return binaryResult{}, err
	}
	defer sub.Close()
	if err := mqttSubscribe(sub, "load/#"); err != nil {
		return binaryResult{}, err
	}
	var delivered atomic.Int64
	counting := atomic.Bool{}
	go func() { // ends when sub is closed
		r := bufio.NewReaderSize(sub, 64<<10)
		for {
			typ, _, err := readPacket(r)
			if err != nil {
				return
			}
			if typ == 3 && counting.Load() {
				delivered.Add(1)
			}
		}
	}()

	measure := func(rate int) (ackRate, deliveredRate float64, cpu time.Duration, err error) {
		var n atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, publishers)
		cpu0, err := procCPU(cmd.Process.Pid)
		if err != nil {
			return 0, 0, 0, err
		}
		var interval time.Duration // between one publisher's messages
		if rate > 0 {
			interval = time.Second * time.Duration(publishers) / time.Duration(rate)
		}
		delivered0 := delivered.Load()
		start := time.Now()
		deadline := start.Add(dur)
		counting.Store(true)
		for p := range publishers {
			wg.Go(func() {
				if err := publishQoS1(addr, fmt.Sprintf("rulesbench-pub-%d-%d", rate, p), "load/"+strconv.Itoa(p), deadline, interval, &n); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		cpu1, err := procCPU(cmd.Process.Pid)
		if err != nil {
			return 0, 0, 0, err
		}
		time.Sleep(200 * time.Millisecond) // the last deliveries
		counting.Store(false)
		close(errs)
		var all []error
		for e := range errs {
			all = append(all, e)
		}
		if err := errors.Join(all...); err != nil {
			return 0, 0, 0, err
		}
		return float64(n.Load()) / elapsed.Seconds(), float64(delivered.Load()-delivered0) / elapsed.Seconds(), perMsg(cpu1-cpu0, n.Load()), nil
	}
	var res binaryResult
	if res.acked, res.delivered, res.cpuPerMsg, err = measure(0); err != nil {
		return res, err
	}
	if res.pacedDelivered, _, res.pacedCPUPerMsg, err = measure(rate); err != nil {
		return res, err
	}
	return res, nil
}

// procCPU is the CPU time (user + system) process pid used so far, from
// /proc/<pid>/stat (in clock ticks of 10 ms, Linux's USER_HZ).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu time of %d: %w", pid, err)
	}
	// the fields after the command name, which is in parentheses
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("cpu time of %d: cannot parse %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("cpu time of %d: cannot parse %q", pid, b)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14 of stat
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("cpu time of %d: %w", pid, err)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// binProfileDir, when set (-binprofile), receives a CPU profile of each
// fieldgate run, numbered in order.
var (
	binProfileDir string
	binProfiles   int
)

// window is how many QoS 1 publishes a publisher keeps unacknowledged.
const window = 32

// publishQoS1 publishes on topic until deadline, window messages in flight,
// one every interval (0: as fast as acknowledged), and counts the PUBACKs.
func publishQoS1(addr, clientID, topic string, deadline time.Time, interval time.Duration, acked *atomic.Int64) error {
	c, err := mqttDial(addr, clientID)
	if err != nil {
		return err
	}
	defer c.Close()
	credit := make(chan struct{}, window)
	for range window {
		credit <- struct{}{}
	}
	readErr := make(chan error, 1)
	go func() { // ends when c is closed
		r := bufio.NewReaderSize(c, 16<<10)
		for {
			typ, _, err := readPacket(r)
			if err != nil {
				readErr <- err
				return
			}
			if typ == 4 {
				acked.Add(1)
				credit <- struct{}{}
			}
		}
	}()
	w := bufio.NewWriterSize(c, 16<<10)
	var id uint16
	start := time.Now()
	for i := 0; time.Now().Before(deadline); i++ {
		if interval > 0 {
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				if err := w.Flush(); err != nil {
					return fmt.Errorf("publisher %s: %w", clientID, err)
				}
				time.Sleep(d)
			}
		}
		select {
		case <-credit:
		case err := <-readErr:
			return fmt.Errorf("publisher %s: %w", clientID, err)
		}
		id++
		if id == 0 {
			id = 1
		}
		payload := fmt.Appendf(nil, `{"v":%d}`, id)
		if _, err := w.Write(publishPacket(topic, id, payload)); err != nil {
			return fmt.Errorf("publisher %s: %w", clientID, err)
		}
		if len(credit) == 0 {
			if err := w.Flush(); err != nil {
				return fmt.Errorf("publisher %s: %w", clientID, err)
			}
		}
	}
	return w.Flush()
}

// mqttDial connects an MQTT 3.1.1 client (clean session).
func mqttDial(addr, clientID string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	body := appendString(nil, "MQTT")
	body = append(body, 4, 0x02, 0, 60) // level 4, clean session, keep alive 60 s
	body = appendString(body, clientID)
	if _, err := c.Write(packet(0x10, body)); err != nil {
		c.Close()
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, b, err := readPacket(bufio.NewReader(io.LimitReader(c, 4)))
	_ = c.SetReadDeadline(time.Time{})
	if err != nil || typ != 2 || len(b) != 2 || b[1] != 0 {
		c.Close()
		return nil, fmt.Errorf("connect %s: no CONNACK accepting %s (%v)", addr, clientID, err)
	}
	return c, nil
}

// mqttSubscribe subscribes c to filter at QoS 0 and waits for the SUBACK.
func mqttSubscribe(c net.Conn, filter string) error {
	body := binary.BigEndian.AppendUint16(nil, 1)
	body = appendString(body, filter)
	body = append(body, 0)
	if _, err := c.Write(packet(0x82, body)); err != nil {
		return fmt.Errorf("subscribe %s: %w", filter, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, _, err := readPacket(bufio.NewReader(io.LimitReader(c, 5)))
	_ = c.SetReadDeadline(time.Time{})
	if err != nil || typ != 9 {
		return fmt.Errorf("subscribe %s: no SUBACK (%v)", filter, err)
	}
	return nil
}

func publishPacket(topic string, id uint16, payload []byte) []byte {
	body := appendString(nil, topic)
	body = binary.BigEndian.AppendUint16(body, id)
	return packet(0x32, append(body, payload...))
}

func packet(h byte, body []byte) []byte {
	b := []byte{h}
	n := len(body)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			break
		}
	}
	return append(b, body...)
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// readPacket reads one packet: its type (the high nibble) and body.
func readPacket(r *bufio.Reader) (byte, []byte, error) {
	h, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		d, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mul
		if d&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("malformed remaining length")
		}
		mul *= 128
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, nil, err
	}
	return h >> 4, b, nil
}
