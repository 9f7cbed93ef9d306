// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Inflight is a map of InflightMessage keyed on packet id.
//
// fieldgate patch (inflight order): every entry carries an insertion
// sequence, kept when the entry is updated in place, so GetAll returns the
// messages in the order they were queued (upstream sorted on the creation
// time truncated to uint16 seconds, with an unstable sort). Entries waiting
// for send quota (Expiry < 0, "immediate") are also kept in a FIFO of
// sequences, so NextImmediate is O(1) amortised instead of copying and
// sorting the whole map on every acknowledgement.
//
// fieldgate patch (queue without ids): entries are keyed by their sequence,
// and only those that hold a packet id are also found by it. A message
// queued for a session (Enqueue) takes no packet id: TakeImmediate gives it
// one when it enters the send window, so a session can hold more messages
// than there are 16-bit packet ids, and every operation on one message is
// O(1) whatever the queue length.
type Inflight struct {
	sync.RWMutex
	internal            map[uint64]inflightEntry // fieldgate patch: the entries, by sequence
	ids                 map[uint16]uint64        // fieldgate patch: packet id → sequence, for entries holding an id
	receiveQuota        int32                    // remaining inbound qos quota for flow control
	sendQuota           int32                    // remaining outbound qos quota for flow control
	maximumReceiveQuota int32                    // maximum allowed receive quota
	maximumSendQuota    int32                    // maximum allowed send quota
	seq                 uint64                   // fieldgate patch: last insertion sequence
	lastID              uint16                   // fieldgate patch: last packet id given by TakeImmediate
	immediate           []uint64                 // fieldgate patch: FIFO of waiting entries' sequences, may hold stale ones
	immediateHead       int                      // fieldgate patch: index of the FIFO's head
	waiting             atomic.Int32             // fieldgate patch: number of entries with Expiry < 0
}

// inflightEntry is a packet and its insertion sequence (fieldgate patch).
type inflightEntry struct {
	pk     packets.Packet
	seq    uint64
	expiry int64 // the packet's own Expiry while it is marked immediate (Expiry < 0)
	sent   bool  // fieldgate patch (first delivery): the PUBLISH was written to a connection
}

// packet returns the entry's packet with its QueueSeq set.
func (e inflightEntry) packet() packets.Packet {
	pk := e.pk
	pk.QueueSeq = e.seq
	return pk
}

// NewInflights returns a new instance of an Inflight packets map.
func NewInflights() *Inflight {
	return &Inflight{} // fieldgate patch (parked reads): maps made on first use (maps)
}

// maps makes the maps on first use. fieldgate patch (parked reads): most
// idle clients never have a message in flight, and every client has two
// Inflights. The caller holds the write lock.
func (i *Inflight) maps() {
	if i.internal == nil {
		i.internal = map[uint64]inflightEntry{}
		i.ids = map[uint16]uint64{}
	}
}

// Set adds or updates an inflight packet by packet id.
//
// fieldgate patch (queue without ids): a packet with a QueueSeq updates the
// entry of that sequence (or is added under it: a message restored from a
// store keeps its place); otherwise one with a packet id updates the entry
// holding that id. A packet id set is reserved (TakeImmediate gives it to no
// other message) until the entry is removed: a message restored with the id
// it was sent under keeps it (fieldgate patch: persisted packet ids).
func (i *Inflight) Set(m packets.Packet) bool {
	i.Lock()
	defer i.Unlock()
	_, added := i.set(m)
	return added
}

// set is Set; it returns the entry's sequence. i held.
func (i *Inflight) set(m packets.Packet) (uint64, bool) {
	i.maps() // fieldgate patch (parked reads)
	var seq uint64
	var e inflightEntry
	ok := false
	switch {
	case m.QueueSeq != 0:
		seq = m.QueueSeq
		e, ok = i.internal[seq]
	case m.PacketID != 0:
		if seq, ok = i.ids[m.PacketID]; ok {
			e, ok = i.internal[seq]
		}
	}
	if !ok {
		if m.QueueSeq != 0 {
			seq = m.QueueSeq
			i.seq = max(i.seq, seq)
		} else {
			i.seq++
			seq = i.seq
		}
		e = inflightEntry{seq: seq}
	}
	if ok && e.pk.PacketID != m.PacketID && e.pk.PacketID != 0 && i.ids[e.pk.PacketID] == seq {
		delete(i.ids, e.pk.PacketID)
	}
	if m.PacketID != 0 {
		if old, taken := i.ids[m.PacketID]; taken && old != seq {
			i.deleteSeq(old) // upstream semantics: one entry per packet id
		}
		i.ids[m.PacketID] = seq
	}
	wasImmediate := ok && e.pk.Expiry < 0
	switch {
	case m.Expiry < 0 && !wasImmediate:
		if ok {
			e.expiry = e.pk.Expiry // remember the real expiry to restore when sent
		}
		i.waiting.Add(1)
		i.immediate = append(i.immediate, seq)
	case m.Expiry >= 0 && wasImmediate:
		i.waiting.Add(-1)
		e.expiry = 0
	}
	m.QueueSeq = 0
	e.pk = m
	i.internal[seq] = e
	return seq, !ok
}

