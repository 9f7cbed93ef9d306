package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// stallTimeout bounds how long a publisher waits on a broker that
	// stopped reading or answering, after the end of the window.
	stallTimeout = 5 * time.Second
	// drainQuiet ends the drain once no delivery arrived for this long;
	// drainMax ends it anyway.
	drainQuiet = 300 * time.Millisecond
	drainMax   = 3 * time.Second
	// paceTick is the pause between bursts of a rate-paced publisher.
	paceTick = time.Millisecond
	// burstMax bounds how many messages a publisher writes between two
	// looks at the clock.
	burstMax = 256
	// floodWindow is how many batches (each followed by a PINGREQ) a QoS 0
	// flooding publisher keeps unanswered. It bounds the backlog in socket
	// buffers, which loopback autotuning would otherwise let grow to
	// megabytes per connection: seconds of work for the broker after the
	// window, and "sent" counts that mean little.
	floodWindow = 4
	// maxLatencySamples bounds the memory of one latency recorder (32 MB).
	maxLatencySamples = 4 << 20
)

// pubSpec describes one publisher.
type pubSpec struct {
	clientID string
	topic    string
	qos      byte
	// window is the most QoS 1 publishes left unacknowledged.
	window int
	// rate is in messages/s; 0 publishes as fast as the broker takes them.
	rate float64
	// count, when above 0, ends the load after that many messages.
	count int64
	// retain sets the retain flag; distinct publishes message i on
	// topic/i instead of topic (100,000 retained messages need as many
	// topics).
	retain, distinct bool
	// markEvery, when above 0, records the time of every markEvery-th
	// message written (publisher.marks): the cost per message as a queue
	// grows.
	markEvery int64
}

// subSpec describes one subscriber.
type subSpec struct {
	clientID string
	filter   string
	qos      byte
}

// pubsubSpec is a publish/subscribe load: who publishes what, who listens.
type pubsubSpec struct {
	pubs        []pubSpec
	subs        []subSpec
	payloadSize int
	// fanout is how many deliveries one published message should make.
	fanout int64
	// latency stamps each payload with its send time and records the
	// delivery latency at the subscribers.
	latency bool
	// drainQuiet and drainMax override the defaults of the drain after
	// the window (0: drainQuiet, drainMax): a load whose acknowledged
	// messages must all arrive waits longer.
	drainQuiet, drainMax time.Duration
}

// pubsubResult is what one run of a pubsubSpec measured.
type pubsubResult struct {
	window time.Duration
	// sent counts messages the publishers handed to the kernel by the end
	// of the window.
	sent int64
	// deliveredInWindow counts deliveries during the window, deliveredTotal
	// also those that arrived during the drain after it.
	deliveredInWindow int64
	deliveredTotal    int64
	// latencies of all deliveries, sorted (only with spec.latency).
	latencies []time.Duration
	// brokerCPU and benchCPU are in percent of one core over the window.
	brokerCPU float64
	benchCPU  float64
}

// deliveredRate is deliveries per second during the window.
func (r pubsubResult) deliveredRate() float64 {
	return float64(r.deliveredInWindow) / r.window.Seconds()
}

// lostPercent is the share of expected deliveries that never arrived.
func (r pubsubResult) lostPercent(fanout int64) float64 {
	expected := r.sent * fanout
	if expected == 0 {
		return 0
	}
	lost := expected - r.deliveredTotal
	if lost < 0 {
		lost = 0 // duplicates; clean sessions make none in practice
	}
	return 100 * float64(lost) / float64(expected)
}

// subscriber counts (and optionally times) the messages one client gets.
type subscriber struct {
	c    *mqttConn
	base time.Time // non-zero: payloads carry a send time relative to it
	// prefix, when set, makes only publishes whose topic starts with it
	// count (a subscriber to # also gets the broker's own messages).
	prefix    []byte
	delivered atomic.Int64
	// lastAt is the time of the last counted delivery (UnixNano).
	lastAt    atomic.Int64
	latencies []time.Duration
	stopping  atomic.Bool
	err       error // set by run; read after it returned
}

