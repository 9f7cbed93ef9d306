package mqtt

import (
	"container/heap"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// inject publishes pk into the broker on behalf of origin (a gateway part
// such as "$gateway", or a client id for delayed messages and wills), after
// the taps, exactly like a client's publish would be treated.
func (b *Broker) inject(origin string, pk packets.Packet) error {
	pk.Origin = origin // taps see who published (the uplink never forwards its own downlink)
	if err := b.runTaps(&pk); err != nil {
		return err
	}
	var cl *mochi.Client
	if strings.HasPrefix(origin, "$") {
		cl = b.inlineClient(origin)
	} else {
		cl = b.srv.NewClient(nil, mochi.LocalListener, origin, true)
		cl.Properties.ProtocolVersion = 5
	}
	if pk.FixedHeader.Qos > 0 && pk.PacketID == 0 {
		pk.PacketID = 1
	}
	return b.srv.InjectPacket(cl, pk)
}

// ---- $delayed/{seconds}/{topic} ----

// delayedPrefix starts a delayed publish topic.
const delayedPrefix = "$delayed/"

// maxDelay is EMQX's limit for a delay interval (seconds).
const maxDelay = 4294967

// maxDelayedPending bounds how many delayed messages are kept.
const maxDelayedPending = 100000

// parseDelayed splits $delayed/{seconds}/{topic}. ok is false for anything
// else, a non-numeric or out-of-range interval, or an invalid topic.
func parseDelayed(topic string) (real string, delay time.Duration, ok bool) {
	rest, found := strings.CutPrefix(topic, delayedPrefix)
	if !found {
		return "", 0, false
	}
	secs, real, found := strings.Cut(rest, "/")
	if !found || real == "" || strings.ContainsAny(real, "+#") || strings.HasPrefix(real, "$") {
		return "", 0, false
	}
	n, err := strconv.ParseUint(secs, 10, 32)
	if err != nil || n < 1 || n > maxDelay {
		return "", 0, false
	}
	return real, time.Duration(n) * time.Second, true
}

// delayedQueue holds delayed publishes until they are due, in memory (a
// heap) and in the store (bucket "delayed"), so they survive a restart.
type delayedQueue struct {
	b    *Broker
	mu   sync.Mutex
	h    delayedHeap
	seq  uint64
	wake chan struct{}
}

type delayedItem struct {
	due time.Time
	key []byte
	pk  packets.Packet
}

type delayedHeap []*delayedItem

func (h delayedHeap) Len() int           { return len(h) }
func (h delayedHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h delayedHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *delayedHeap) Push(x any)        { *h = append(*h, x.(*delayedItem)) }
func (h *delayedHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

const delayedBucket = "delayed"

func newDelayedQueue(b *Broker) *delayedQueue {
	return &delayedQueue{b: b, wake: make(chan struct{}, 1)}
}

// storedDelayed is how a delayed message is kept in the store.
type storedDelayed struct {
	Due             int64                  `json:"due"` // unix ms
	Topic           string                 `json:"topic"`
	Payload         []byte                 `json:"payload"`
	QoS             byte                   `json:"qos"`
	Retain          bool                   `json:"retain,omitempty"`
	Origin          string                 `json:"origin"`
	Expiry          uint32                 `json:"expiry,omitempty"`
	ContentType     string                 `json:"content_type,omitempty"`
	ResponseTopic   string                 `json:"response_topic,omitempty"`
	CorrelationData []byte                 `json:"correlation_data,omitempty"`
	User            []packets.UserProperty `json:"user,omitempty"`
}

func (q *delayedQueue) add(pk packets.Packet, delay time.Duration) error {
	due := time.Now().Add(delay)
	q.mu.Lock()
	if q.h.Len() >= maxDelayedPending {
		q.mu.Unlock()
		return fmt.Errorf("%d delayed messages pending: %w", maxDelayedPending, packets.ErrQuotaExceeded)
	}
	q.seq++
	key := make([]byte, 16)
	binary.BigEndian.PutUint64(key, uint64(due.UnixMilli()))
	binary.BigEndian.PutUint64(key[8:], q.seq)
	it := &delayedItem{due: due, key: key, pk: pk}
	heap.Push(&q.h, it)
	q.b.stats.DelayedPending.Store(int64(q.h.Len()))
	q.mu.Unlock()
	if q.b.db != nil {
		v, err := json.Marshal(storedDelayed{
			Due: due.UnixMilli(), Topic: pk.TopicName, Payload: pk.Payload, QoS: pk.FixedHeader.Qos,
			Retain: pk.FixedHeader.Retain, Origin: pk.Origin, Expiry: pk.Properties.MessageExpiryInterval,
			ContentType: pk.Properties.ContentType, ResponseTopic: pk.Properties.ResponseTopic,
			CorrelationData: pk.Properties.CorrelationData, User: pk.Properties.User,
		})
		if err != nil {
			return fmt.Errorf("delayed: encode: %w", err)
		}
		if err := q.b.db.Put(delayedBucket, key, v); err != nil {
			return fmt.Errorf("delayed: store: %w", err)
		}
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return nil
}

// load reads the delayed messages kept in the store.
func (q *delayedQueue) load() error {
	err := q.b.db.ForEach(delayedBucket, func(k, v []byte) error {
		var s storedDelayed
		if err := json.Unmarshal(v, &s); err != nil {
			q.b.log.Error("delayed message unreadable, dropped", "key", fmt.Sprintf("%x", k), "error", err)
			_ = q.b.db.Delete(delayedBucket, append([]byte(nil), k...))
			return nil
		}
		pk := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: s.QoS, Retain: s.Retain},
			TopicName:   s.Topic, Payload: s.Payload, Origin: s.Origin,
		}
		pk.Properties.MessageExpiryInterval = s.Expiry
		pk.Properties.ContentType = s.ContentType
		pk.Properties.ResponseTopic = s.ResponseTopic
		pk.Properties.CorrelationData = s.CorrelationData
		pk.Properties.User = s.User
		q.mu.Lock()
		heap.Push(&q.h, &delayedItem{due: time.UnixMilli(s.Due), key: append([]byte(nil), k...), pk: pk})
		if seq := binary.BigEndian.Uint64(k[8:]); seq > q.seq {
			q.seq = seq
		}
		q.mu.Unlock()
		return nil
	})
	if err != nil {
		return fmt.Errorf("mqtt: load delayed messages: %w", err)
	}
	q.b.stats.DelayedPending.Store(int64(q.h.Len()))
	return nil
}

// run publishes delayed messages when they are due, until ctx is done.
func (q *delayedQueue) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		var due []*delayedItem
		q.mu.Lock()
		for q.h.Len() > 0 && !q.h[0].due.After(now) {
			due = append(due, heap.Pop(&q.h).(*delayedItem))
		}
		next := time.Hour
		if q.h.Len() > 0 {
			next = q.h[0].due.Sub(now)
		}
		q.b.stats.DelayedPending.Store(int64(q.h.Len()))
		q.mu.Unlock()
		for _, it := range due {
			it.pk.Created = 0
			if err := q.b.inject(it.pk.Origin, it.pk); err != nil {
				q.b.log.Warn("delayed publish failed", "topic", it.pk.TopicName, "error", err)
			}
			if q.b.db != nil {
				if err := q.b.db.Delete(delayedBucket, it.key); err != nil {
					q.b.log.Warn("delayed message not removed from store", "topic", it.pk.TopicName, "error", err)
				}
			}
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		case <-timer.C:
		}
	}
}

