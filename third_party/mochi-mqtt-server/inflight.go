// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"cmp"
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
// for send quota (Expiry < 0, "immediate") are also kept in a FIFO of packet
// ids, so NextImmediate is O(1) amortised instead of copying and sorting the
// whole map on every acknowledgement.
type Inflight struct {
	sync.RWMutex
	internal            map[uint16]inflightEntry // internal contains the inflight packets
	receiveQuota        int32                    // remaining inbound qos quota for flow control
	sendQuota           int32                    // remaining outbound qos quota for flow control
	maximumReceiveQuota int32                    // maximum allowed receive quota
	maximumSendQuota    int32                    // maximum allowed send quota
	seq                 uint64                   // fieldgate patch: last insertion sequence
	immediate           []inflightRef            // fieldgate patch: FIFO of waiting entries, may hold stale refs
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

// inflightRef names one entry in the immediate FIFO; it is stale once the
// entry with that id and sequence is gone or no longer immediate.
type inflightRef struct {
	seq uint64
	id  uint16
}

// NewInflights returns a new instance of an Inflight packets map.
func NewInflights() *Inflight {
	return &Inflight{
		internal: map[uint16]inflightEntry{},
	}
}

// Set adds or updates an inflight packet by packet id.
func (i *Inflight) Set(m packets.Packet) bool {
	i.Lock()
	defer i.Unlock()

	e, ok := i.internal[m.PacketID]
	if !ok {
		i.seq++
		e = inflightEntry{seq: i.seq}
	}
	wasImmediate := ok && e.pk.Expiry < 0
	switch {
	case m.Expiry < 0 && !wasImmediate:
		if ok {
			e.expiry = e.pk.Expiry // remember the real expiry to restore when sent
		}
		i.waiting.Add(1)
		i.immediate = append(i.immediate, inflightRef{seq: e.seq, id: m.PacketID})
	case m.Expiry >= 0 && wasImmediate:
		i.waiting.Add(-1)
		e.expiry = 0
	}
	e.pk = m
	i.internal[m.PacketID] = e
	return !ok
}

// Get returns an inflight packet by packet id.
func (i *Inflight) Get(id uint16) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	if e, ok := i.internal[id]; ok {
		return e.pk, true
	}

	return packets.Packet{}, false
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
	i.RLock()
	defer i.RUnlock()
	for k, v := range i.internal {
		c.internal[k] = v
	}
	c.seq = i.seq
	c.immediate = append([]inflightRef(nil), i.immediate[i.immediateHead:]...)
	c.waiting.Store(i.waiting.Load())
	return c
}

