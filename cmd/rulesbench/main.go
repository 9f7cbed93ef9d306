// Command rulesbench measures the cost of the edge rules (package rules) on
// this machine and prints a table with the targets beside the numbers:
//
//   - broker throughput with 100 filter rules (each SELECT … WHERE on the
//     same topics, about 1 % of messages passing to a log action) against
//     the broker alone: gateway parts publishing as fast as they can into
//     a fieldgate broker in the same process for -dur, in messages/s, and
//     the loss in percent;
//   - added latency at a steady 10,000 messages/s: publish → a local
//     subscriber, p50/p99, with and without the 100 rules;
//   - one windowed rule (avg/min/max/count per device, 10 s tumbling
//     window) over 10,000 distinct devices: heap per open group and CPU
//     per message;
//   - through the binary (binary.go): the fieldgate process without rules
//     and with one rule that fails on every message, MQTT clients over TCP
//     publishing QoS 1 as fast as it acknowledges, one subscriber counting
//     what it delivers; the ratio of the two.
//
// The publishers use the broker's in-process Publish (what southbound and
// the other parts use), not MQTT clients over TCP: the broker's own cost
// per message is then at its smallest, so the relative loss the rules
// cause is, if anything, overstated.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
	"github.com/fieldgate/fieldgate/rules"
)

var quiet = slog.New(slog.DiscardHandler)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "rulesbench:", err)
		os.Exit(1)
	}
}

