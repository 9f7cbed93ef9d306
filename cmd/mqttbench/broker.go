package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Broker kinds the benchmark knows how to start.
const (
	kindMosquitto = "mosquitto"
	kindFieldgate = "fieldgate"
	// kindUpstream is pristine upstream mochi-mqtt, built from
	// cmd/mqttbench/upstream (its own module, without the engine patches).
	kindUpstream = "mochi"
)

const (
	// readyTimeout bounds a broker's start-up, until its port accepts.
	readyTimeout = 10 * time.Second
	// stopTimeout is how long a broker gets to exit after SIGTERM before
	// it is killed; one that needs longer fails the scenario (issue 18:
	// SIGTERM always exits).
	stopTimeout = 10 * time.Second
	// outputTail is how much of a broker's stdout and stderr is kept.
	outputTail = 64 << 10
	// fieldgateMaxConnections is the broker limit written into fieldgate's
	// config; it must stay above -idle-conns.
	fieldgateMaxConnections = 20000
)

// brokerSpec says how to start one of the compared brokers.
type brokerSpec struct {
	// label names the broker in logs and in the table's column.
	label string
	// kind is kindMosquitto, kindFieldgate or kindUpstream: which config
	// to write.
	kind string
	// path is the executable.
	path string
	// version is the module version of upstream mochi (kindUpstream).
	version string
	// extraArgs are appended to the command line (fieldgate: -cpuprofile).
	extraArgs []string
}

// brokerProc is a running broker process on its own port.
type brokerProc struct {
	spec    brokerSpec
	addr    string
	pid     int
	dir     string
	cmd     *exec.Cmd
	out     *tailBuffer
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid once done is closed
}

// startBroker writes the broker's config into a new temp dir, starts it on a
// free loopback port and waits until the port accepts connections. The
// process is killed when ctx ends, and also (Pdeathsig) if this program
// dies without stopping it.
func startBroker(ctx context.Context, spec brokerSpec) (*brokerProc, error) {
	dir, err := os.MkdirTemp("", "mqttbench-"+spec.kind+"-")
	if err != nil {
		return nil, fmt.Errorf("start %s: make temp dir: %w", spec.label, err)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", spec.label, err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	var config, configPath string
	var args []string
	switch spec.kind {
	case kindMosquitto:
		config = mosquittoConfig(port)
		configPath = filepath.Join(dir, "mosquitto.conf")
		args = []string{"-c", configPath}
	case kindFieldgate:
		dataDir := filepath.Join(dir, "data")
		if err := os.Mkdir(dataDir, 0o700); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("start %s: make data dir: %w", spec.label, err)
		}
		config = fieldgateConfig(dataDir, addr)
		configPath = filepath.Join(dir, "fieldgate.yaml")
		args = []string{"run", "-config", configPath}
	case kindUpstream:
		args = []string{"-addr", addr}
	default:
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: unknown broker kind %q", spec.label, spec.kind)
	}
	if configPath != "" { // upstream mochi has none: its address is a flag
		if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("start %s: write config: %w", spec.label, err)
		}
	}

	out := &tailBuffer{max: outputTail}
	cmd := exec.CommandContext(ctx, spec.path, append(args, spec.extraArgs...)...)
	cmd.Dir = dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.WaitDelay = stopTimeout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s (%s): %w", spec.label, spec.path, err)
	}
	b := &brokerProc{spec: spec, addr: addr, pid: cmd.Process.Pid, dir: dir, cmd: cmd, out: out, done: make(chan struct{})}
	// This goroutine ends when the process exits; stop makes sure it does.
	go func() {
		b.waitErr = cmd.Wait()
		close(b.done)
	}()
	if err := b.waitReady(ctx); err != nil {
		_, _ = b.stop()
		return nil, err
	}
	return b, nil
}

// waitReady polls the broker's port until it accepts a connection.
func (b *brokerProc) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-b.done:
			return &startError{label: b.spec.label, err: fmt.Errorf("exited during start-up: %v", b.waitErr), output: b.out.String()}
		case <-ctx.Done():
			return fmt.Errorf("start %s: %w", b.spec.label, ctx.Err())
		case <-tick.C:
		}
		conn, err := net.DialTimeout("tcp", b.addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return &startError{label: b.spec.label, err: fmt.Errorf("port %s not accepting after %s: %w", b.addr, readyTimeout, err), output: b.out.String()}
		}
	}
}

// sigtermResult is how a broker answered SIGTERM at the end of a scenario.
type sigtermResult struct {
	// sent is false when the broker had exited before (crashed).
	sent bool
	// took is the time from SIGTERM to the process's exit (or to the kill).
	took time.Duration
	// err is set when the broker did not exit within stopTimeout (it was
	// killed) or exited with a non-zero status.
	err error
	// output is the tail of the broker's output when err is set.
	output string
}