// GetAll returns all the inflight messages, in the order they were added.
func (i *Inflight) GetAll(immediate bool) []packets.Packet {
	i.RLock()
	defer i.RUnlock()

	es := make([]inflightEntry, 0, len(i.internal))
	for _, v := range i.internal {
		if !immediate || (immediate && v.pk.Expiry < 0) {
			es = append(es, v)
		}
	}

	slices.SortFunc(es, func(a, b inflightEntry) int { // fieldgate patch: insertion order
		return cmp.Compare(a.seq, b.seq)
	})

	m := make([]packets.Packet, len(es))
	for j := range es {
		m[j] = es[j].pk
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

	es := make([]inflightEntry, 0, len(i.internal))
	for _, v := range i.internal {
		es = append(es, v)
	}
	slices.SortFunc(es, func(a, b inflightEntry) int { return cmp.Compare(a.seq, b.seq) })
	m := make([]packets.Packet, len(es))
	for j := range es {
		m[j] = es[j].pk
		if m[j].Expiry < 0 {
			m[j].Expiry = es[j].expiry
		}
	}
	return m
}

// nextImmediate returns the oldest waiting entry, dropping stale refs from
// the head of the FIFO. The caller holds the write lock.
func (i *Inflight) nextImmediate() (inflightEntry, bool) {
	for i.immediateHead < len(i.immediate) {
		r := i.immediate[i.immediateHead]
		if e, ok := i.internal[r.id]; ok && e.seq == r.seq && e.pk.Expiry < 0 {
			return e, true
		}
		i.immediate[i.immediateHead] = inflightRef{}
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

// TakeImmediate returns the oldest waiting packet with its own expiry
// restored, and marks it as no longer waiting (it stays in flight until it
// is acknowledged). fieldgate patch.
func (i *Inflight) TakeImmediate() (packets.Packet, bool) {
	i.Lock()
	defer i.Unlock()

	if i.waiting.Load() == 0 {
		return packets.Packet{}, false
	}
	e, ok := i.nextImmediate()
	if !ok {
		return packets.Packet{}, false
	}
	i.immediate[i.immediateHead] = inflightRef{}
	i.immediateHead++
	if i.immediateHead > 1024 && i.immediateHead*2 > len(i.immediate) { // compact the FIFO
		n := copy(i.immediate, i.immediate[i.immediateHead:])
		clear(i.immediate[n:])
		i.immediate = i.immediate[:n]
		i.immediateHead = 0
	}
	e.pk.Expiry = e.expiry
	e.expiry = 0
	i.internal[e.pk.PacketID] = e
	i.waiting.Add(-1)
	return e.resendable(), true
}

// resendable returns the entry's packet, with DUP set if it is a PUBLISH
// that was written before [MQTT-3.3.1-1]. fieldgate patch (first delivery).
func (e inflightEntry) resendable() packets.Packet {
	pk := e.pk
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
	if e, ok := i.internal[id]; ok && !e.sent && e.pk.FixedHeader.Type == packets.Publish {
		e.sent = true
		i.internal[id] = e
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

	es := make([]inflightEntry, 0, len(i.internal))
	for _, e := range i.internal {
		es = append(es, e)
	}
	slices.SortFunc(es, func(a, b inflightEntry) int { return cmp.Compare(a.seq, b.seq) })

	clear(i.immediate)
	i.immediate = i.immediate[:0]
	i.immediateHead = 0
	var others []packets.Packet
	var n int32
	for _, e := range es {
		if e.pk.FixedHeader.Type != packets.Publish {
			others = append(others, e.pk)
			continue
		}
		if e.pk.Expiry >= 0 {
			e.expiry = e.pk.Expiry
			e.pk.Expiry = -1
			i.internal[e.pk.PacketID] = e
		}
		i.immediate = append(i.immediate, inflightRef{seq: e.seq, id: e.pk.PacketID})
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

	e, ok := i.internal[id]
	if !ok || e.pk.Expiry >= 0 {
		return packets.Packet{}, false
	}
	e.pk.Expiry = e.expiry
	e.expiry = 0
	i.internal[id] = e
	i.waiting.Add(-1)
	return e.resendable(), true
}

// Untake puts back a packet returned by TakeImmediate at the head of the
// waiting FIFO, if it is still in flight. fieldgate patch.
func (i *Inflight) Untake(pk packets.Packet) {
	i.Lock()
	defer i.Unlock()

	e, ok := i.internal[pk.PacketID]
	if !ok || e.pk.Expiry < 0 {
		return
	}
	e.expiry = e.pk.Expiry
	e.pk.Expiry = -1
	i.internal[pk.PacketID] = e
	i.waiting.Add(1)
	r := inflightRef{seq: e.seq, id: pk.PacketID}
	if i.immediateHead > 0 {
		i.immediateHead--
		i.immediate[i.immediateHead] = r
	} else {
		i.immediate = slices.Insert(i.immediate, 0, r)
	}
}

// Delete removes an in-flight message from the map. Returns true if the message existed.
func (i *Inflight) Delete(id uint16) bool {
	i.Lock()
	defer i.Unlock()

	e, ok := i.internal[id]
	if ok && e.pk.Expiry < 0 {
		i.waiting.Add(-1) // its ref in the FIFO is now stale
	}
	delete(i.internal, id)

	return ok
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
