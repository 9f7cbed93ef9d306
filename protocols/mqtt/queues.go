package mqtt

// Session queues, bounded by bytes. The engine keeps every QoS 1/2 message
// for a session (queued while it is offline, waiting for send quota, or in
// flight) in the session's Inflight map, in memory. max_queued bounded them
// in messages only: 200 queued 1 MB messages held 200 MB (and, restored at
// start, four to five times that). sessionQueues accounts for the bytes of
// every message held for a session:
//
//   - per session, bounded by limits.max_queued_bytes (and, as before, by
//     max_inflight + max_queued messages): beyond either, a publisher to a
//     connected session waits for room (flow control, waitRoom), and for an
//     offline one the oldest message (or the newest: limits.queue_drop) is
//     dropped and counted (Stats.QueuedDropped);
//   - all sessions together against the gateway's memory budget (account
//     "mqtt_queues", on /metrics): when the budget refuses a new message,
//     the session's oldest messages are dropped until it fits, or the new
//     one when nothing older is left (Stats.QueueBudgetDropped);
//   - the QoS 0 queue of offline sessions (queue_qos0) the same way.
//
// Messages are known by the engine's queue sequence (Packet.QueueSeq): a
// queued message has no packet id until it is sent.
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
//
// Messages are known by the engine's queue sequence (packets.Packet
// QueueSeq), not by packet id: a queued message takes its packet id only
// when it is sent. Every operation is O(1) (amortised): add appends, remove
// forgets, oldest skips the refs already removed at the head.
type sessionQueue struct {
	bytes int64                // QoS 1/2 messages held
	seqs  map[uint64]queuedRef // queue sequence → the message
	order []queuedRef          // queue order; removed refs are skipped
	head  int
	qos0  int64 // bytes of the QoS 0 queue (extensions.go)
	// drained, when not nil, is closed when a message leaves the queue:
	// publishers waiting for room (waitRoom) wake up.
	drained chan struct{}
}

// queuedRef is one held message: its queue sequence and counted size.
type queuedRef struct {
	seq  uint64
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
		sq = &sessionQueue{seqs: make(map[uint64]queuedRef)}
		q.m[id] = sq
	}
	return sq
}

// add records message seq at the end of the queue. q.mu held.
func (sq *sessionQueue) add(seq uint64, size int64) {
	r := queuedRef{seq: seq, size: size}
	sq.seqs[seq] = r
	sq.order = append(sq.order, r)
	sq.bytes += size
}

// remove forgets message seq, returning its size (0: none), and wakes the
// publishers waiting for room. q.mu held.
func (sq *sessionQueue) remove(seq uint64) int64 {
	r, ok := sq.seqs[seq]
	if !ok {
		return 0
	}
	delete(sq.seqs, seq)
	sq.bytes -= r.size
	if sq.drained != nil {
		close(sq.drained)
		sq.drained = nil
	}
	sq.trim()
	return r.size
}

// trim drops the removed refs at the head of the order and compacts it,
// so that it does not grow while messages are acknowledged. q.mu held.
func (sq *sessionQueue) trim() {
	for sq.head < len(sq.order) {
		if _, ok := sq.seqs[sq.order[sq.head].seq]; ok {
			break
		}
		sq.head++
	}
	switch {
	case sq.head == len(sq.order):
		sq.order = sq.order[:0]
		sq.head = 0
	case sq.head > 1024 && sq.head > len(sq.order)/2:
		sq.order = append(sq.order[:0:0], sq.order[sq.head:]...)
		sq.head = 0
	}
}

// oldest returns the oldest held message other than except, dropping the
// removed refs from the head of the queue: O(1) amortised (a ref is skipped
// once; except, the message being added, is the newest, so at most one
// live ref is passed over). q.mu held.
func (sq *sessionQueue) oldest(except uint64) (queuedRef, bool) {
	sq.trim()
	for i := sq.head; i < len(sq.order); i++ {
		r := sq.order[i]
		if _, ok := sq.seqs[r.seq]; ok && r.seq != except {
			return r, true
		}
	}
	return queuedRef{}, false
}

// count is the number of QoS 1/2 messages held. q.mu held.
func (sq *sessionQueue) count() int { return len(sq.seqs) }

// empty tells whether the session holds nothing any more. q.mu held.
func (sq *sessionQueue) empty() bool { return len(sq.seqs) == 0 && sq.qos0 == 0 && sq.drained == nil }

