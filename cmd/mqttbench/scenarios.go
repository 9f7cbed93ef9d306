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
	// churnTarget is the connect/disconnect cycles per second asked for: 0
	// runs them back to back (uncapped, issue 18).
	churnTarget = 0
	// faninDrainQuiet and faninDrainMax bound the wait for the last
	// acknowledged QoS 1 messages of the fan-in: a broker that queues them
	// gets time to deliver them before they count as dropped.
	faninDrainQuiet = 2 * time.Second
	faninDrainMax   = 20 * time.Second
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
	kindMicros                    // a cost, in microseconds
	kindSeconds                   // a duration, in seconds
	kindMiB                       // memory, in MiB
	kindRatio                     // a plain ratio
)

// metric is one measured number of one scenario on one broker.
type metric struct {
	name  string
	kind  metricKind
	value float64
	// missing says the value could not be measured (the broker did not
	// get that far); the table shows a dash.
	missing bool
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
	// about says what the numbers mean; printed above the table.
	about string
	run   func(ctx context.Context, b *brokerProc, o runOptions) ([]metric, error)
}

// scenarios returns every scenario, in table order.
func scenarios() []scenario {
	return []scenario{
		{name: "fanin-qos0", title: "QoS 0 fan-in 4→1", run: saturated(fanIn(0)),
			about: "4 publishers flood one subscriber for the window: messages delivered per second, share never delivered."},
		{name: "fanin-qos1", title: "QoS 1 fan-in 4→1, 20 in flight", run: faninQoS1,
			about: "4 QoS 1 publishers (20 unacknowledged each) to one connected QoS 1 subscriber: every publish counted was PUBACKed, so any not delivered is an acknowledged message dropped (must be 0); latency from publish to delivery."},
		{name: "pairs-qos0", title: "QoS 0, 50 pub/sub pairs", run: saturated(pairs(50)),
			about: "50 publisher/subscriber pairs, one topic each: messages delivered per second, share lost."},
		{name: "fanout-qos0", title: "QoS 0 fan-out 1→100", run: saturated(fanOut(100)),
			about: "one publisher, 100 subscribers of its topic: deliveries per second, share lost."},
		{name: "latency-qos0", title: "QoS 0 at 10,000 msg/s", run: fixedRate(0),
			about: "a fixed 10,000 msg/s (4 × 2,500) to one subscriber: publish-to-delivery latency and the broker's CPU."},
		{name: "latency-qos1", title: "QoS 1 at 10,000 msg/s", run: fixedRate(1),
			about: "the same at QoS 1."},
		{name: "queue-100k", title: "offline queue of 100k QoS 1", run: offlineQueue,
			about: "a persistent QoS 1 session goes offline; one publisher sends 100,000 QoS 1 messages for it (20 in flight): publish rate, cost per message while messages 5,001–10,000 and 95,001–100,000 are queued (flat: ratio near 1), then the session reconnects: messages delivered and dropped (acknowledged but never delivered). Each phase is bounded to 60 s."},
		{name: "retained-qos0", title: "100k retained, # at QoS 0", run: retained(0),
			about: "100,000 retained messages on distinct topics, then one subscriber to # at QoS 0: time from SUBSCRIBE to the last retained message, messages delivered, broker memory. Delivery bounded to 60 s (5 s without progress)."},
		{name: "retained-qos1", title: "100k retained, # at QoS 1", run: retained(1),
			about: "the same with a QoS 1 subscriber (it acknowledges each message)."},
		{name: "idle", title: "idle connections", run: idleConns,
			about: "-idle-conns connections that connect and stay silent: the broker's resident memory per connection, and its resident memory 5 s after they all closed."},
		{name: "churn", title: "connect/disconnect churn, uncapped", run: churn,
			about: "8 clients connect (clean session), wait for CONNACK, disconnect and close, back to back: cycles per second and the time from CONNECT to CONNACK."},
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

// faninQoS1 is the QoS 1 fan-in with latency stamps and a long drain: its
// acknowledged messages must all arrive (issue 18).
func faninQoS1(ctx context.Context, b *brokerProc, o runOptions) ([]metric, error) {
	spec := fanIn(1)
	spec.latency = true
	spec.drainQuiet, spec.drainMax = faninDrainQuiet, faninDrainMax
	r, err := runPubSub(ctx, b.addr, b.pid, spec, o.duration)
	if err != nil {
		return nil, err
	}
	logPubSub(o.log, b, r, spec)
	return []metric{
		{name: "delivered msg/s", kind: kindRate, value: r.deliveredRate()},
		{name: "acknowledged, never delivered", kind: kindCount, value: float64(max(0, r.sent-r.deliveredTotal))},
		{name: "latency p50 (ms)", kind: kindMillis, value: millis(percentile(r.latencies, 50))},
		{name: "latency p99 (ms)", kind: kindMillis, value: millis(percentile(r.latencies, 99))},
	}, nil
}

// offlineQueue is the offline session queue of 100,000 QoS 1 messages.
func offlineQueue(ctx context.Context, b *brokerProc, o runOptions) ([]metric, error) {
	r, err := runOfflineQueue(ctx, b.addr, b.pid)
	if err != nil {
		return nil, err
	}
	o.log.Info("queue done", "broker", b.spec.label, "acked", r.acked, "fill", r.fillTime.Round(time.Millisecond),
		"delivered", r.delivered, "deliver", r.deliverTime.Round(time.Millisecond), "rss_queued_kib", r.rssQueuedKiB)
	if r.reconnectErr != nil {
		o.log.Warn("session did not reconnect: delivered and dropped not measured", "broker", b.spec.label, "err", r.reconnectErr)
	}
	flat := metric{name: "cost at 100k / cost at 10k", kind: kindRatio, missing: r.costAt10k == 0 || r.costAt100k == 0}
	if !flat.missing {
		flat.value = float64(r.costAt100k) / float64(r.costAt10k)
	}
	return []metric{
		{name: "publish msg/s while the queue fills", kind: kindRate, value: float64(r.acked) / r.fillTime.Seconds()},
		{name: "µs per message at 10k queued", kind: kindMicros, value: micros(r.costAt10k), missing: r.costAt10k == 0},
		{name: "µs per message at 100k queued", kind: kindMicros, value: micros(r.costAt100k), missing: r.costAt100k == 0},
		flat,
		{name: "acknowledged (of 100,000)", kind: kindCount, value: float64(r.acked)},
		{name: "delivered on reconnect", kind: kindCount, value: float64(r.delivered), missing: r.reconnectErr != nil},
		{name: "dropped (acknowledged, never delivered)", kind: kindCount, value: float64(max(0, r.acked-r.delivered)), missing: r.reconnectErr != nil},
		{name: "broker RSS with the queue full (MiB)", kind: kindMiB, value: float64(r.rssQueuedKiB) / 1024},
	}, nil
}

// retained is 100,000 retained messages delivered to a # subscriber at qos.
func retained(qos byte) func(context.Context, *brokerProc, runOptions) ([]metric, error) {
	return func(ctx context.Context, b *brokerProc, o runOptions) ([]metric, error) {
		r, err := runRetained(ctx, b.addr, b.pid, qos)
		if err != nil {
			return nil, err
		}
		o.log.Info("retained done", "broker", b.spec.label, "qos", qos, "stored", r.stored, "delivered", r.delivered,
			"time", r.deliverTime.Round(time.Millisecond), "rss_kib", r.rssKiB, "peak_kib", r.peakKiB)
		complete := r.stored == backlogMessages && r.delivered >= r.stored
		return []metric{
			{name: "time to deliver all (s)", kind: kindSeconds, value: r.deliverTime.Seconds(), missing: !complete},
			{name: "delivered (of 100,000)", kind: kindCount, value: float64(r.delivered)},
			{name: "broker RSS with 100k retained (MiB)", kind: kindMiB, value: float64(r.rssKiB) / 1024},
			{name: "broker peak RSS (MiB)", kind: kindMiB, value: float64(r.peakKiB) / 1024},
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
		{name: "broker RSS before (MiB)", kind: kindMiB, value: float64(r.rssBeforeKiB) / 1024},
		{name: "broker RSS 5 s after they closed (MiB)", kind: kindMiB, value: float64(r.rssClosedKiB) / 1024},
	}, nil
}

// churn runs connect/disconnect cycles back to back and reports the rate
// achieved, the CONNACK latency and the failures.
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
		{name: "cycles/s", kind: kindRate, value: r.rate()},
		{name: "CONNACK p50 (ms)", kind: kindMillis, value: millis(percentile(r.connack, 50))},
		{name: "CONNACK p99 (ms)", kind: kindMillis, value: millis(percentile(r.connack, 99))},
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

// micros converts a duration into fractional microseconds.
func micros(d time.Duration) float64 {
	return float64(d) / float64(time.Microsecond)
}

// millis converts a duration into fractional milliseconds.
func millis(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond)
}