// run reads and counts messages until the connection closes, acknowledging
// QoS 1 deliveries. PUBACKs are buffered and flushed before any read that
// may block.
func (s *subscriber) run() {
	c := s.c
	c.pr.beforeBlock = func() error {
		if c.w.Buffered() == 0 {
			return nil
		}
		return c.w.Flush()
	}
	for {
		header, body, err := c.pr.next()
		if err != nil {
			if !s.stopping.Load() {
				s.err = fmt.Errorf("subscriber %s: %w", c.id, err)
			}
			return
		}
		if header>>4 != typePublish {
			continue
		}
		if header&0x06 == 0 && s.base.IsZero() && s.prefix == nil { // QoS 0, nothing to look at
			s.delivered.Add(1)
			continue
		}
		p, err := parsePublish(header, body)
		if err != nil {
			s.err = fmt.Errorf("subscriber %s: %w", c.id, err)
			return
		}
		counted := s.prefix == nil || bytes.HasPrefix(p.Topic, s.prefix)
		if p.QoS == 1 {
			c.scratch = appendPuback(c.scratch[:0], p.PacketID)
			if _, err := c.w.Write(c.scratch); err != nil {
				if !s.stopping.Load() {
					s.err = fmt.Errorf("subscriber %s: write PUBACK: %w", c.id, err)
				}
				return
			}
		}
		if !s.base.IsZero() && len(p.Payload) >= 8 && len(s.latencies) < maxLatencySamples {
			sentAt := time.Duration(binary.BigEndian.Uint64(p.Payload))
			s.latencies = append(s.latencies, time.Since(s.base)-sentAt)
		}
		if counted {
			s.delivered.Add(1)
			if s.prefix != nil {
				s.lastAt.Store(time.Now().UnixNano())
			}
		}
	}
}

// publisher sends one publisher's load from one goroutine. It reads the
// broker's PUBACKs and PINGRESPs only when it has to wait for them (its
// window is full, or at the end), so acknowledgements that arrived
// meanwhile come in with one read, and it flushes its buffered publishes
// only before a read that may block.
type publisher struct {
	spec     pubSpec
	c        *mqttConn
	inflight int   // QoS 1 publishes not yet acknowledged
	pings    int   // PINGREQs not yet answered
	sent     int64 // by the end of the window
	// marks are the times the spec.markEvery-th, 2×markEvery-th… message
	// was written.
	marks []time.Time
}

// newPublisher wraps a connected client.
func newPublisher(spec pubSpec, c *mqttConn) *publisher {
	c.pr.beforeBlock = func() error {
		if c.w.Buffered() == 0 {
			return nil
		}
		return c.w.Flush()
	}
	return &publisher{spec: spec, c: c}
}

// awaitAcks reads acknowledgements until at most maxInflight QoS 1
// publishes and maxPings PINGREQs are unanswered.
func (p *publisher) awaitAcks(maxInflight, maxPings int) error {
	for p.inflight > maxInflight || p.pings > maxPings {
		header, _, err := p.c.pr.next()
		if err != nil {
			return fmt.Errorf("publisher %s: read acknowledgements: %w", p.c.id, err)
		}
		switch header >> 4 {
		case typePuback:
			if p.inflight == 0 {
				return fmt.Errorf("publisher %s: PUBACK without a publish in flight", p.c.id)
			}
			p.inflight--
		case typePingresp:
			if p.pings == 0 {
				return fmt.Errorf("publisher %s: PINGRESP without a PINGREQ", p.c.id)
			}
			p.pings--
		}
	}
	return nil
}

// publish sends messages from start until end (or until ctx is done), then
// sends a PINGREQ and waits for its answer: the broker handles one
// connection's packets in order, so every message counted as sent has been
// taken in by the broker when it returns. Every wait on the broker is
// bounded by stallTimeout.
func (p *publisher) publish(ctx context.Context, payloadSize int, base, start, end time.Time) error {
	if err := p.c.conn.SetDeadline(end.Add(stallTimeout)); err != nil {
		return fmt.Errorf("publisher %s: set deadline: %w", p.c.id, err)
	}
	var err error
	if p.spec.qos == 0 && p.spec.rate == 0 && base.IsZero() {
		err = p.flood(ctx, payloadSize, end)
	} else {
		err = p.loop(ctx, payloadSize, base, start, end)
	}
	if err != nil {
		p.c.broken = true
		return err
	}
	if err := p.c.conn.SetDeadline(time.Now().Add(stallTimeout)); err != nil {
		return fmt.Errorf("publisher %s: set deadline: %w", p.c.id, err)
	}
	if err := p.c.writePingreq(); err != nil {
		p.c.broken = true
		return fmt.Errorf("publisher %s: barrier: %w", p.c.id, err)
	}
	p.pings++
	if err := p.awaitAcks(0, 0); err != nil {
		return fmt.Errorf("barrier after the last publish: %w", err)
	}
	return nil
}