// release forgets message seq of session cid and gives its bytes back to
// the budget.
func (q *sessionQueues) release(cid string, seq uint64) {
	q.mu.Lock()
	sq := q.m[cid]
	var size int64
	if sq != nil {
		size = sq.remove(seq)
		if sq.empty() {
			delete(q.m, cid)
		}
	}
	q.mu.Unlock()
	q.acct.Release(size)
}

// OnQosPublish accounts for a QoS 1/2 message now held for cl and applies
// the limits. Refused by the memory budget, the session's oldest messages
// are dropped (the new one last). Over max_inflight + max_queued messages
// or max_queued_bytes:
//
//   - while cl is connected, the publishing goroutine waits for the
//     subscriber to take messages (flow control: the publisher's reader
//     stops, so its PUBACKs and its next publishes wait); it waits as long
//     as the subscriber makes progress, and at most queueStallTimeout
//     without any (see waitRoom);
//   - then, or when cl is offline, messages are dropped by the configured
//     policy (limits.queue_drop: the oldest held, or the new one), counted
//     in Stats.QueuedDropped and reported as message_dropped events.
//
// A message already counted (a resend after a reconnect, or the same
// message reported again when it is given its packet id) changes nothing.
// Every step is O(1) in the queue length.
func (q *sessionQueues) OnQosPublish(cl *mochi.Client, pk packets.Packet, sent int64, resends int) {
	if resends != 0 || pk.FixedHeader.Type != packets.Publish || cl.Net.Inline || pk.QueueSeq == 0 || pk.PacketID != 0 {
		return
	}
	l := q.b.rt.Load().limits
	maxCount, maxBytes := l.MaxInflight+l.MaxQueued, l.MaxQueuedBytes
	dropNewest := l.QueueDrop == QueueDropNewest
	size := queuedSize(&pk)
	seq := pk.QueueSeq

	var overLimit, overBudget []queuedRef
	dropNew := false
	q.mu.Lock()
	sq := q.session(cl.ID)
	if _, ok := sq.seqs[seq]; ok {
		q.mu.Unlock()
		return
	}
	// The budget first: drop this session's oldest until the new one fits.
	reconciled := false
	for !q.reserve(size) {
		if !reconciled && time.Since(q.reconciled) >= queueReconcileEvery {
			reconciled = true
			q.reconcileLocked(cl.ID, seq)
			sq = q.session(cl.ID)
			continue
		}
		r, ok := sq.oldest(seq)
		if !ok {
			dropNew = true
			break
		}
		sq.remove(r.seq)
		q.acct.Release(r.size)
		overBudget = append(overBudget, r)
	}
	if !dropNew {
		sq.add(seq, size)
		over := func() bool { return (maxBytes > 0 && sq.bytes > maxBytes) || sq.count() > maxCount }
		if over() && q.mayWait(cl, &pk) {
			q.mu.Unlock()
			room := q.waitRoom(cl, maxCount, maxBytes)
			q.mu.Lock()
			sq = q.session(cl.ID)
			if _, ok := sq.seqs[seq]; !ok || room {
				// There was room for it (what is over the limit now is a
				// later publisher's, which waits in turn), or it was
				// acknowledged or dropped meanwhile.
				sq = nil
			}
		}
		for sq != nil && over() {
			r, ok := sq.oldest(seq)
			if dropNewest || !ok {
				break
			}
			sq.remove(r.seq)
			q.acct.Release(r.size)
			overLimit = append(overLimit, r)
		}
		if sq != nil && over() {
			// The new message alone is over the limit, or the policy
			// drops the newest.
			sq.remove(seq)
			q.acct.Release(size)
			overLimit = append(overLimit, queuedRef{seq: seq, size: size})
		}
	}
	if sq := q.m[cl.ID]; sq != nil && sq.empty() {
		delete(q.m, cl.ID)
	}
	q.mu.Unlock()

	if dropNew {
		overBudget = append(overBudget, queuedRef{seq: seq, size: size})
	}
	if n := q.drop(cl, overLimit, "queue_full"); n > 0 {
		q.b.stats.QueuedDropped.Add(int64(n))
		q.b.hook.logs.warn("queue:"+cl.ID, "session queue full: messages dropped", "client", logClip(cl.ID),
			"dropped", n, "policy", l.QueueDrop, "max_queued", l.MaxQueued, "max_queued_bytes", maxBytes)
	}
	if n := q.drop(cl, overBudget, "memory_budget"); n > 0 {
		q.b.stats.QueueBudgetDropped.Add(int64(n))
		q.b.hook.logs.warn("queue-budget:"+cl.ID, "memory budget exhausted: session messages dropped", "client", logClip(cl.ID),
			"dropped", n, "queued_bytes_total", q.acct.Used())
	}
}

