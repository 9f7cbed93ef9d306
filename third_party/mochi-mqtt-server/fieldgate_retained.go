// SPDX-License-Identifier: MIT

package mqtt

import (
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// fieldgate patch (retained memory): a retained message is kept in a compact
// record (topic, payload, header, times, origin, and its properties only if
// it has any) instead of a whole packets.Packet (~800 bytes each, copied out
// of the map on every read); the packet is built when it is delivered.

// retainedMessage is the compact form of a retained PUBLISH. Records are
// immutable once stored: replacing a topic's message stores a new record, so
// a delivery in progress can tell whether the message it holds is still the
// topic's retained message.
type retainedMessage struct {
	topic   string
	payload []byte
	origin  string
	props   *packets.Properties // nil when the packet has no properties
	full    *packets.Packet     // the whole packet, for one with fields the record does not keep
	created int64
	expiry  int64
	fh      packets.FixedHeader
	version byte
}

// newRetainedMessage returns the compact record of pk.
func newRetainedMessage(pk packets.Packet) *retainedMessage {
	m := &retainedMessage{
		topic:   pk.TopicName,
		payload: pk.Payload,
		origin:  pk.Origin,
		created: pk.Created,
		expiry:  pk.Expiry,
		fh:      pk.FixedHeader,
		version: pk.ProtocolVersion,
	}
	if !reflect.ValueOf(pk.Properties).IsZero() {
		props := pk.Properties
		m.props = &props
	}
	rest := pk
	rest.TopicName, rest.Payload, rest.Origin = "", nil, ""
	rest.Created, rest.Expiry = 0, 0
	rest.FixedHeader = packets.FixedHeader{}
	rest.ProtocolVersion = 0
	rest.Properties = packets.Properties{}
	if !reflect.ValueOf(rest).IsZero() {
		full := pk
		return &retainedMessage{topic: pk.TopicName, payload: pk.Payload, full: &full,
			created: pk.Created, expiry: pk.Expiry, fh: pk.FixedHeader, version: pk.ProtocolVersion}
	}
	return m
}

// packet returns the retained PUBLISH the record was made from.
func (m *retainedMessage) packet() packets.Packet {
	if m.full != nil {
		return *m.full
	}
	pk := packets.Packet{
		FixedHeader:     m.fh,
		TopicName:       m.topic,
		Payload:         m.payload,
		Origin:          m.origin,
		Created:         m.created,
		Expiry:          m.expiry,
		ProtocolVersion: m.version,
	}
	if m.props != nil {
		pk.Properties = *m.props
	}
	return pk
}

// expired reports whether the message is past its own expiry (MQTT 5) or
// older than maximumExpiry seconds (when > 0).
func (m *retainedMessage) expired(now, maximumExpiry int64) bool {
	if m.version == 5 && m.expiry > 0 && m.expiry < now { // [MQTT-3.3.2-5]
		return true
	}
	return maximumExpiry > 0 && now-m.created > maximumExpiry
}

// RetainedMessages holds the retained message of each topic, in compact
// form. Its methods take and return whole packets, like packets.Packets
// which it replaces in TopicsIndex. fieldgate patch (retained memory).
type RetainedMessages struct {
	internal map[string]*retainedMessage
	sync.RWMutex
}

// NewRetainedMessages returns an empty set of retained messages.
func NewRetainedMessages() *RetainedMessages {
	return &RetainedMessages{internal: map[string]*retainedMessage{}}
}

// Add stores pk as the retained message of topic.
func (r *RetainedMessages) Add(topic string, pk packets.Packet) {
	m := newRetainedMessage(pk)
	r.Lock()
	defer r.Unlock()
	r.internal[topic] = m
}

// Get returns the retained message of topic.
func (r *RetainedMessages) Get(topic string) (packets.Packet, bool) {
	m := r.lookup(topic)
	if m == nil {
		return packets.Packet{}, false
	}
	return m.packet(), true
}

// GetAll returns a copy of every retained message, keyed on topic. It builds
// a packet per message: the engine itself does not call it.
func (r *RetainedMessages) GetAll() map[string]packets.Packet {
	r.RLock()
	defer r.RUnlock()
	all := make(map[string]packets.Packet, len(r.internal))
	for k, m := range r.internal {
		all[k] = m.packet()
	}
	return all
}

// Len returns the number of retained messages.
func (r *RetainedMessages) Len() int {
	r.RLock()
	defer r.RUnlock()
	return len(r.internal)
}

// Delete removes the retained message of topic.
func (r *RetainedMessages) Delete(topic string) {
	r.Lock()
	defer r.Unlock()
	delete(r.internal, topic)
}

// lookup returns the record of topic, or nil.
func (r *RetainedMessages) lookup(topic string) *retainedMessage {
	r.RLock()
	defer r.RUnlock()
	return r.internal[topic]
}

// retainedRef is a topic and the record it held.
type retainedRef struct {
	topic string
	m     *retainedMessage
}

// expired returns the records that have expired at now, with their topics,
// without copying the others.
func (r *RetainedMessages) expired(now, maximumExpiry int64) []retainedRef {
	r.RLock()
	defer r.RUnlock()
	var out []retainedRef
	for k, m := range r.internal {
		if m.expired(now, maximumExpiry) {
			out = append(out, retainedRef{topic: k, m: m})
		}
	}
	return out
}

// deleteIf removes the retained message of topic if it is still m, and
// reports whether it did.
func (r *RetainedMessages) deleteIf(topic string, m *retainedMessage) bool {
	r.Lock()
	defer r.Unlock()
	if r.internal[topic] != m {
		return false
	}
	delete(r.internal, topic)
	return true
}

// fieldgate patch (retained flow control): the retained messages matching a
// new subscription are delivered as the client takes them. Upstream queued
// them all at once from the subscriber's read loop: QoS 0 messages beyond
// the outbound queue's capacity were dropped, and QoS 1/2 messages were all
// put in flight at once (100,000 of them: packet ids ran out and each further
// message scanned all 65,535 ids, for minutes, with the read loop deaf to
// shutdown). Now the read loop sends what there is room for; the rest is
// sent by a feeder goroutine owned by the client, each message when the
// outbound queue has room and, for QoS 1/2, when the client's send quota
// (receive maximum) allows. The feeder ends with the client's connection.

const (
	// retainedQueueRoom is the most entries of a client's outbound queue
	// that retained deliveries fill; live messages keep the rest.
	retainedQueueRoom = 512
	// retainedDefaultWindow bounds the QoS 1/2 retained messages in flight
	// to a client that announced no receive maximum (MQTT 3).
	retainedDefaultWindow = 1024
	// retainedRetry is how long the feeder waits for a wake-up before it
	// looks for room again.
	retainedRetry = 100 * time.Millisecond
)

// retainedFeed is a client's pending deliveries of retained messages, in
// subscription order.
type retainedFeed struct {
	mu      sync.Mutex
	jobs    []*retainedJob
	running bool          // a feeder goroutine works on jobs
	wake    chan struct{} // capacity 1: room may have been made
}

// retainedJob is the retained messages of one subscription left to send.
type retainedJob struct {
	sub  packets.Subscription
	msgs []*retainedMessage
}

// push queues a job and reports whether a feeder must be started for it.
func (f *retainedFeed) push(j *retainedJob) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jobs = append(f.jobs, j)
	if f.running {
		return false
	}
	f.running = true
	return true
}