// ---- wills with a delay ----

// willScheduler publishes delayed wills on time (to the second), unless the
// client comes back first.
type willScheduler struct {
	b       *Broker
	mu      sync.Mutex
	pending map[string]pendingWill
	wake    chan struct{}
}

type pendingWill struct {
	due time.Time
	pk  packets.Packet
}

func newWillScheduler(b *Broker) *willScheduler {
	return &willScheduler{b: b, pending: make(map[string]pendingWill), wake: make(chan struct{}, 1)}
}

func (w *willScheduler) schedule(cl *mochi.Client, will mochi.Will) {
	pk := will.Packet(cl.ID) // with all the will's properties
	w.mu.Lock()
	w.pending[cl.ID] = pendingWill{due: time.Now().Add(time.Duration(will.WillDelayInterval) * time.Second), pk: pk}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *willScheduler) cancel(clientID string) {
	w.mu.Lock()
	delete(w.pending, clientID)
	w.mu.Unlock()
}

func (w *willScheduler) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		next := time.Hour
		var due []pendingWill
		w.mu.Lock()
		for id, p := range w.pending {
			if !p.due.After(now) {
				due = append(due, p)
				delete(w.pending, id)
			} else if d := p.due.Sub(now); d < next {
				next = d
			}
		}
		w.mu.Unlock()
		for _, p := range due {
			if err := w.b.inject(p.pk.Origin, p.pk); err != nil {
				w.b.log.Warn("will publish failed", "client", p.pk.Origin, "topic", p.pk.TopicName, "error", err)
			}
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-timer.C:
		}
	}
}

// ---- auto-subscribe ----

