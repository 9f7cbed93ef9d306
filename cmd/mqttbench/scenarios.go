package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"
)

const (
	// payloadSize is the payload of every benchmark message.
	payloadSize = 64
	// qos1Window is how many QoS 1 publishes a publisher keeps in flight.
	qos1Window = 20
	// latencyRate is the total rate of the fixed-rate scenarios, spread over
	// latencyPublishers.
	latencyRate       = 10000
	latencyPublishers = 4
	// churnTarget is the connect/disconnect cycles per second asked for.
	churnTarget = 2000
)

// metricKind says how a metric is printed and what its ratio means.
type metricKind int

const (
	kindRate    metricKind = iota // per second, higher is better
	kindPercent                   // a share, in percent
	kindMillis                    // a latency, in milliseconds
	kindCPU                       // percent of one core
	kindKiB                       // memory, in KiB
	kindCount                     // a plain count
)

// metric is one measured number of one scenario on one broker.
type metric struct {
	name  string
	kind  metricKind
	value float64
}

// runOptions are the knobs a scenario takes from the command line.
type runOptions struct {
	duration  time.Duration
	idleConns int
	log       *slog.Logger
}

// scenario is one line-up of the benchmark, run against each broker on a
// freshly started process.
type scenario struct {
	// name is what -scenarios selects.
	name string
	// title is the table's first column.
	title string
	run   func(ctx context.Context, b *brokerProc, o runOptions) ([]metric, error)
}

// scenarios returns every scenario, in table order.
func scenarios() []scenario {
	return []scenario{
		{name: "fanin-qos0", title: "QoS 0 fan-in 4→1", run: saturated(fanIn(0))},
		{name: "fanin-qos1", title: "QoS 1 fan-in 4→1, 20 in flight", run: saturated(fanIn(1))},
		{name: "pairs-qos0", title: "QoS 0, 50 pub/sub pairs", run: saturated(pairs(50))},
		{name: "fanout-qos0", title: "QoS 0 fan-out 1→100", run: saturated(fanOut(100))},
		{name: "latency-qos0", title: "QoS 0 at 10,000 msg/s", run: fixedRate(0)},
		{name: "latency-qos1", title: "QoS 1 at 10,000 msg/s", run: fixedRate(1)},
		{name: "idle", title: "idle connections", run: idleConns},
		{name: "churn", title: "connect/disconnect churn", run: churn},
	}
}

// fanIn is 4 publishers on bench/fanin/i, one subscriber on bench/fanin/#.
func fanIn(qos byte) pubsubSpec {
	spec := pubsubSpec{payloadSize: payloadSize, fanout: 1}
	for i := range 4 {
		spec.pubs = append(spec.pubs, pubSpec{clientID: "fanin-pub-" + strconv.Itoa(i), topic: "bench/fanin/" + strconv.Itoa(i), qos: qos, window: qos1Window})
	}
	spec.subs = []subSpec{{clientID: "fanin-sub", filter: "bench/fanin/#", qos: qos}}
	return spec
}

// pairs is n publisher/subscriber pairs, pair i on bench/pair/i.
func pairs(n int) pubsubSpec {
	spec := pubsubSpec{payloadSize: payloadSize, fanout: 1}
	for i := range n {
		topic := "bench/pair/" + strconv.Itoa(i)
		spec.pubs = append(spec.pubs, pubSpec{clientID: "pair-pub-" + strconv.Itoa(i), topic: topic})
		spec.subs = append(spec.subs, subSpec{clientID: "pair-sub-" + strconv.Itoa(i), filter: topic})
	}
	return spec
}

// fanOut is one publisher on bench/fanout and n subscribers to it.
func fanOut(n int) pubsubSpec {
	spec := pubsubSpec{payloadSize: payloadSize, fanout: int64(n)}
	spec.pubs = []pubSpec{{clientID: "fanout-pub", topic: "bench/fanout"}}
	for i := range n {
		spec.subs = append(spec.subs, subSpec{clientID: "fanout-sub-" + strconv.Itoa(i), filter: "bench/fanout"})
	}
	return spec
}

// saturated runs spec as fast as the broker takes it and reports the
// delivery rate and the share lost.
func saturated(spec pubsubSpec) func(context.Context, *brokerProc, runOptions) ([]metric, error) {
	return func(ctx context.Context, b *brokerProc, o runOptions) ([]metric, error) {
		r, err := runPubSub(ctx, b.addr, b.pid, spec, o.duration)
		if err != nil {
			return nil, err
		}
		logPubSub(o.log, b, r, spec)
		return []metric{
			{name: "delivered msg/s", kind: kindRate, value: r.deliveredRate()},
			{name: "lost", kind: kindPercent, value: r.lostPercent(spec.fanout)},
		}, nil
	}
}

