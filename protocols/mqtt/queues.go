package mqtt

// Session queues, bounded by bytes. The engine keeps every QoS 1/2 message
// for a session (queued while it is offline, waiting for send quota, or in
// flight) in the session's Inflight map, in memory. max_queued bounded them
// in messages only: 200 queued 1 MB messages held 200 MB (and, restored at
// start, four to five times that). sessionQueues accounts for the bytes of
// every message held for a session:
//
//   - per session, bounded by limits.max_queued_bytes (and, as before, by
//     max_inflight + max_queued messages): beyond either, the oldest message
//     is dropped and counted (Stats.QueuedDropped), as max_queued always did;
//   - all sessions together against the gateway's memory budget (account
//     "mqtt_queues", on /metrics): when the budget refuses a new message,
//     the session's oldest messages are dropped until it fits, or the new
//     one when nothing older is left (Stats.QueueBudgetDropped);
//   - the QoS 0 queue of offline sessions (queue_qos0) the same way.
//
// A message counts its payload, topic and property bytes plus
// queuedOverhead for the engine's bookkeeping. The hook runs after the
// persistence hook, so that a message it drops is also deleted from the
// store (a delete enqueued after the put wins). Persisted queues are
// restored at start session by session, newest first, under the same
// limits (persist.go, restoreInflight): the memory they take is bounded by
// the budget, not by what the file holds.

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fieldgate/fieldgate/internal/membudget"
)

// queuedOverhead is what the engine spends on one held message besides its
// bytes: the packet struct (800 bytes on 64-bit) and its map entry.
const queuedOverhead = 1024

// queueReconcileEvery spaces the recounts from the engine's state that run
// when the budget refuses (see reconcile).
const queueReconcileEvery = time.Second

// queuedSize is what one held message counts against the limits.
func queuedSize(pk *packets.Packet) int64 {
	n := len(pk.Payload) + len(pk.TopicName) + len(pk.Properties.ResponseTopic) +
		len(pk.Properties.CorrelationData) + len(pk.Properties.ContentType)
	for _, u := range pk.Properties.User {
		n += len(u.Key) + len(u.Val)
	}
	return int64(n) + queuedOverhead
}

// sessionQueues is the accounting of the messages held for each session.
// It is also the engine hook that sees them come and go.
type sessionQueues struct {
	mochi.HookBase
	b    *Broker
	acct *membudget.Account
	// share bounds what all session queues together may hold: half of the
	// budget (0: unlimited), so that queues can never starve the packet
	// reads and per-peer state that share the budget (a full budget would
	// refuse every publish, and with it the messages that drain queues).
	share int64

	mu         sync.Mutex
	m          map[string]*sessionQueue // by client id
	reconciled time.Time
}

// sessionQueue is one session's held messages, in queue order.
type sessionQueue struct {
	bytes int64                // QoS 1/2 messages held
	ids   map[uint16]queuedRef // packet id → the message now under it
	order []queuedRef          // queue order; stale refs (gone, or id reused) are skipped
	head  int
	gen   uint64
	qos0  int64 // bytes of the QoS 0 queue (extensions.go)
}

// queuedRef is one held message: its packet id, a generation that tells it
// from a later message under the same id, and its counted size.
type queuedRef struct {
	id   uint16
	gen  uint64
	size int64
}

func newSessionQueues(b *Broker, budget *membudget.Budget) *sessionQueues {
	return &sessionQueues{b: b, acct: budget.Account("mqtt_queues"), share: budget.Limit() / 2, m: make(map[string]*sessionQueue)}
}

// reserve takes n bytes from the budget within the queues' share.
func (q *sessionQueues) reserve(n int64) bool {
	if q.share > 0 && q.acct.Used()+n > q.share {
		return false
	}
	return q.acct.Reserve(n)
}

// ID identifies the hook to the engine.
func (q *sessionQueues) ID() string { return "fieldgate-queues" }

// Provides lists the engine events the hook handles.
func (q *sessionQueues) Provides(b byte) bool {
	switch b {
	case mochi.OnQosPublish, mochi.OnQosComplete, mochi.OnQosDropped, mochi.OnClientExpired:
		return true
	}
	return false
}

