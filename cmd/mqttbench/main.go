// Command mqttbench compares fieldgate's MQTT broker with Debian's mosquitto
// 2 and with pristine upstream mochi-mqtt (the engine fieldgate patches) on
// this machine, in one run, and prints a Markdown table (fieldgate |
// mosquitto | mochi | ratios) that can be pasted into a README, and the
// pass/fail of issue 18's targets. It is what `make bench` runs.
//
// The load generator is its own: raw TCP sockets on 127.0.0.1 and a tiny
// MQTT 3.1.1 encoder/decoder, with batched writes and large buffered reads,
// so that on a small machine the brokers and not the generator are the
// bottleneck. For every scenario each broker is started afresh on a free
// loopback port with a generated config, measured, and stopped:
//
//   - saturated loads for -duration: QoS 0 fan-in 4→1, QoS 1 fan-in 4→1
//     with 20 in flight per publisher, 50 QoS 0 publisher/subscriber pairs,
//     QoS 0 fan-out 1→100: delivered messages/s and the share lost;
//   - 10,000 msg/s (4 × 2,500) at QoS 0 and QoS 1: latency p50/p99/max
//     and the broker's CPU use;
//   - an offline persistent session queue of 100,000 QoS 1 messages: the
//     publish rate, the cost per message at 10k and 100k queued, the
//     messages delivered and dropped on reconnect;
//   - 100,000 retained messages to a # subscriber at QoS 0 and QoS 1: the
//     time to deliver them all, the count delivered, the broker's memory;
//   - -idle-conns idle connections: the broker's resident memory per
//     connection, and after they closed;
//   - connect/disconnect churn, uncapped: cycles/s, CONNACK p50/p99.
//
// Every broker is stopped with SIGTERM after each scenario; one that has
// not exited 10 s later is killed and the scenario fails ("exit on SIGTERM"
// row).
//
// Upstream mochi is cmd/mqttbench/upstream, its own module that requires
// the version in third_party/mochi-mqtt-server/patches/UPSTREAM without
// the replace directive; it is built with `go build` at start (from the
// module cache or the proxy) unless -upstream names a binary, and its
// column is skipped, with the reason, when that fails.
//
// Usage:
//
//	mqttbench [-fieldgate ./bin/fieldgate] [-duration 5s] [-scenarios a,b]
//	          [-idle-conns 19000] [-only fieldgate|mosquitto|mochi] [-json FILE]
//	          [-upstream BINARY] [-against-mosquitto] [-cpuprofile FILE]
//
// -against-mosquitto runs a second mosquitto in fieldgate's place: a check
// of the harness itself, whose ratios must all come out near 1.0.
// docs/bench.md explains how to read the table.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mqttbench:", err)
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	fieldgate        string
	mosquitto        string
	againstMosquitto bool
	only             string
	duration         time.Duration
	scenarios        []scenario
	idleConns        int
	jsonPath         string
	cpuProfile       string
	upstream         string
	upstreamSrc      string
	brokerProfile    string
}

// parseFlags reads and checks the command line.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("mqttbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.fieldgate, "fieldgate", "./bin/fieldgate", "fieldgate `binary`, started as `PATH run -config FILE`")
	fs.StringVar(&o.mosquitto, "mosquitto", "/usr/sbin/mosquitto", "mosquitto `binary`")
	fs.BoolVar(&o.againstMosquitto, "against-mosquitto", false, "run a second mosquitto in fieldgate's place (checks the harness: ratios ≈ 1.0)")
	fs.StringVar(&o.only, "only", "", "run only `fieldgate`, `mosquitto` or `mochi` (upstream)")
	fs.StringVar(&o.upstream, "upstream", "", "upstream mochi `binary` (default: built from -upstream-src)")
	fs.StringVar(&o.upstreamSrc, "upstream-src", "cmd/mqttbench/upstream", "`dir` of the upstream mochi main module")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of each timed scenario")
	names := fs.String("scenarios", "", "comma-separated `list` of scenarios (default all: "+strings.Join(scenarioNames(), ",")+")")
	fs.IntVar(&o.idleConns, "idle-conns", 19000, "idle connections in the memory scenario (20,000 needs RLIMIT_NOFILE above 21,000)")
	fs.StringVar(&o.jsonPath, "json", "", "also write the results as JSON to `FILE`")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write the load generator's CPU profile to `FILE` (is the generator the bottleneck?)")
	fs.StringVar(&o.brokerProfile, "fieldgate-cpuprofile", "", "run fieldgate with -cpuprofile `FILE` (one scenario: each one overwrites it)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	// The brokers run in their temp dirs: relative paths would not resolve.
	for _, p := range []*string{&o.fieldgate, &o.upstream} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return o, fmt.Errorf("path %s: %w", *p, err)
		}
		*p = abs
	}
	if o.duration < 500*time.Millisecond || o.duration > 10*time.Minute {
		return o, fmt.Errorf("-duration %s: must be between 500ms and 10m", o.duration)
	}
	if o.idleConns < 1 || o.idleConns > fieldgateMaxConnections-1000 {
		return o, fmt.Errorf("-idle-conns %d: must be between 1 and %d", o.idleConns, fieldgateMaxConnections-1000)
	}
	if o.only != "" && o.only != kindFieldgate && o.only != kindMosquitto && o.only != kindUpstream {
		return o, fmt.Errorf("-only %q: must be fieldgate, mosquitto or mochi", o.only)
	}
	all := scenarios()
	if *names == "" {
		o.scenarios = all
		return o, nil
	}
	for name := range strings.SplitSeq(*names, ",") {
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(all, func(s scenario) bool { return s.name == name })
		if i < 0 {
			return o, fmt.Errorf("-scenarios: unknown scenario %q (known: %s)", name, strings.Join(scenarioNames(), ", "))
		}
		o.scenarios = append(o.scenarios, all[i])
	}
	return o, nil
}