// front returns the first job, or nil once there is none; then the feeder
// is no longer running.
func (f *retainedFeed) front() *retainedJob {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.jobs) == 0 {
		f.running = false
		return nil
	}
	return f.jobs[0]
}

// pop removes the first job.
func (f *retainedFeed) pop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jobs[0] = nil
	f.jobs = f.jobs[1:]
	if len(f.jobs) == 0 {
		f.jobs = nil
	}
}

// stop drops every job: the client is gone.
func (f *retainedFeed) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jobs = nil
	f.running = false
}

// idle reports whether no job is pending.
func (f *retainedFeed) idle() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.jobs) == 0 && !f.running
}

// retainedFeed returns the client's feed, made on first use.
func (cl *Client) retainedFeed() *retainedFeed {
	if f := cl.State.retained.Load(); f != nil {
		return f
	}
	cl.State.retained.CompareAndSwap(nil, &retainedFeed{wake: make(chan struct{}, 1)})
	return cl.State.retained.Load()
}

// wakeRetained tells the client's retained feeder, if any, that there may be
// room again: the write loop has drained its queue, or an acknowledgement
// returned send quota. Cheap when there is no feeder.
func (cl *Client) wakeRetained() {
	f := cl.State.retained.Load()
	if f == nil {
		return
	}
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// deliverRetained sends the retained messages msgs for sub to the client:
// what there is room for now, the rest by the client's feeder.
func (s *Server) deliverRetained(cl *Client, sub packets.Subscription, msgs []*retainedMessage) {
	if f := cl.State.retained.Load(); f == nil || f.idle() {
		// Only the read loop queues jobs, so with no job pending the
		// feeder is not running and the order is kept.
		n := s.sendRetained(cl, sub, msgs)
		if n == len(msgs) {
			return
		}
		msgs = msgs[n:]
	}
	f := cl.retainedFeed()
	if f.push(&retainedJob{sub: sub, msgs: msgs}) {
		go s.feedRetained(cl, f)
	}
}

// feedRetained sends the client's pending retained messages as room is
// made, until there are none left or the client is closed.
func (s *Server) feedRetained(cl *Client, f *retainedFeed) {
	timer := time.NewTimer(retainedRetry)
	defer timer.Stop()
	for {
		job := f.front()
		if job == nil {
			return
		}
		for len(job.msgs) > 0 {
			if cl.Closed() {
				f.stop()
				return
			}
			n := s.sendRetained(cl, job.sub, job.msgs)
			job.msgs = job.msgs[n:]
			if len(job.msgs) == 0 {
				break
			}
			timer.Reset(retainedRetry)
			select {
			case <-f.wake:
			case <-timer.C:
			case <-cl.State.open.Done():
				f.stop()
				return
			}
		}
		f.pop()
	}
}

// sendRetained queues retained messages for the client in order while there
// is room for them, and returns how many it has dealt with (sent, or
// skipped: replaced or removed since the subscription, or refused).
func (s *Server) sendRetained(cl *Client, sub packets.Subscription, msgs []*retainedMessage) int {
	for i, m := range msgs {
		if cl.Closed() {
			return len(msgs)
		}
		if !s.retainedRoom(cl, sub, m) {
			return i
		}
		msgs[i] = nil // the job no longer holds it
		// A message replaced since the subscription was made was published
		// to it live; sending the older one now would leave the client with
		// a stale value. A removed one is not sent either.
		if s.Topics.Retained.lookup(m.topic) != m {
			continue
		}
		pk := m.packet()
		if _, err := s.publishToClient(cl, sub, pk); err != nil {
			s.Log.Debug("failed to publish retained message", "error", err, "client", cl.ID, "listener", cl.Net.Listener, "packet", pk)
			continue
		}
		s.hooks.OnRetainPublished(cl, pk)
	}
	return len(msgs)
}

// retainedRoom reports whether the client can take retained message m for
// sub now: its outbound queue is below retainedQueueRoom (and half its
// capacity) and, at QoS 1/2, nothing waits for send quota and the quota (or,
// without a receive maximum, retainedDefaultWindow) allows one more.
func (s *Server) retainedRoom(cl *Client, sub packets.Subscription, m *retainedMessage) bool {
	room := min(cl.State.outbound.Cap()/2, retainedQueueRoom)
	if room < 1 {
		room = 1
	}
	if cl.State.outbound.Len() >= room {
		return false
	}
	qos := min(m.fh.Qos, sub.Qos, s.Options.Capabilities.MaximumQos)
	if qos == 0 {
		return true
	}
	in := cl.State.Inflight
	if in.Waiting() > 0 || in.Len() >= int(s.Options.Capabilities.MaximumInflight) {
		return false
	}
	if atomic.LoadInt32(&in.maximumSendQuota) > 0 {
		return atomic.LoadInt32(&in.sendQuota) > 0
	}
	return in.Len() < retainedDefaultWindow
}