// stop terminates the broker (SIGTERM, then SIGKILL after stopTimeout) and
// removes its temp dir. It returns how the broker answered SIGTERM, and an
// error if the broker had exited by itself before, i.e. crashed during the
// scenario.
func (b *brokerProc) stop() (sigtermResult, error) {
	var crashed error
	var st sigtermResult
	select {
	case <-b.done:
		crashed = &startError{label: b.spec.label, err: fmt.Errorf("exited during the run: %v", b.waitErr), output: b.out.String(), running: true}
	default:
		st.sent = true
		start := time.Now()
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(stopTimeout)
		select {
		case <-b.done:
			st.took = time.Since(start)
			if b.waitErr != nil {
				st.err = fmt.Errorf("%s exited with %v after SIGTERM", b.spec.label, b.waitErr)
			}
		case <-t.C:
			st.took = time.Since(start)
			st.err = fmt.Errorf("%s did not exit within %s of SIGTERM: killed", b.spec.label, stopTimeout)
			_ = b.cmd.Process.Kill()
			<-b.done
		}
		t.Stop()
		if st.err != nil {
			st.output = b.out.String()
		}
	}
	if err := os.RemoveAll(b.dir); err != nil {
		return st, errors.Join(crashed, fmt.Errorf("remove %s: %w", b.dir, err))
	}
	return st, crashed
}

// startError is a broker that would not start or died; it carries the
// broker's output, which usually says why (for fieldgate: the config key it
// rejected).
type startError struct {
	label   string
	err     error
	output  string
	running bool
}

// Error says which broker failed and how, with the last line of its
// output; the whole output is kept apart.
func (e *startError) Error() string {
	msg := fmt.Sprintf("start %s: %v", e.label, e.err)
	if e.running {
		msg = fmt.Sprintf("%s: %v", e.label, e.err)
	}
	lines := strings.Split(strings.TrimSpace(e.output), "\n")
	if last := strings.TrimSpace(lines[len(lines)-1]); last != "" {
		msg += ": " + last
	}
	return msg
}

// Unwrap returns the underlying failure.
func (e *startError) Unwrap() error { return e.err }

// mosquittoConfig is mosquitto's config: its defaults (no persistence) on
// one loopback listener, with a session queue as long as fieldgate's
// (benchQueueLimit; mosquitto's default is 1,000).
func mosquittoConfig(port int) string {
	return fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmax_queued_messages %d\n", port, benchQueueLimit)
}

// benchQueueLimit is the session queue length configured on every broker
// that has one: the offline queue scenario queues 100,000 messages.
const benchQueueLimit = 100000

// fieldgateConfig is fieldgate's config: the broker on one loopback TCP
// listener, everything else that listens switched off, and no limit per
// source address (every benchmark client comes from 127.0.0.1).
func fieldgateConfig(dataDir, addr string) string {
	return fmt.Sprintf(`version: 1
gateway:
  data_dir: %q
log:
  level: warn
broker:
  listeners:
    tcp: {enabled: true, address: %q}
    websocket: {enabled: false}
  limits:
    max_connections: %d
    max_connections_per_address: 0
    max_queued: %d
    max_queued_bytes: 0
web: {enabled: false}
mqttsn: {enabled: false}
coap: {enabled: false}
`, dataDir, addr, fieldgateMaxConnections, benchQueueLimit)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// brokerVersion returns the first line of `mosquitto -h` (which prints the
// version); upstream mochi its module version; fieldgate its path.
func brokerVersion(ctx context.Context, spec brokerSpec) string {
	if spec.kind == kindUpstream {
		return "mochi-mqtt/server " + spec.version + " unpatched (" + spec.path + ")"
	}
	if spec.kind != kindMosquitto {
		return spec.path
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, spec.path, "-h").CombinedOutput() // exits non-zero after printing
	line, _, _ := bytes.Cut(out, []byte("\n"))
	if len(line) == 0 {
		return spec.path
	}
	return fmt.Sprintf("%s (%s)", bytes.TrimSpace(line), spec.path)
}

// tailBuffer is an io.Writer that keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

// Write keeps p, dropping the oldest bytes beyond the limit.
func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 2*t.max { // compact rarely: broker logs can be chatty
		n := copy(t.b, t.b[len(t.b)-t.max:])
		t.b = t.b[:n]
	}
	return len(p), nil
}

// String returns the kept output (up to max bytes).
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.b) > t.max {
		return string(t.b[len(t.b)-t.max:])
	}
	return string(t.b)
}