// Init accepts no configuration.
func (q *sessionQueues) Init(config any) error {
	if config != nil {
		return mochi.ErrInvalidConfigType
	}
	return nil
}

// session returns the queue of id, created on first use. q.mu held.
func (q *sessionQueues) session(id string) *sessionQueue {
	sq := q.m[id]
	if sq == nil {
		sq = &sessionQueue{ids: make(map[uint16]queuedRef)}
		q.m[id] = sq
	}
	return sq
}

// add records a message under id at the end of the queue. q.mu held.
func (sq *sessionQueue) add(id uint16, size int64) {
	sq.gen++
	r := queuedRef{id: id, gen: sq.gen, size: size}
	sq.ids[id] = r
	sq.order = append(sq.order, r)
	sq.bytes += size
}

// remove forgets the message under id, returning its size (0: none).
// q.mu held.
func (sq *sessionQueue) remove(id uint16) int64 {
	r, ok := sq.ids[id]
	if !ok {
		return 0
	}
	delete(sq.ids, id)
	sq.bytes -= r.size
	return r.size
}

// oldest returns the oldest held message other than except, dropping stale
// refs from the head of the queue. q.mu held.
func (sq *sessionQueue) oldest(except uint16) (queuedRef, bool) {
	for sq.head < len(sq.order) {
		r := sq.order[sq.head]
		if cur, ok := sq.ids[r.id]; ok && cur.gen == r.gen {
			break
		}
		sq.head++
	}
	if sq.head > 1024 && sq.head > len(sq.order)/2 {
		sq.order = append(sq.order[:0:0], sq.order[sq.head:]...)
		sq.head = 0
	}
	for i := sq.head; i < len(sq.order); i++ {
		r := sq.order[i]
		if cur, ok := sq.ids[r.id]; ok && cur.gen == r.gen && r.id != except {
			return r, true
		}
	}
	return queuedRef{}, false
}

// empty tells whether the session holds nothing any more. q.mu held.
func (sq *sessionQueue) empty() bool { return len(sq.ids) == 0 && sq.qos0 == 0 }

// release forgets the message under id of session cid and gives its bytes
// back to the budget.
func (q *sessionQueues) release(cid string, id uint16) {
	q.mu.Lock()
	sq := q.m[cid]
	var size int64
	if sq != nil {
		size = sq.remove(id)
		if sq.empty() {
			delete(q.m, cid)
		}
	}
	q.mu.Unlock()
	q.acct.Release(size)
}

// OnQosPublish accounts for a QoS 1/2 message now held for cl and applies
// the limits: over max_inflight + max_queued messages or max_queued_bytes,
// or refused by the memory budget, the session's oldest messages are
// dropped (the new one last). A message already counted (a resend after a
// reconnect) changes nothing.
func (q *sessionQueues) OnQosPublish(cl *mochi.Client, pk packets.Packet, sent int64, resends int) {
	if resends != 0 || pk.FixedHeader.Type != packets.Publish || cl.Net.Inline {
		return
	}
	l := q.b.rt.Load().limits
	maxCount, maxBytes := l.MaxInflight+l.MaxQueued, l.MaxQueuedBytes
	size := queuedSize(&pk)

	var overLimit, overBudget []queuedRef
	dropNew := false
	q.mu.Lock()
	sq := q.session(cl.ID)
	if r, ok := sq.ids[pk.PacketID]; ok && r.size == size {
		q.mu.Unlock()
		return
	}
	q.acct.Release(sq.remove(pk.PacketID)) // a stale entry under a reused id (missed event)
	// The budget first: drop this session's oldest until the new one fits.
	reconciled := false
	for !q.reserve(size) {
		if !reconciled && time.Since(q.reconciled) >= queueReconcileEvery {
			reconciled = true
			q.reconcileLocked(cl.ID, pk.PacketID)
			sq = q.session(cl.ID)
			continue
		}
		r, ok := sq.oldest(pk.PacketID)
		if !ok {
			dropNew = true
			break
		}
		sq.remove(r.id)
		q.acct.Release(r.size)
		overBudget = append(overBudget, r)
	}
	if !dropNew {
		sq.add(pk.PacketID, size)
		for (maxBytes > 0 && sq.bytes > maxBytes) || len(sq.ids) > maxCount {
			r, ok := sq.oldest(pk.PacketID)
			if !ok {
				break
			}
			sq.remove(r.id)
			q.acct.Release(r.size)
			overLimit = append(overLimit, r)
		}
		if maxBytes > 0 && sq.bytes > maxBytes {
			// The new message alone is over the limit.
			sq.remove(pk.PacketID)
			q.acct.Release(size)
			overLimit = append(overLimit, queuedRef{id: pk.PacketID, size: size})
		}
	}
	if sq.empty() {
		delete(q.m, cl.ID)
	}
	q.mu.Unlock()

	if dropNew {
		overBudget = append(overBudget, queuedRef{id: pk.PacketID, size: size})
	}
	if n := q.drop(cl, overLimit, "queue_full"); n > 0 {
		q.b.stats.QueuedDropped.Add(int64(n))
		q.b.hook.logs.warn("queue:"+cl.ID, "session queue full: oldest messages dropped", "client", logClip(cl.ID),
			"dropped", n, "max_queued", l.MaxQueued, "max_queued_bytes", maxBytes)
	}
	if n := q.drop(cl, overBudget, "memory_budget"); n > 0 {
		q.b.stats.QueueBudgetDropped.Add(int64(n))
		q.b.hook.logs.warn("queue-budget:"+cl.ID, "memory budget exhausted: session messages dropped", "client", logClip(cl.ID),
			"dropped", n, "queued_bytes_total", q.acct.Used())
	}
}