// scenarioNames lists the names -scenarios accepts.
func scenarioNames() []string {
	var names []string
	for _, s := range scenarios() {
		names = append(names, s.name)
	}
	return names
}

// run is the whole benchmark: it starts and stops the brokers itself and
// prints the table on stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("create CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("start CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	// Raised before any broker starts: they inherit it.
	limit, err := raiseFileLimit()
	if err != nil {
		return err
	}
	if need := uint64(o.idleConns) + 1000; limit < need {
		return fmt.Errorf("-idle-conns %d needs about %d open files, RLIMIT_NOFILE allows %d", o.idleConns, need, limit)
	}

	candidate := brokerSpec{label: "fieldgate", kind: kindFieldgate, path: o.fieldgate}
	if o.brokerProfile != "" {
		abs, err := filepath.Abs(o.brokerProfile)
		if err != nil {
			return fmt.Errorf("-fieldgate-cpuprofile: %w", err)
		}
		candidate.extraArgs = []string{"-cpuprofile", abs}
	}
	if o.againstMosquitto {
		candidate = brokerSpec{label: "mosquitto#2", kind: kindMosquitto, path: o.mosquitto}
	}
	upstream := brokerSpec{label: "mochi", kind: kindUpstream, path: o.upstream}
	brokers := []brokerSpec{candidate, {label: "mosquitto", kind: kindMosquitto, path: o.mosquitto}, upstream}
	skip := []bool{o.only != "" && o.only != kindFieldgate, o.only != "" && o.only != kindMosquitto, o.only != "" && o.only != kindUpstream}
	var upstreamErr error
	if !skip[2] {
		var cleanup func()
		brokers[2], cleanup, upstreamErr = prepareUpstream(ctx, upstream, o.upstreamSrc)
		defer cleanup()
		if upstreamErr != nil {
			log.Warn("upstream mochi skipped", "err", upstreamErr)
			skip[2] = true
		}
	}
	for i, b := range brokers {
		if skip[i] {
			continue
		}
		if _, err := os.Stat(b.path); err != nil {
			hint := ""
			if b.kind == kindFieldgate {
				hint = " (build it with `go build -o bin/fieldgate ./cmd/fieldgate`, or use -against-mosquitto or -only mosquitto)"
			}
			return fmt.Errorf("%s binary: %w%s", b.label, err, hint)
		}
	}

	rep := report{machine: readMachineInfo(o.duration), brokers: brokers}
	for i, b := range brokers {
		v := brokerVersion(ctx, b)
		switch {
		case i == 2 && upstreamErr != nil:
			v = "skipped: " + oneLine(upstreamErr.Error())
		case skip[i]:
			v = "skipped"
		}
		rep.versions = append(rep.versions, v)
	}

	ro := runOptions{duration: o.duration, idleConns: o.idleConns, log: log}
	broken := make([]error, len(brokers)) // a broker that would not start is not tried again
	failed := false
	for _, sc := range o.scenarios {
		sr := scenarioResult{sc: sc}
		for i, b := range brokers {
			var c cell
			switch {
			case skip[i] || ctx.Err() != nil:
				c.skipped = true
			case broken[i] != nil:
				c.err = fmt.Errorf("not started: %w", broken[i])
			default:
				c = runScenario(ctx, sc, b, ro, stderr)
				var se *startError
				if errors.As(c.err, &se) && !se.running {
					broken[i] = se
				}
			}
			failed = failed || c.err != nil
			sr.cells = append(sr.cells, c)
		}
		rep.results = append(rep.results, sr)
		if ctx.Err() != nil {
			break
		}
	}

	err = rep.writeMarkdown(stdout)
	if o.jsonPath != "" {
		err = errors.Join(err, rep.writeJSON(o.jsonPath))
	}
	if ctx.Err() != nil {
		return errors.Join(err, fmt.Errorf("interrupted: %w", ctx.Err()))
	}
	if failed {
		err = errors.Join(err, errors.New("some scenarios failed (see the errors under the table)"))
	}
	return err
}