// fixedRate publishes 10,000 msg/s (4 × 2,500) on bench/lat/i to one
// subscriber and reports latency and the broker's CPU use.
func fixedRate(qos byte) func(context.Context, *brokerProc, runOptions) ([]metric, error) {
	spec := pubsubSpec{payloadSize: payloadSize, fanout: 1, latency: true}
	for i := range latencyPublishers {
		spec.pubs = append(spec.pubs, pubSpec{
			clientID: "lat-pub-" + strconv.Itoa(i), topic: "bench/lat/" + strconv.Itoa(i),
			qos: qos, window: qos1Window, rate: latencyRate / latencyPublishers,
		})
	}
	spec.subs = []subSpec{{clientID: "lat-sub", filter: "bench/lat/#", qos: qos}}
	return func(ctx context.Context, b *brokerProc, o runOptions) ([]metric, error) {
		r, err := runPubSub(ctx, b.addr, b.pid, spec, o.duration)
		if err != nil {
			return nil, err
		}
		logPubSub(o.log, b, r, spec)
		var maxLatency time.Duration
		if n := len(r.latencies); n > 0 {
			maxLatency = r.latencies[n-1]
		}
		return []metric{
			{name: "delivered msg/s", kind: kindRate, value: r.deliveredRate()},
			{name: "latency p50 (ms)", kind: kindMillis, value: millis(percentile(r.latencies, 50))},
			{name: "latency p99 (ms)", kind: kindMillis, value: millis(percentile(r.latencies, 99))},
			{name: "latency max (ms)", kind: kindMillis, value: millis(maxLatency)},
			{name: "broker CPU (% of one core)", kind: kindCPU, value: r.brokerCPU},
			{name: "lost", kind: kindPercent, value: r.lostPercent(spec.fanout)},
		}, nil
	}
}

// idleConns opens o.idleConns idle connections and reports the broker's
// resident memory per connection.
func idleConns(ctx context.Context, b *brokerProc, o runOptions) ([]metric, error) {
	r, err := runIdle(ctx, b.addr, b.pid, o.idleConns)
	if err != nil {
		return nil, err
	}
	o.log.Info("idle connections open", "broker", b.spec.label, "opened", r.opened, "failed", r.failed,
		"conn_per_s", int(float64(r.opened)/r.openTime.Seconds()), "rss_before_kib", r.rssBeforeKiB, "rss_after_kib", r.rssAfterKiB)
	if r.firstErr != nil {
		o.log.Warn("idle connection failed", "broker", b.spec.label, "failed", r.failed, "first_err", r.firstErr)
	}
	return []metric{
		{name: fmt.Sprintf("resident KiB per connection (%d)", o.idleConns), kind: kindKiB, value: r.perConnKiB()},
		{name: "failed connections", kind: kindCount, value: float64(r.failed)},
	}, nil
}

// churn runs connect/disconnect cycles at 2,000/s and reports the rate
// achieved and the failures.
func churn(ctx context.Context, b *brokerProc, o runOptions) ([]metric, error) {
	r, err := runChurn(ctx, b.addr, o.duration, churnTarget)
	if err != nil {
		return nil, err
	}
	o.log.Info("churn done", "broker", b.spec.label, "cycles", r.cycles, "failed", r.failed, "elapsed", r.elapsed.Round(time.Millisecond))
	if r.firstErr != nil {
		o.log.Warn("churn cycle failed", "broker", b.spec.label, "failed", r.failed, "first_err", r.firstErr)
	}
	return []metric{
		{name: fmt.Sprintf("cycles/s (target %d)", churnTarget), kind: kindRate, value: r.rate()},
		{name: "failed cycles", kind: kindCount, value: float64(r.failed)},
	}, nil
}

// logPubSub logs the raw counts of a publish/subscribe run, with the CPU
// used by the broker and by the load generator.
func logPubSub(log *slog.Logger, b *brokerProc, r pubsubResult, spec pubsubSpec) {
	log.Info("run done", "broker", b.spec.label, "sent", r.sent, "expected", r.sent*spec.fanout,
		"delivered_in_window", r.deliveredInWindow, "delivered_total", r.deliveredTotal,
		"broker_cpu_pct", int(r.brokerCPU), "bench_cpu_pct", int(r.benchCPU))
}

// millis converts a duration into fractional milliseconds.
func millis(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond)
}