// flood writes one pre-encoded batch of identical QoS 0 publishes ending
// in a PINGREQ over and over, with at most floodWindow batches unanswered:
// no encoding and no copying per message, and a bounded backlog.
func (p *publisher) flood(ctx context.Context, payloadSize int, end time.Time) error {
	pkt := appendPublish(nil, p.spec.topic, 0, 0, make([]byte, payloadSize))
	perBatch := max(1, writeBufferSize/len(pkt))
	batch := appendPingreq(bytes.Repeat(pkt, perBatch))
	for ctx.Err() == nil && time.Now().Before(end) {
		if err := p.awaitAcks(0, floodWindow-1); err != nil {
			return err
		}
		n, err := p.c.conn.Write(batch)
		p.sent += int64(min(n/len(pkt), perBatch))
		if err != nil {
			return fmt.Errorf("publisher %s: write: %w", p.c.id, err)
		}
		p.pings++
	}
	return nil
}

// loop encodes each publish into the buffered writer: QoS 1 (with a
// bounded window), and paced or time-stamped loads.
func (p *publisher) loop(ctx context.Context, payloadSize int, base, start, end time.Time) error {
	c := p.c
	payload := make([]byte, payloadSize)
	var packetID uint16
	topic := p.spec.topic
	for {
		now := time.Now()
		if !now.Before(end) || ctx.Err() != nil {
			break
		}
		due := int64(math.MaxInt64)
		if p.spec.rate > 0 {
			due = int64(now.Sub(start).Seconds() * p.spec.rate)
		}
		if p.spec.count > 0 {
			if p.sent >= p.spec.count {
				break
			}
			due = min(due, p.spec.count)
		}
		for n := 0; p.sent < due && n < burstMax; n++ {
			if p.spec.qos > 0 {
				// A slot is refilled as soon as it frees. (Waiting for half
				// the window to free, to write in bigger groups, stalls on
				// mosquitto: its PUBACKs then wait behind Nagle's algorithm
				// for our delayed ACKs.)
				if err := p.awaitAcks(max(p.spec.window, 1)-1, math.MaxInt); err != nil {
					return err
				}
				p.inflight++
				if packetID++; packetID == 0 {
					packetID = 1
				}
			}
			if !base.IsZero() && payloadSize >= 8 {
				binary.BigEndian.PutUint64(payload, uint64(time.Since(base)))
			}
			if p.spec.distinct {
				topic = p.spec.topic + "/" + strconv.FormatInt(p.sent, 10)
			}
			c.scratch = appendPublishRetain(c.scratch[:0], topic, p.spec.qos, p.spec.retain, packetID, payload)
			if _, err := c.w.Write(c.scratch); err != nil {
				return fmt.Errorf("publisher %s: write: %w", c.id, err)
			}
			p.sent++
			if p.spec.markEvery > 0 && p.sent%p.spec.markEvery == 0 {
				p.marks = append(p.marks, time.Now())
			}
		}
		if p.spec.rate > 0 {
			if err := c.w.Flush(); err != nil {
				return fmt.Errorf("publisher %s: write: %w", c.id, err)
			}
			time.Sleep(paceTick)
		}
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("publisher %s: write: %w", c.id, err)
	}
	return nil
}