func run() error {
	dur := flag.Duration("dur", 3*time.Second, "length of each throughput and latency phase")
	nrules := flag.Int("rules", 100, "filter rules")
	rate := flag.Int("rate", 10_000, "messages/s of the latency phases")
	devices := flag.Int("devices", 10_000, "devices of the window phase")
	binPath := flag.String("bin", "", "fieldgate binary of the binary phase (default: built from ./cmd/fieldgate)")
	publishers := flag.Int("publishers", 4, "MQTT publishers of the binary phase")
	withBinary := flag.Bool("binary", true, "run the binary phase")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the in-process phases to this file")
	only := flag.String("only", "", "run only this phase: rules (100 rules), base, failing (in-process), binary (twice each, -bin needed)")
	flag.StringVar(&binProfileDir, "binprofile", "", "write a CPU profile of each fieldgate run of the binary phase into this directory")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *only == "binary" {
		for _, y := range []string{"", failingRuleYAML, "", failingRuleYAML} {
			res, err := binaryPhase(*binPath, y, *dur, *publishers, *rate)
			if err != nil {
				return err
			}
			fmt.Printf("binary, failing rule %v: saturation acked %.0f, delivered %.0f msg/s, CPU %s per message; at %d msg/s: %.0f acked, CPU %s per message\n",
				y != "", res.acked, res.delivered, res.cpuPerMsg, *rate, res.pacedDelivered, res.pacedCPUPerMsg)
		}
		return nil
	}
	if *only != "" {
		cfg := map[string]rules.Config{"rules": filterRules(*nrules), "base": nil, "failing": failingRule()}[*only]
		res, err := phase(cfg, *dur, *rate)
		if err != nil {
			return err
		}
		fmt.Printf("%s: saturation %.0f msg/s, dropped %d, CPU %s per message; at %d msg/s: delivered %.0f, evaluated %d (dropped %d), p99 %s, CPU %s per message\n",
			*only, res.throughput, res.dropped, perMsg(res.satCPU, res.published), *rate, res.delivered, res.evaluated, res.pacedDropped, res.p99, perMsg(res.pacedCPU, int64(res.paced)))
		return nil
	}

	base, err := phase(nil, *dur, *rate)
	if err != nil {
		return err
	}
	with, err := phase(filterRules(*nrules), *dur, *rate)
	if err != nil {
		return err
	}
	failing, err := phase(failingRule(), *dur, *rate)
	if err != nil {
		return err
	}
	groupBytes, nsPerMsg, err := windowPhase(*devices)
	if err != nil {
		return err
	}
	var binBase, binFail binaryResult
	if *withBinary && *binPath == "" {
		dir, err := os.MkdirTemp("", "rulesbench-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if *binPath, err = buildFieldgate(dir); err != nil {
			return err
		}
	}
	if *withBinary {
		if binBase, err = binaryPhase(*binPath, "", *dur, *publishers, *rate); err != nil {
			return fmt.Errorf("binary phase without rules: %w", err)
		}
		if binFail, err = binaryPhase(*binPath, failingRuleYAML, *dur, *publishers, *rate); err != nil {
			return fmt.Errorf("binary phase with the failing rule: %w", err)
		}
	}
	loss := 100 * (1 - with.throughput/base.throughput)
	pacedLoss := 100 * (1 - with.delivered/base.delivered)
	fmt.Printf("rulesbench: %d cores, GOMAXPROCS %d, %s per phase\n\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), *dur)
	fmt.Printf("%-66s %-30s %s\n", "measure", "value", "target")
	row := func(name, value, target string) { fmt.Printf("%-66s %-30s %s\n", name, value, target) }
	row(fmt.Sprintf("delivered at %d msg/s offered, no rules (msg/s)", *rate), fmt.Sprintf("%.0f", base.delivered), "")
	row(fmt.Sprintf("delivered at %d msg/s offered, %d rules (msg/s)", *rate, *nrules), fmt.Sprintf("%.0f", with.delivered), "")
	row(fmt.Sprintf("throughput loss at %d msg/s", *rate), fmt.Sprintf("%.1f %%", pacedLoss), "≤ 20 %")
	row("saturation throughput, no rules (msg/s)", fmt.Sprintf("%.0f", base.throughput), "")
	row(fmt.Sprintf("saturation throughput, %d filter rules (msg/s)", *nrules), fmt.Sprintf("%.0f", with.throughput), "")
	row("saturation throughput loss (rules share the cores)", fmt.Sprintf("%.1f %%", loss), "")
	row("rule messages dropped (full queues) at saturation", strconv.FormatUint(with.dropped, 10), "counted, never blocking")
	satEval := float64(with.published)*float64(*nrules) - float64(with.dropped)
	row(fmt.Sprintf("saturation, %d rules: rule evaluations per CPU-second", *nrules), fmt.Sprintf("%.0f", satEval/with.satCPU.Seconds()), "")
	row("saturation: CPU per published message, no rules / failing rule", fmt.Sprintf("%s / %s",
		perMsg(base.satCPU, base.published), perMsg(failing.satCPU, failing.published)), "")
	row(fmt.Sprintf("CPU per message at %d msg/s, no rules / %d rules", *rate, *nrules), fmt.Sprintf("%s / %s",
		perMsg(base.pacedCPU, int64(base.paced)), perMsg(with.pacedCPU, int64(with.paced))), "")
	if with.evaluated > 0 {
		row(fmt.Sprintf("CPU per rule evaluation at %d msg/s", *rate),
			perMsg(with.pacedCPU-base.pacedCPU, int64(with.evaluated)).String(), "")
	}
	row(fmt.Sprintf("latency at %d msg/s, no rules, p50/p99", *rate), fmt.Sprintf("%s / %s", base.p50, base.p99), "")
	row(fmt.Sprintf("latency at %d msg/s, %d rules, p50/p99", *rate, *nrules), fmt.Sprintf("%s / %s", with.p50, with.p99), "")
	row("added p99 latency", (with.p99 - base.p99).String(), "≤ 1 ms")
	row("a rule failing on every message: saturation throughput (msg/s)", fmt.Sprintf("%.0f (%.1f %% loss)", failing.throughput, 100*(1-failing.throughput/base.throughput)), "")
	row(fmt.Sprintf("a rule failing on every message: delivered at %d msg/s", *rate), fmt.Sprintf("%.0f, %d failures counted", failing.delivered, failing.failed), "unchanged")
	row(fmt.Sprintf("rule evaluations at %d msg/s (dropped)", *rate), fmt.Sprintf("%d (%d)", with.evaluated, with.pacedDropped), "")
	if *withBinary {
		row(fmt.Sprintf("binary, %d QoS 1 publishers over TCP, no rules: acked / delivered (msg/s)", *publishers),
			fmt.Sprintf("%.0f / %.0f", binBase.acked, binBase.delivered), "")
		row("binary, a rule failing on every message: acked / delivered (msg/s)",
			fmt.Sprintf("%.0f / %.0f", binFail.acked, binFail.delivered), "")
		row("binary, failing rule / no rules (delivered)", fmt.Sprintf("%.2f", binFail.delivered/binBase.delivered), "unchanged (≈ 1)")
		row("binary, CPU per message: no rules / failing rule", fmt.Sprintf("%s / %s (ratio %.2f)", binBase.cpuPerMsg, binFail.cpuPerMsg,
			float64(binFail.cpuPerMsg)/float64(max(binBase.cpuPerMsg, 1))), "")
		row(fmt.Sprintf("binary at %d msg/s offered: acked, no rules / failing rule", *rate), fmt.Sprintf("%.0f / %.0f (ratio %.2f)",
			binBase.pacedDelivered, binFail.pacedDelivered, binFail.pacedDelivered/binBase.pacedDelivered), "unchanged (≈ 1)")
		row(fmt.Sprintf("binary at %d msg/s: CPU per message, no rules / failing rule", *rate), fmt.Sprintf("%s / %s",
			binBase.pacedCPUPerMsg, binFail.pacedCPUPerMsg), "")
	}
	row(fmt.Sprintf("window rule, %d devices: heap per open group", *devices), fmt.Sprintf("%d B", groupBytes), "")
	row("window rule: CPU per message", fmt.Sprintf("%.0f ns", nsPerMsg), "")
	return nil
}

type result struct {
	// satCPU and pacedCPU are the process's CPU time (user + system) during
	// the saturation and the paced parts: unlike rates, they barely move
	// with the other load of a shared machine.
	satCPU, pacedCPU time.Duration
	published        int64 // messages published at saturation
	paced            int   // messages published at the steady rate
	throughput       float64
	delivered        float64
	p50, p99         time.Duration
	dropped          uint64
	evaluated        uint64
	pacedDropped     uint64
	failed           uint64
}

func startBroker() (*mqtt.Broker, func(), error) {
	cfg := mqtt.DefaultConfig()
	cfg.Listeners.TCP.Address = "127.0.0.1:0"
	cfg.Listeners.WebSocket.Enabled = false
	b, err := mqtt.New(cfg, mqtt.Options{Logger: quiet})
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(ctx) }()
	return b, func() { cancel(); <-done }, nil
}