// Enqueue adds m at the end of the queue, waiting for send quota, without a
// packet id (TakeImmediate gives it one), keeping its own expiry; it
// returns the message's sequence. fieldgate patch (queue without ids).
func (i *Inflight) Enqueue(m packets.Packet) uint64 {
	i.Lock()
	defer i.Unlock()
	i.maps() // fieldgate patch (parked reads)
	m.PacketID = 0
	if m.QueueSeq != 0 {
		i.seq = max(i.seq, m.QueueSeq)
	} else {
		i.seq++
		m.QueueSeq = i.seq
	}
	seq := m.QueueSeq
	e := inflightEntry{seq: seq, expiry: m.Expiry}
	m.Expiry = -1
	m.QueueSeq = 0
	e.pk = m
	if _, ok := i.internal[seq]; ok {
		i.deleteSeq(seq)
	}
	i.internal[seq] = e
	i.waiting.Add(1)
	i.immediate = append(i.immediate, seq)
	return seq
}

// Get returns an inflight packet by packet id.
func (i *Inflight) Get(id uint16) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	if seq, ok := i.ids[id]; ok {
		if e, ok := i.internal[seq]; ok {
			return e.pk, true
		}
	}

	return packets.Packet{}, false
}

// GetSeq returns the packet of sequence seq, with QueueSeq set.
// fieldgate patch (queue without ids).
func (i *Inflight) GetSeq(seq uint64) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()
	e, ok := i.internal[seq]
	if !ok {
		return packets.Packet{}, false
	}
	return e.packet(), true
}

// Len returns the size of the inflight messages map.
func (i *Inflight) Len() int {
	i.RLock()
	defer i.RUnlock()
	return len(i.internal)
}

// Waiting returns the number of packets waiting for send quota or room in
// the client's outbound queue (fieldgate patch).
func (i *Inflight) Waiting() int {
	return int(i.waiting.Load())
}

// Clone returns a new instance of Inflight with the same message data.
// This is used when transferring inflights from a taken-over session.
func (i *Inflight) Clone() *Inflight {
	c := NewInflights()
	c.maps() // fieldgate patch (parked reads)
	i.RLock()
	defer i.RUnlock()
	for k, v := range i.internal {
		c.internal[k] = v
	}
	for k, v := range i.ids {
		c.ids[k] = v
	}
	c.seq = i.seq
	c.lastID = i.lastID
	c.immediate = append([]uint64(nil), i.immediate[i.immediateHead:]...)
	c.waiting.Store(i.waiting.Load())
	return c
}