// runPubSub connects the subscribers and publishers of spec to addr, runs
// the load for d, drains, and measures. pid is the broker's process id (for
// its CPU use).
func runPubSub(ctx context.Context, addr string, pid int, spec pubsubSpec, d time.Duration) (res pubsubResult, err error) {
	var wg sync.WaitGroup
	var subs []*subscriber
	var pubs []*publisher
	// closeAll closes the connections, which ends the subscriber
	// goroutines, and returns what they failed with. The publishing
	// goroutines have ended before it runs.
	stopped := false
	closeAll := func() error {
		if stopped {
			return nil
		}
		stopped = true
		for _, s := range subs {
			s.stopping.Store(true)
			s.c.close()
		}
		for _, p := range pubs {
			p.c.close()
		}
		wg.Wait()
		var errs []error
		for _, s := range subs {
			errs = append(errs, s.err)
		}
		return errors.Join(errs...)
	}
	defer func() { err = errors.Join(err, closeAll()) }()

	base := time.Now()
	for _, ss := range spec.subs {
		c, err := dialMQTT(ctx, addr, ss.clientID)
		if err != nil {
			return res, err
		}
		s := &subscriber{c: c}
		subs = append(subs, s)
		if err := c.subscribe(ss.filter, ss.qos); err != nil {
			return res, err
		}
		if spec.latency {
			s.base = base
			s.latencies = make([]time.Duration, 0, latencyCapacity(spec, d))
		}
		wg.Go(s.run)
	}
	for _, ps := range spec.pubs {
		c, err := dialMQTT(ctx, addr, ps.clientID)
		if err != nil {
			return res, err
		}
		pubs = append(pubs, newPublisher(ps, c))
	}
	if !spec.latency {
		base = time.Time{}
	}

	cpu0, err := readCPUTicks(pid)
	if err != nil {
		return res, err
	}
	self0 := selfCPU()
	start := time.Now()
	end := start.Add(d)
	runCtx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	pubErrs := make([]error, len(pubs))
	var pubWG sync.WaitGroup
	for i, p := range pubs {
		pubWG.Go(func() { pubErrs[i] = p.publish(runCtx, spec.payloadSize, base, start, end) })
	}

	<-runCtx.Done()
	res.window = time.Since(start)
	res.deliveredInWindow = deliveredSum(subs)
	cpu1, cpuErr := readCPUTicks(pid)
	res.brokerCPU = cpuPercent(cpu1-cpu0, res.window)
	res.benchCPU = 100 * (selfCPU() - self0).Seconds() / res.window.Seconds()

	pubWG.Wait()
	for _, p := range pubs {
		res.sent += p.sent
	}
	if err := errors.Join(append(pubErrs, cpuErr, ctx.Err())...); err != nil {
		return res, err
	}
	res.deliveredTotal = drainFor(ctx, subs, res.sent*spec.fanout, cmp.Or(spec.drainQuiet, drainQuiet), cmp.Or(spec.drainMax, drainMax))
	if err := closeAll(); err != nil {
		return res, err
	}
	for _, s := range subs {
		res.latencies = append(res.latencies, s.latencies...)
	}
	sortDurations(res.latencies)
	return res, nil
}

// latencyCapacity is the number of latency samples one subscriber of spec
// is expected to record in d, with some room, within maxLatencySamples.
func latencyCapacity(spec pubsubSpec, d time.Duration) int {
	var rate float64
	for _, p := range spec.pubs {
		rate += p.rate
	}
	return int(min(rate*d.Seconds()*1.2+1024, maxLatencySamples))
}

// deliveredSum adds up the deliveries counted by all subscribers.
func deliveredSum(subs []*subscriber) int64 {
	var n int64
	for _, s := range subs {
		n += s.delivered.Load()
	}
	return n
}

// drainFor waits for late deliveries: until expected is reached, or nothing
// arrived for quiet after a first delivery, or longest passed. It returns
// the deliveries.
func drainFor(ctx context.Context, subs []*subscriber, expected int64, quiet, longest time.Duration) int64 {
	deadline := time.Now().Add(longest)
	last := deliveredSum(subs)
	lastChange := time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for last < expected && time.Now().Before(deadline) && (last == 0 || time.Since(lastChange) < quiet) {
		select {
		case <-ctx.Done():
			return last
		case <-tick.C:
		}
		if n := deliveredSum(subs); n != last {
			last, lastChange = n, time.Now()
		}
	}
	return last
}