// runScenario starts a fresh broker, runs one scenario on it and stops it.
// A broker's output is printed on stderr when it fails to start or dies.
func runScenario(ctx context.Context, sc scenario, b brokerSpec, o runOptions, stderr io.Writer) cell {
	o.log.Info("scenario", "name", sc.name, "broker", b.label, "duration", o.duration)
	proc, err := startBroker(ctx, b)
	if err != nil {
		printBrokerOutput(stderr, err)
		return cell{err: err}
	}
	cpu0, cpuErr := sampleCPU(proc.pid)
	metrics, runErr := sc.run(ctx, proc, o)
	var others float64
	if cpuErr == nil {
		var cpu1 cpuSample
		if cpu1, cpuErr = sampleCPU(proc.pid); cpuErr == nil {
			others = othersPercent(cpu0, cpu1)
		}
	}
	sigterm, stopErr := proc.stop()
	printBrokerOutput(stderr, stopErr)
	if sigterm.err != nil {
		o.log.Error("broker did not stop cleanly on SIGTERM", "name", sc.name, "broker", b.label, "err", sigterm.err)
		out := sigterm.output
		if len(out) > 4096 {
			out = out[len(out)-4096:]
		}
		fmt.Fprintf(stderr, "--- %s output (tail) ---\n%s\n--- end of %s output ---\n", b.label, strings.TrimSpace(out), b.label)
	}
	if err := errors.Join(runErr, cpuErr, stopErr); err != nil {
		o.log.Error("scenario failed", "name", sc.name, "broker", b.label, "err", err)
		return cell{err: err, sigterm: sigterm}
	}
	if others > quietThreshold {
		o.log.Warn("other processes were busy during the run: numbers are noisy", "name", sc.name, "broker", b.label, "others_cpu_pct", int(others))
	}
	return cell{metrics: metrics, othersCPU: others, sigterm: sigterm}
}

// prepareUpstream returns spec with the path of an upstream mochi binary:
// spec.path if set, else one built from the module in src into a temp dir
// (removed by the returned cleanup). The version is read from src/go.mod.
func prepareUpstream(ctx context.Context, spec brokerSpec, src string) (brokerSpec, func(), error) {
	cleanup := func() {}
	if gomod, err := os.ReadFile(filepath.Join(src, "go.mod")); err == nil {
		for line := range strings.Lines(string(gomod)) {
			if f := strings.Fields(line); len(f) >= 2 && f[len(f)-2] == "github.com/mochi-mqtt/server/v2" {
				spec.version = f[len(f)-1]
			}
		}
	}
	if spec.path != "" {
		return spec, cleanup, nil
	}
	dir, err := os.MkdirTemp("", "mqttbench-upstream-")
	if err != nil {
		return spec, cleanup, fmt.Errorf("build upstream mochi: %w", err)
	}
	cleanup = func() { os.RemoveAll(dir) }
	spec.path = filepath.Join(dir, "mochi-upstream")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", spec.path, ".")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		return spec, cleanup, fmt.Errorf("build upstream mochi in %s: %w: %s", src, err, strings.TrimSpace(string(out)))
	}
	return spec, cleanup, nil
}

// quietThreshold is the CPU use by other processes (percent of one core)
// above which a run is flagged as noisy.
const quietThreshold = 10

// printBrokerOutput prints the captured output of a broker that failed to
// start or died, which usually says why.
func printBrokerOutput(w io.Writer, err error) {
	var se *startError
	if !errors.As(err, &se) {
		return
	}
	fmt.Fprintf(w, "%v\n--- %s output ---\n%s\n--- end of %s output ---\n", se, se.label, strings.TrimSpace(se.output), se.label)
}