// sorted returns the entries' sequences in order (sorting the sequences,
// not the ~800-byte entries). i held.
func (i *Inflight) sorted(immediate bool) []uint64 {
	seqs := make([]uint64, 0, len(i.internal))
	for seq, v := range i.internal {
		if !immediate || v.pk.Expiry < 0 {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	return seqs
}

// Move returns a new Inflight holding this one's messages (as Clone, not
// its quotas), and leaves this one empty: a session taken over by a new
// connection passes its queue on without copying it (Clone copied every
// entry, then the old connection's ClearInflights dropped each one).
// fieldgate patch (queue without ids).
func (i *Inflight) Move() *Inflight {
	i.Lock()
	defer i.Unlock()
	c := &Inflight{
		internal:  i.internal,
		ids:       i.ids,
		seq:       i.seq,
		lastID:    i.lastID,
		immediate: i.immediate[i.immediateHead:],
	}
	c.waiting.Store(i.waiting.Load())
	i.internal, i.ids = nil, nil // fieldgate patch (parked reads): made again on first use
	i.immediate = nil
	i.immediateHead = 0
	i.waiting.Store(0)
	return c
}

// TakeAll removes every message and calls fn with each (QueueSeq set), in
// no particular order, without copying the queue first. fieldgate patch
// (queue without ids).
func (i *Inflight) TakeAll(fn func(pk packets.Packet)) {
	i.Lock()
	old := i.internal
	i.internal, i.ids = nil, nil // fieldgate patch (parked reads): made again on first use
	i.immediate = nil
	i.immediateHead = 0
	i.waiting.Store(0)
	i.Unlock()
	for _, e := range old {
		fn(e.packet())
	}
}

// GetAll returns all the inflight messages, in the order they were added,
// with their QueueSeq set.
func (i *Inflight) GetAll(immediate bool) []packets.Packet {
	i.RLock()
	defer i.RUnlock()

	seqs := i.sorted(immediate)
	m := make([]packets.Packet, len(seqs))
	for j, seq := range seqs {
		m[j] = i.internal[seq].packet()
	}
	return m
}

// GetAllWithExpiry returns all the inflight messages in insertion order, with
// the packet's own Expiry for those marked waiting (Expiry < 0 in GetAll).
// fieldgate patch (first delivery): messages queued for an offline session
// wait, and must still expire.
func (i *Inflight) GetAllWithExpiry() []packets.Packet {
	i.RLock()
	defer i.RUnlock()

	seqs := i.sorted(false)
	m := make([]packets.Packet, len(seqs))
	for j, seq := range seqs {
		e := i.internal[seq]
		m[j] = e.packet()
		if m[j].Expiry < 0 {
			m[j].Expiry = e.expiry
		}
	}
	return m
}

// Expired returns the messages (with QueueSeq set, and their own expiry)
// that expired at now: an MQTT 5 message past its expiry [MQTT-3.3.2-5],
// or any message created more than maximumExpiry seconds ago (when above
// 0). In no particular order, without sorting or copying the queue.
// fieldgate patch (queue without ids).
func (i *Inflight) Expired(now, maximumExpiry int64) []packets.Packet {
	i.RLock()
	defer i.RUnlock()
	var out []packets.Packet
	for _, e := range i.internal {
		expiry := e.pk.Expiry
		if expiry < 0 {
			expiry = e.expiry
		}
		expired := e.pk.ProtocolVersion == 5 && expiry > 0 && expiry < now
		enforced := maximumExpiry > 0 && now-e.pk.Created > maximumExpiry
		if expired || enforced {
			pk := e.packet()
			pk.Expiry = expiry
			out = append(out, pk)
		}
	}
	return out
}

// nextImmediate returns the oldest waiting entry, dropping stale refs from
// the head of the FIFO. The caller holds the write lock.
func (i *Inflight) nextImmediate() (inflightEntry, bool) {
	for i.immediateHead < len(i.immediate) {
		seq := i.immediate[i.immediateHead]
		if e, ok := i.internal[seq]; ok && e.pk.Expiry < 0 {
			return e, true
		}
		i.immediate[i.immediateHead] = 0
		i.immediateHead++
	}
	i.immediate = i.immediate[:0]
	i.immediateHead = 0
	return inflightEntry{}, false
}

// NextImmediate returns the next inflight packet which is indicated to be sent immediately.
// This typically occurs when the quota has been exhausted, and we need to wait until new quota
// is free to continue sending.
func (i *Inflight) NextImmediate() (packets.Packet, bool) {
	i.Lock()
	defer i.Unlock()

	if i.waiting.Load() == 0 {
		return packets.Packet{}, false
	}
	e, ok := i.nextImmediate()
	return e.pk, ok
}

// freeID returns a packet id no entry holds, searching on from the last
// one given. i held.
func (i *Inflight) freeID() (uint16, bool) {
	if len(i.ids) >= math.MaxUint16 {
		return 0, false
	}
	id := i.lastID
	for {
		id++
		if id == 0 {
			id = 1
		}
		if _, taken := i.ids[id]; !taken {
			i.lastID = id
			return id, true
		}
	}
}

// TakeImmediate returns the oldest waiting packet with its own expiry
// restored, and marks it as no longer waiting (it stays in flight until it
// is acknowledged). fieldgate patch. A packet without a packet id gets one
// here; when every id is held, nothing is taken (fieldgate patch: queue
// without ids).
func (i *Inflight) TakeImmediate() (packets.Packet, bool) {
	pk, _, ok := i.TakeNext()
	return pk, ok
}

// TakeNext is TakeImmediate, also telling whether the packet id was given
// now (newID): the message entered the send window for the first time, and
// its id must be recorded (the hooks' OnQosPublish) so that it is resent
// under the same id after a restart [MQTT-4.4.0-1]. fieldgate patch
// (persisted packet ids).
func (i *Inflight) TakeNext() (pk packets.Packet, newID bool, ok bool) {
	i.Lock()
	defer i.Unlock()

	if i.waiting.Load() == 0 {
		return packets.Packet{}, false, false
	}
	e, ok := i.nextImmediate()
	if !ok {
		return packets.Packet{}, false, false
	}
	if e.pk.PacketID == 0 {
		id, ok := i.freeID()
		if !ok {
			return packets.Packet{}, false, false
		}
		e.pk.PacketID = id
		i.ids[id] = e.seq
		newID = true
	}
	i.immediate[i.immediateHead] = 0
	i.immediateHead++
	if i.immediateHead > 1024 && i.immediateHead*2 > len(i.immediate) { // compact the FIFO
		n := copy(i.immediate, i.immediate[i.immediateHead:])
		clear(i.immediate[n:])
		i.immediate = i.immediate[:n]
		i.immediateHead = 0
	}
	e.pk.Expiry = e.expiry
	e.expiry = 0
	i.internal[e.seq] = e
	i.waiting.Add(-1)
	return e.resendable(), newID, true
}

// Seq returns the queue sequence of the message holding packet id.
// fieldgate patch (persisted packet ids).
func (i *Inflight) Seq(id uint16) (uint64, bool) {
	i.RLock()
	defer i.RUnlock()
	seq, ok := i.ids[id]
	return seq, ok
}

// resendable returns the entry's packet, with QueueSeq set and DUP set if it
// is a PUBLISH that was written before [MQTT-3.3.1-1]. fieldgate patch
// (first delivery).
func (e inflightEntry) resendable() packets.Packet {
	pk := e.packet()
	if e.sent && pk.FixedHeader.Type == packets.Publish {
		pk.FixedHeader.Dup = true
	}
	return pk
}

// MarkSent records that the PUBLISH with this packet id was written to the
// client's connection: if it is sent again, it is a re-delivery (DUP=1).
// fieldgate patch (first delivery).
func (i *Inflight) MarkSent(id uint16) {
	i.Lock()
	defer i.Unlock()
	seq, ok := i.ids[id]
	if !ok {
		return
	}
	if e, ok := i.internal[seq]; ok && !e.sent && e.pk.FixedHeader.Type == packets.Publish {
		e.sent = true
		i.internal[seq] = e
	}
}

// Requeue prepares the session's messages to be sent again on a new
// connection: every PUBLISH is marked waiting, in insertion order (the FIFO
// is rebuilt), to be sent as the new connection's send quota allows, with
// DUP=1 only if it was written before. It returns the other entries (PUBREL,
// and the server's acks of inbound QoS 2 messages) in insertion order, to be
// resent at once. fieldgate patch (resend).
func (i *Inflight) Requeue() []packets.Packet {
	i.Lock()
	defer i.Unlock()

	seqs := i.sorted(false)
	clear(i.immediate)
	i.immediate = i.immediate[:0]
	i.immediateHead = 0
	var others []packets.Packet
	var n int32
	for _, seq := range seqs {
		e := i.internal[seq]
		if e.pk.FixedHeader.Type != packets.Publish {
			others = append(others, e.packet())
			continue
		}
		if e.pk.Expiry >= 0 {
			e.expiry = e.pk.Expiry
			e.pk.Expiry = -1
			i.internal[e.seq] = e
		}
		i.immediate = append(i.immediate, e.seq)
		n++
	}
	i.waiting.Store(n)
	return others
}

// TakeImmediateID is TakeImmediate for one given packet id; its ref in the
// FIFO becomes stale. fieldgate patch.
func (i *Inflight) TakeImmediateID(id uint16) (packets.Packet, bool) {
	i.Lock()
	defer i.Unlock()

	seq, ok := i.ids[id]
	if !ok {
		return packets.Packet{}, false
	}
	e, ok := i.internal[seq]
	if !ok || e.pk.Expiry >= 0 {
		return packets.Packet{}, false
	}
	e.pk.Expiry = e.expiry
	e.expiry = 0
	i.internal[seq] = e
	i.waiting.Add(-1)
	return e.resendable(), true
}

// Untake puts back a packet returned by TakeImmediate at the head of the
// waiting FIFO, if it is still in flight. fieldgate patch.
func (i *Inflight) Untake(pk packets.Packet) {
	i.Lock()
	defer i.Unlock()

	seq := pk.QueueSeq
	if seq == 0 {
		seq = i.ids[pk.PacketID]
	}
	e, ok := i.internal[seq]
	if !ok || e.pk.Expiry < 0 {
		return
	}
	e.expiry = e.pk.Expiry
	e.pk.Expiry = -1
	i.internal[seq] = e
	i.waiting.Add(1)
	if i.immediateHead > 0 {
		i.immediateHead--
		i.immediate[i.immediateHead] = seq
	} else {
		i.immediate = slices.Insert(i.immediate, 0, seq)
	}
}

// deleteSeq removes the entry of sequence seq. i held.
func (i *Inflight) deleteSeq(seq uint64) (inflightEntry, bool) {
	e, ok := i.internal[seq]
	if !ok {
		return e, false
	}
	if e.pk.PacketID != 0 && i.ids[e.pk.PacketID] == seq {
		delete(i.ids, e.pk.PacketID)
	}
	delete(i.internal, seq)
	if e.pk.Expiry < 0 {
		i.waiting.Add(-1) // its ref in the FIFO is now stale
		i.trimImmediate()
	}
	return e, true
}

// trimImmediate drops the stale refs at the head of the waiting FIFO and
// compacts it, so that a queue whose oldest messages are dropped (an
// offline session over its limit) does not grow its FIFO. i held.
func (i *Inflight) trimImmediate() {
	for i.immediateHead < len(i.immediate) {
		if e, ok := i.internal[i.immediate[i.immediateHead]]; ok && e.pk.Expiry < 0 {
			break
		}
		i.immediate[i.immediateHead] = 0
		i.immediateHead++
	}
	if i.immediateHead == len(i.immediate) {
		i.immediate = i.immediate[:0]
		i.immediateHead = 0
	} else if i.immediateHead > 1024 && i.immediateHead*2 > len(i.immediate) {
		n := copy(i.immediate, i.immediate[i.immediateHead:])
		clear(i.immediate[n:])
		i.immediate = i.immediate[:n]
		i.immediateHead = 0
	}
}

// Delete removes an in-flight message from the map. Returns true if the message existed.
func (i *Inflight) Delete(id uint16) bool {
	i.Lock()
	defer i.Unlock()

	seq, ok := i.ids[id]
	if !ok {
		return false
	}
	_, ok = i.deleteSeq(seq)
	return ok
}

// Take removes the message holding packet id and returns it, with its
// QueueSeq set. fieldgate patch (queue without ids).
func (i *Inflight) Take(id uint16) (packets.Packet, bool) {
	i.Lock()
	defer i.Unlock()

	seq, ok := i.ids[id]
	if !ok {
		return packets.Packet{}, false
	}
	e, ok := i.deleteSeq(seq)
	return e.packet(), ok
}

// DeleteSeq removes the message of sequence seq and returns it, with its
// QueueSeq set. fieldgate patch (queue without ids).
func (i *Inflight) DeleteSeq(seq uint64) (packets.Packet, bool) {
	i.Lock()
	defer i.Unlock()
	e, ok := i.deleteSeq(seq)
	return e.packet(), ok
}

// TakeRecieveQuota reduces the receive quota by 1.
func (i *Inflight) DecreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) > 0 {
		atomic.AddInt32(&i.receiveQuota, -1)
	}
}