// autoSubscribe subscribes a client that is connecting to the configured
// filters (subscribing twice is harmless). With established, the CONNACK has
// gone out: matching retained messages are sent at QoS 0 and the
// subscriptions are persisted.
func (b *Broker) autoSubscribe(cl *mochi.Client, rt *runtimeConfig, established bool) {
	user := string(cl.Properties.Username)
	var subs packets.Subscriptions
	for _, a := range rt.autoSub {
		if strings.Contains(a.Topic, "%u") && user == "" {
			continue
		}
		f := strings.NewReplacer("%u", user, "%c", cl.ID).Replace(a.Topic)
		if !mochi.IsValidFilter(f, false) {
			continue
		}
		sub := packets.Subscription{Filter: f, Qos: byte(a.QoS)}
		if b.srv.Topics.Subscribe(cl.ID, sub) {
			atomic.AddInt64(&b.srv.Info.Subscriptions, 1)
		}
		cl.State.Subscriptions.Add(f, sub)
		subs = append(subs, sub)
		if !established {
			continue
		}
		for _, r := range b.srv.Topics.Messages(f) {
			if !b.hook.OnDeliveryACLCheck(cl, sub, r.TopicName) {
				continue // the client may not read this topic (counted)
			}
			out := r.Copy(false)
			out.FixedHeader.Qos = 0
			out.PacketID = 0
			_ = cl.WritePacket(out)
		}
	}
	if established && b.persist != nil && len(subs) > 0 {
		codes := make([]byte, len(subs))
		for i, s := range subs {
			codes[i] = s.Qos
		}
		b.persist.OnSubscribed(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, Filters: subs}, codes)
	}
}

// ---- QoS 0 for offline sessions ----

// qos0Queue keeps QoS 0 messages for offline persistent sessions (memory
// only, bounded per session by max_queued messages and max_queued_bytes,
// and counted against the memory budget with the session's other queued
// messages; the oldest is dropped).
type qos0Queue struct {
	mu sync.Mutex
	m  map[string][]packets.Packet
}

func (b *Broker) queueQoS0(pk packets.Packet) {
	if pk.Ignore || strings.HasPrefix(pk.TopicName, "$SYS") {
		return
	}
	subs := b.srv.Topics.Subscribers(pk.TopicName)
	l := b.rt.Load().limits
	limit, maxBytes := l.MaxQueued, l.MaxQueuedBytes
	for id, sub := range subs.Subscriptions {
		if min(sub.Qos, pk.FixedHeader.Qos) != 0 {
			continue
		}
		cl, ok := b.srv.Clients.Get(id)
		if !ok || !cl.Closed() || cl.Net.Inline {
			continue
		}
		out := pk.Copy(false)
		out.FixedHeader.Qos = 0
		out.FixedHeader.Retain = false
		size := queuedSize(&out)
		if maxBytes > 0 && size > maxBytes {
			b.stats.QueuedDropped.Add(1)
			continue
		}
		var full, refused int
		b.qos0.mu.Lock()
		if b.qos0.m == nil {
			b.qos0.m = make(map[string][]packets.Packet)
		}
		q := b.qos0.m[id]
		for len(q) > 0 && ((limit > 0 && len(q) >= limit) || (maxBytes > 0 && b.queues.qos0Bytes(id)+size > maxBytes)) {
			q = b.dropQoS0(id, q)
			full++
		}
		admitted := true
		for !b.queues.reserveQoS0(id, size) {
			if len(q) == 0 {
				admitted = false
				refused++
				break
			}
			q = b.dropQoS0(id, q)
			refused++
		}
		if admitted {
			q = append(q, out)
		}
		if len(q) > 0 {
			b.qos0.m[id] = q
		} else {
			delete(b.qos0.m, id)
		}
		b.qos0.mu.Unlock()
		b.stats.QueuedDropped.Add(int64(full))
		b.stats.QueueBudgetDropped.Add(int64(refused))
		if refused > 0 {
			b.hook.logs.warn("queue-budget:"+id, "memory budget exhausted: queued QoS 0 messages dropped", "client", logClip(id),
				"dropped", refused)
		}
	}
}

// dropQoS0 drops the oldest message of a QoS 0 queue, releasing its bytes
// and its payload. b.qos0.mu held.
func (b *Broker) dropQoS0(id string, q []packets.Packet) []packets.Packet {
	b.queues.releaseQoS0(id, queuedSize(&q[0]))
	q[0] = packets.Packet{} // the backing array must not keep the payload
	return q[1:]
}

func (b *Broker) flushQoS0(cl *mochi.Client) {
	b.qos0.mu.Lock()
	q := b.qos0.m[cl.ID]
	delete(b.qos0.m, cl.ID)
	b.qos0.mu.Unlock()
	var size int64
	for i := range q {
		size += queuedSize(&q[i])
	}
	b.queues.releaseQoS0(cl.ID, size)
	for _, pk := range q {
		_ = cl.WritePacket(pk)
	}
}
