package main

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The backlog scenarios (issue 18): a long offline session queue, and many
// retained messages to a wildcard subscriber. Each phase is bounded in time
// so that a broker that collapses costs a bounded run, not a hang.
const (
	// backlogMessages is the queue length and the retained message count.
	backlogMessages = 100000
	// backlogFillMax bounds the publishing of the backlog.
	backlogFillMax = 60 * time.Second
	// backlogDeliverMax bounds the delivery of the backlog.
	backlogDeliverMax = 60 * time.Second
	// backlogQuiet ends a delivery early once nothing arrived for this long.
	backlogQuiet = 5 * time.Second
	// queueMarkEvery is the spacing of the publisher's time marks.
	queueMarkEvery = 1000
	// sessionSettle is the pause after a persistent subscriber disconnects,
	// for the broker to take the session offline before the load starts.
	sessionSettle = 300 * time.Millisecond
)

// queueResult is what the offline queue scenario measured.
type queueResult struct {
	// acked counts the QoS 1 messages the broker acknowledged to the
	// publisher (all it was sent: the publisher waits for every PUBACK).
	acked    int64
	fillTime time.Duration
	// costAt10k and costAt100k are the time per message while messages
	// 5,001–10,000 and 95,001–100,000 went into the queue (0: not reached).
	costAt10k, costAt100k time.Duration
	// delivered counts the messages the session got on reconnect.
	delivered    int64
	deliverTime  time.Duration
	rssQueuedKiB int64
	// reconnectErr is set when the session could not reconnect (no
	// CONNACK within setupTimeout): nothing was delivered.
	reconnectErr error
}

// runOfflineQueue leaves a persistent QoS 1 session offline, publishes
// backlogMessages QoS 1 messages for it (20 in flight) and reconnects it.
func runOfflineQueue(ctx context.Context, addr string, pid int) (res queueResult, err error) {
	const filter, topic, subID = "bench/queue/#", "bench/queue/1", "queue-sub"
	sub, err := dialSession(ctx, addr, subID, false)
	if err != nil {
		return res, err
	}
	err = sub.subscribe(filter, 1)
	sub.close()
	if err != nil {
		return res, err
	}
	if err := sleepCtx(ctx, sessionSettle); err != nil {
		return res, err
	}

	pc, err := dialMQTT(ctx, addr, "queue-pub")
	if err != nil {
		return res, err
	}
	p := newPublisher(pubSpec{clientID: "queue-pub", topic: topic, qos: 1, window: qos1Window, count: backlogMessages, markEvery: queueMarkEvery}, pc)
	start := time.Now()
	err = p.publish(ctx, payloadSize, time.Time{}, start, start.Add(backlogFillMax))
	res.fillTime = time.Since(start)
	pc.close()
	res.acked = p.sent
	if err != nil {
		return res, fmt.Errorf("fill the queue: %w", err)
	}
	res.costAt10k = markCost(p.marks, 5000, 10000)
	res.costAt100k = markCost(p.marks, 95000, 100000)
	if res.rssQueuedKiB, err = readRSSKiB(pid); err != nil {
		return res, err
	}

	c, err := dialSession(ctx, addr, subID, false)
	if err != nil {
		res.reconnectErr = fmt.Errorf("reconnect the session: %w", err)
		return res, ctx.Err()
	}
	s := &subscriber{c: c}
	done := make(chan struct{})
	go func() { // ends when c is closed below
		defer close(done)
		s.run()
	}()
	start = time.Now()
	res.delivered = drainFor(ctx, []*subscriber{s}, res.acked, backlogQuiet, backlogDeliverMax)
	res.deliverTime = time.Since(start)
	s.stopping.Store(true)
	c.close()
	<-done
	return res, errors.Join(s.err, ctx.Err())
}

// markCost is the time per message between the from-th and the to-th
// message written, from marks taken every queueMarkEvery messages; 0 when
// the publisher did not get that far.
func markCost(marks []time.Time, from, to int) time.Duration {
	i, j := from/queueMarkEvery-1, to/queueMarkEvery-1
	if i < 0 || j >= len(marks) || j <= i {
		return 0
	}
	return marks[j].Sub(marks[i]) / time.Duration(to-from)
}

// retainedResult is what a retained scenario measured.
type retainedResult struct {
	stored int64
	// delivered counts the retained messages the # subscriber got, and
	// deliverTime is from its SUBSCRIBE to the last of them.
	delivered   int64
	deliverTime time.Duration
	rssKiB      int64 // after storing, before the subscriber
	peakKiB     int64 // the broker's peak resident memory (VmHWM)
}

// runRetained publishes backlogMessages retained messages (QoS 1, 20 in
// flight, one topic each), then subscribes to # at qos and counts them.
func runRetained(ctx context.Context, addr string, pid int, qos byte) (res retainedResult, err error) {
	const prefix = "bench/ret"
	pc, err := dialMQTT(ctx, addr, "ret-pub")
	if err != nil {
		return res, err
	}
	p := newPublisher(pubSpec{clientID: "ret-pub", topic: prefix, qos: 1, window: qos1Window, count: backlogMessages, retain: true, distinct: true}, pc)
	start := time.Now()
	err = p.publish(ctx, payloadSize, time.Time{}, start, start.Add(backlogFillMax))
	pc.close()
	res.stored = p.sent
	if err != nil {
		return res, fmt.Errorf("publish the retained messages: %w", err)
	}
	if err := sleepCtx(ctx, idleSettle); err != nil {
		return res, err
	}
	if res.rssKiB, err = readRSSKiB(pid); err != nil {
		return res, err
	}

	c, err := dialMQTT(ctx, addr, "ret-sub")
	if err != nil {
		return res, err
	}
	s := &subscriber{c: c, prefix: []byte(prefix + "/")}
	start = time.Now()
	if err := c.sendSubscribe("#", qos); err != nil {
		c.close()
		return res, err
	}
	done := make(chan struct{})
	go func() { // ends when c is closed below
		defer close(done)
		s.run()
	}()
	res.delivered = drainFor(ctx, []*subscriber{s}, res.stored, backlogQuiet, backlogDeliverMax)
	if last := s.lastAt.Load(); last != 0 {
		res.deliverTime = time.Unix(0, last).Sub(start)
	}
	res.peakKiB, err = readPeakRSSKiB(pid)
	s.stopping.Store(true)
	c.close()
	<-done
	return res, errors.Join(err, s.err, ctx.Err())
}