// failingRule is one rule whose evaluation fails on every message.
func failingRule() rules.Config {
	return rules.Config{{ID: "fails", Enabled: true,
		SQL:     `SELECT payload.v * 'x' as v FROM "bench/+/v"`,
		Actions: []rules.Action{{Log: &rules.LogAction{}}}}}
}

func filterRules(n int) rules.Config {
	var cfg rules.Config
	for i := range n {
		cfg = append(cfg, rules.Rule{
			ID: "filter-" + strconv.Itoa(i), Enabled: true,
			SQL:     fmt.Sprintf(`SELECT payload.v as v, topic FROM "bench/+/v" WHERE payload.v > %d AND clientid != 'x'`, 990+i%10),
			Actions: []rules.Action{{Log: &rules.LogAction{}}},
		})
	}
	return cfg
}

// phase measures max throughput, then latency at a steady rate, with the
// rules of cfg running.
func phase(cfg rules.Config, dur time.Duration, rate int) (result, error) {
	b, stop, err := startBroker()
	if err != nil {
		return result{}, err
	}
	defer stop()
	var eng *rules.Engine
	if len(cfg) > 0 {
		eng, err = rules.New(cfg, rules.Options{Bus: b, Logger: quiet, StatsInterval: -1})
		if err != nil {
			return result{}, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = eng.Run(ctx) }()
		defer func() { cancel(); <-done }()
		time.Sleep(200 * time.Millisecond) // let the rules subscribe
	}
	var res result
	var lat []time.Duration
	var latMu sync.Mutex
	measuring := atomic.Bool{}
	unsub, err := b.Subscribe("bench/#", func(m bus.Message) {
		if !measuring.Load() || len(m.Payload) < 30 {
			return
		}
		sent, err := strconv.ParseInt(string(m.Payload[len(m.Payload)-20:len(m.Payload)-1]), 10, 64)
		if err != nil {
			return
		}
		latMu.Lock()
		lat = append(lat, time.Since(time.Unix(0, sent)))
		latMu.Unlock()
	})
	if err != nil {
		return res, err
	}
	defer unsub()
	payload := func(r *rand.Rand) []byte {
		return fmt.Appendf(nil, `{"v":%d,"t":%019d}`, r.IntN(1000), time.Now().UnixNano())
	}
	// max throughput
	ctx := context.Background()
	cpu0 := cpuTime()
	var count atomic.Int64
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			topic := "bench/dev" + strconv.Itoa(w) + "/v"
			for time.Now().Before(deadline) {
				for range 100 {
					if err := b.Publish(ctx, bus.Message{Topic: topic, Payload: payload(r), Origin: "$southbound"}); err == nil {
						count.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	res.satCPU = cpuTime() - cpu0
	res.published = count.Load()
	res.throughput = float64(count.Load()) / dur.Seconds()
	if eng != nil {
		for _, r := range eng.Stats().Rules {
			res.dropped += r.Dropped
		}
		time.Sleep(500 * time.Millisecond) // let the queues drain
	}
	var before rules.Stats
	if eng != nil {
		before = eng.Stats()
	}
	// steady rate
	measuring.Store(true)
	r := rand.New(rand.NewPCG(9, 9))
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	total := int(dur.Seconds() * float64(rate))
	cpu0 = cpuTime()
	for i := range total {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		_ = b.Publish(ctx, bus.Message{Topic: "bench/paced/v", Payload: payload(r), Origin: "$southbound"})
	}
	measuring.Store(false)
	dur = time.Since(start)
	res.paced = total
	if eng != nil {
		time.Sleep(500 * time.Millisecond)
	}
	res.pacedCPU = cpuTime() - cpu0 // with the rules' queues drained
	if eng != nil {
		after := eng.Stats()
		for i, r := range after.Rules {
			res.failed += r.Failed
			res.evaluated += r.Matched - before.Rules[i].Matched
			res.pacedDropped += r.Dropped - before.Rules[i].Dropped
		}
	}
	latMu.Lock()
	res.delivered = float64(len(lat)) / dur.Seconds()
	slices.Sort(lat)
	if len(lat) > 0 {
		res.p50 = lat[len(lat)/2].Round(time.Microsecond)
		res.p99 = lat[len(lat)*99/100].Round(time.Microsecond)
	}
	latMu.Unlock()
	return res, nil
}

// perMsg is d / n, rounded to 10 ns.
func perMsg(d time.Duration, n int64) time.Duration {
	if n <= 0 {
		return 0
	}
	return (d / time.Duration(n)).Round(10 * time.Nanosecond)
}

// cpuTime is the CPU time (user + system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// windowPhase runs one windowed rule over devices distinct devices through
// rules.Bench (no bus): heap per open group, CPU per message.
func windowPhase(devices int) (int64, float64, error) {
	sql := `SELECT topic(2) as device, avg(payload.v) as avg, min(payload.v) as min, max(payload.v) as max, count(*) as n
FROM "dev/+/v" GROUP BY topic(2), TUMBLINGWINDOW(ss, 10)`
	feed, err := rules.NewBench(sql, devices)
	if err != nil {
		return 0, 0, err
	}
	topics := make([]string, devices)
	for i := range topics {
		topics[i] = "dev/d" + strconv.Itoa(i) + "/v"
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	payload := []byte(`{"v":21.5}`)
	start := time.Now()
	const rounds = 5
	for range rounds {
		for _, t := range topics {
			if err := feed(t, payload); err != nil {
				return 0, 0, err
			}
		}
	}
	elapsed := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&m1)
	perGroup := (int64(m1.HeapInuse) - int64(m0.HeapInuse)) / int64(devices)
	runtime.KeepAlive(feed)
	return perGroup, float64(elapsed.Nanoseconds()) / float64(rounds*devices), nil
}