// queueStallTimeout is how long a publisher waits for room in a connected
// subscriber's full queue while the subscriber takes nothing; then the
// queue's drop policy applies.
const queueStallTimeout = 5 * time.Second

// queueWaitPoll bounds each wait for room, so that a subscriber that
// disconnects (or a broker that stops) ends the wait soon.
const queueWaitPoll = 100 * time.Millisecond

// mayWait tells whether the publisher of pk may wait for room in cl's
// queue: cl is connected, and is not the publisher itself (its own reader
// takes its acknowledgements: it would wait for itself).
func (q *sessionQueues) mayWait(cl *mochi.Client, pk *packets.Packet) bool {
	return cl.Net.Conn != nil && !cl.Closed() && pk.Origin != cl.ID && !cl.IsTakenOver()
}

// waitRoom waits until cl's queue is within its limits (true), or cl
// disconnects or queueStallTimeout passes without any message leaving the
// queue (false).
func (q *sessionQueues) waitRoom(cl *mochi.Client, maxCount int, maxBytes int64) bool {
	q.b.stats.QueueWaits.Add(1)
	stall := time.NewTimer(queueStallTimeout)
	defer stall.Stop()
	poll := time.NewTicker(queueWaitPoll)
	defer poll.Stop()
	for {
		q.mu.Lock()
		sq := q.session(cl.ID)
		if (maxBytes <= 0 || sq.bytes <= maxBytes) && sq.count() <= maxCount {
			q.mu.Unlock()
			return true
		}
		if sq.drained == nil {
			sq.drained = make(chan struct{})
		}
		drained := sq.drained
		q.mu.Unlock()
		select {
		case <-drained:
			stall.Reset(queueStallTimeout) // progress
		case <-poll.C:
			if cl.Closed() || cl.IsTakenOver() {
				return false
			}
		case <-stall.C:
			q.b.stats.QueueWaitTimeouts.Add(1)
			return false
		}
	}
}

// drop removes messages from cl's inflight state and from the store,
// returning how many were still there (an acknowledgement may have come
// first). Each is a message_dropped event with reason.
func (q *sessionQueues) drop(cl *mochi.Client, refs []queuedRef, reason string) int {
	n := 0
	for _, r := range refs {
		if cur, ok := cl.State.Inflight.GetSeq(r.seq); !ok || cur.FixedHeader.Type != packets.Publish {
			continue // acknowledged, or a PUBREL: the client has the message
		}
		pk, ok := cl.State.Inflight.DeleteSeq(r.seq)
		if !ok {
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
		q.release(cl.ID, pk.QueueSeq)
	}
}

// OnQosDropped releases a message the engine gave up. The drops of an old
// connection whose session a new one inherited are not releases: the
// messages live on in the new connection.
func (q *sessionQueues) OnQosDropped(cl *mochi.Client, pk packets.Packet) {
	if cl.IsTakenOver() || pk.FixedHeader.Type == packets.Pubrec {
		return
	}
	q.release(cl.ID, pk.QueueSeq)
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
// message being added (skipCID, skipSeq), which the caller accounts for.
// q.mu held.
func (q *sessionQueues) reconcileLocked(skipCID string, skipSeq uint64) {
	q.reconciled = time.Now()
	var before, after int64
	next := make(map[string]*sessionQueue, len(q.m))
	for id, sq := range q.m {
		before += sq.bytes
		if sq.qos0 > 0 {
			next[id] = &sessionQueue{seqs: make(map[uint64]queuedRef), qos0: sq.qos0}
		}
	}
	for id, cl := range q.b.srv.Clients.GetAll() {
		if cl.Net.Inline {
			continue
		}
		for _, pk := range cl.State.Inflight.GetAll(false) {
			if pk.FixedHeader.Type != packets.Publish || (id == skipCID && pk.QueueSeq == skipSeq) {
				continue
			}
			sq := next[id]
			if sq == nil {
				sq = &sessionQueue{seqs: make(map[uint64]queuedRef)}
				next[id] = sq
			}
			size := queuedSize(&pk)
			sq.add(pk.QueueSeq, size)
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

// adopt puts the admitted messages (oldest first, each with the QueueSeq it
// is stored under) in cl's inflight state and records them in the
// session's queue, their bytes being reserved already.
func (q *sessionQueues) adopt(cl *mochi.Client, pks []packets.Packet) {
	q.mu.Lock()
	sq := q.session(cl.ID)
	for i := range pks {
		sq.add(pks[i].QueueSeq, queuedSize(&pks[i]))
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