// drop removes messages from cl's inflight state and from the store,
// returning how many were still there (an acknowledgement may have come
// first). Each is a message_dropped event with reason.
func (q *sessionQueues) drop(cl *mochi.Client, refs []queuedRef, reason string) int {
	n := 0
	for _, r := range refs {
		pk, ok := cl.State.Inflight.Get(r.id)
		if !ok || pk.FixedHeader.Type != packets.Publish || !cl.State.Inflight.Delete(r.id) {
			continue
		}
		atomic.AddInt64(&q.b.srv.Info.Inflight, -1)
		if q.b.persist != nil {
			q.b.persist.OnQosDropped(cl, pk)
		}
		q.b.eventDropped(cl, &pk, reason)
		n++
	}
	return n
}

// OnQosComplete releases a message the client acknowledged. A PUBREL
// completes an inbound QoS 2 flow (the client's packet ids): not held here.
func (q *sessionQueues) OnQosComplete(cl *mochi.Client, pk packets.Packet) {
	if pk.FixedHeader.Type != packets.Pubrel {
		q.release(cl.ID, pk.PacketID)
	}
}

// OnQosDropped releases a message the engine gave up. The drops of an old
// connection whose session a new one inherited are not releases: the
// messages live on in the new connection.
func (q *sessionQueues) OnQosDropped(cl *mochi.Client, pk packets.Packet) {
	if cl.IsTakenOver() || pk.FixedHeader.Type == packets.Pubrec {
		return
	}
	q.release(cl.ID, pk.PacketID)
}

// OnClientExpired releases everything an expired session held (the engine
// deletes it without dropping its messages one by one).
func (q *sessionQueues) OnClientExpired(cl *mochi.Client) {
	q.forgetSession(cl.ID)
	q.b.qos0.mu.Lock()
	delete(q.b.qos0.m, cl.ID)
	q.b.qos0.mu.Unlock()
}

// forgetSession releases every byte counted for session cid.
func (q *sessionQueues) forgetSession(cid string) {
	q.mu.Lock()
	var size int64
	if sq := q.m[cid]; sq != nil {
		size = sq.bytes + sq.qos0
		delete(q.m, cid)
	}
	q.mu.Unlock()
	q.acct.Release(size)
}