// TakeRecieveQuota increases the receive quota by 1.
func (i *Inflight) IncreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) < atomic.LoadInt32(&i.maximumReceiveQuota) {
		atomic.AddInt32(&i.receiveQuota, 1)
	}
}

// ResetReceiveQuota resets the receive quota to the maximum allowed value.
func (i *Inflight) ResetReceiveQuota(n int32) {
	atomic.StoreInt32(&i.receiveQuota, n)
	atomic.StoreInt32(&i.maximumReceiveQuota, n)
}

// DecreaseSendQuota reduces the send quota by 1.
func (i *Inflight) DecreaseSendQuota() {
	if atomic.LoadInt32(&i.sendQuota) > 0 {
		atomic.AddInt32(&i.sendQuota, -1)
	}
}

// IncreaseSendQuota increases the send quota by 1.
func (i *Inflight) IncreaseSendQuota() {
	if atomic.LoadInt32(&i.sendQuota) < atomic.LoadInt32(&i.maximumSendQuota) {
		atomic.AddInt32(&i.sendQuota, 1)
	}
}

// ResetSendQuota resets the send quota to the maximum allowed value.
func (i *Inflight) ResetSendQuota(n int32) {
	atomic.StoreInt32(&i.sendQuota, n)
	atomic.StoreInt32(&i.maximumSendQuota, n)
}