// reconcileLocked recounts every session from the engine's state, so that
// an event the hook missed can never leave the budget short for good. It
// runs at most once a second, when the budget refuses, and leaves out the
// message being added (skipCID, skipID), which the caller accounts for.
// q.mu held.
func (q *sessionQueues) reconcileLocked(skipCID string, skipID uint16) {
	q.reconciled = time.Now()
	var before, after int64
	next := make(map[string]*sessionQueue, len(q.m))
	for id, sq := range q.m {
		before += sq.bytes
		if sq.qos0 > 0 {
			next[id] = &sessionQueue{ids: make(map[uint16]queuedRef), qos0: sq.qos0}
		}
	}
	for id, cl := range q.b.srv.Clients.GetAll() {
		if cl.Net.Inline {
			continue
		}
		for _, pk := range cl.State.Inflight.GetAll(false) {
			if pk.FixedHeader.Type != packets.Publish || (id == skipCID && pk.PacketID == skipID) {
				continue
			}
			sq := next[id]
			if sq == nil {
				sq = &sessionQueue{ids: make(map[uint16]queuedRef)}
				next[id] = sq
			}
			size := queuedSize(&pk)
			sq.add(pk.PacketID, size)
			after += size
		}
	}
	q.m = next
	switch {
	case after < before:
		q.acct.Release(before - after)
	case after > before:
		q.acct.Reserve(after - before) // best effort: the memory is held anyway
	}
	if after != before {
		q.b.log.Warn("session queue accounting recounted", "counted_bytes", before, "held_bytes", after)
	}
}

// ---- the QoS 0 queue of offline sessions ----

// reserveQoS0 counts a QoS 0 message queued for offline session cid, or
// returns false when the budget refuses it.
func (q *sessionQueues) reserveQoS0(cid string, size int64) bool {
	if !q.reserve(size) {
		return false
	}
	q.mu.Lock()
	q.session(cid).qos0 += size
	q.mu.Unlock()
	return true
}

// releaseQoS0 gives back the bytes of QoS 0 messages of cid delivered or
// dropped.
func (q *sessionQueues) releaseQoS0(cid string, size int64) {
	q.mu.Lock()
	if sq := q.m[cid]; sq != nil {
		size = min(size, sq.qos0)
		sq.qos0 -= size
		if sq.empty() {
			delete(q.m, cid)
		}
	} else {
		size = 0
	}
	q.mu.Unlock()
	q.acct.Release(size)
}

// qos0Bytes is what the QoS 0 queue of cid holds.
func (q *sessionQueues) qos0Bytes(cid string) int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if sq := q.m[cid]; sq != nil {
		return sq.qos0
	}
	return 0
}

// ---- restoring persisted queues ----

// restoreSession admits one session's persisted messages at start, newest
// first: each is asked for with admit (its size), which says whether it
// still fits the session's limits and the budget (its bytes are then
// reserved); the caller stops at the first refusal (everything older is
// dropped), then hands the kept messages, oldest first, to adopt.
type restoreSession struct {
	q        *sessionQueues
	n        int
	bytes    int64
	maxN     int
	maxBytes int64
	refusal  string // what refused the first message not admitted
}

func (q *sessionQueues) newRestoreSession() *restoreSession {
	l := q.b.rt.Load().limits
	return &restoreSession{q: q, maxN: l.MaxInflight + l.MaxQueued, maxBytes: l.MaxQueuedBytes}
}

// admit reserves size for one more message, or says why it does not fit.
func (r *restoreSession) admit(size int64) bool {
	switch {
	case r.n+1 > r.maxN:
		r.refusal = "max_queued"
	case r.maxBytes > 0 && r.bytes+size > r.maxBytes:
		r.refusal = "max_queued_bytes"
	case !r.q.reserve(size):
		r.refusal = "memory_budget"
	default:
		r.n++
		r.bytes += size
		return true
	}
	return false
}

// adopt puts the admitted messages (oldest first) in cl's inflight state and
// records them in the session's queue, their bytes being reserved already.
func (q *sessionQueues) adopt(cl *mochi.Client, pks []packets.Packet) {
	q.mu.Lock()
	sq := q.session(cl.ID)
	for i := range pks {
		sq.add(pks[i].PacketID, queuedSize(&pks[i]))
	}
	q.mu.Unlock()
	for _, pk := range pks {
		cl.State.Inflight.Set(pk)
	}
}

// logRestoreDrops reports the persisted messages of a session not restored.
func (q *sessionQueues) logRestoreDrops(cid string, dropped int, why string) {
	q.b.stats.QueuedRestoreDropped.Add(int64(dropped))
	q.b.log.Warn("persisted session queue over the limits: oldest messages not restored",
		"client", logClip(cid), "dropped", dropped, "limit", why, "queued_bytes_total", strconv.FormatInt(q.acct.Used(), 10))
}
