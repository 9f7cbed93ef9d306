// SPDX-License-Identifier: MIT

package mqtt

import (
	"io"
	"sync"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// fieldgate patch (persisted packet ids): tests.

// TestInflightTakeNextKeepsRestoredIDs: a message restored with the packet
// id it was sent under keeps it and reports no new id; that id is reserved,
// so a message queued after it gets another; an id is new only the first
// time a message is taken.
func TestInflightTakeNextKeepsRestoredIDs(t *testing.T) {
	in := NewInflights()
	in.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Dup: true}, PacketID: 1, QueueSeq: 10})
	seq := in.Enqueue(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}})
	require.Equal(t, uint64(11), seq)
	require.Empty(t, in.Requeue()) // a new connection: both wait, in order

	pk, newID, ok := in.TakeNext()
	require.True(t, ok)
	require.False(t, newID)
	require.Equal(t, uint16(1), pk.PacketID)
	require.Equal(t, uint64(10), pk.QueueSeq)
	require.True(t, pk.FixedHeader.Dup)

	pk, newID, ok = in.TakeNext()
	require.True(t, ok)
	require.True(t, newID)
	require.Equal(t, uint64(11), pk.QueueSeq)
	require.NotEqual(t, uint16(1), pk.PacketID, "the restored id is in use")
	require.False(t, pk.FixedHeader.Dup)
	got, ok := in.Seq(pk.PacketID)
	require.True(t, ok)
	require.Equal(t, uint64(11), got)

	in.Untake(pk)
	again, newID, ok := in.TakeNext()
	require.True(t, ok)
	require.False(t, newID, "taken again: the id is not new")
	require.Equal(t, pk.PacketID, again.PacketID)
}

// qosPublishRecorder records the OnQosPublish events.
type qosPublishRecorder struct {
	HookBase
	mu  sync.Mutex
	got []packets.Packet
}

func (h *qosPublishRecorder) ID() string            { return "qos-publish-recorder" }
func (h *qosPublishRecorder) Provides(b byte) bool  { return b == OnQosPublish }
func (h *qosPublishRecorder) Init(config any) error { return nil }
func (h *qosPublishRecorder) events() []packets.Packet {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]packets.Packet(nil), h.got...)
}

func (h *qosPublishRecorder) OnQosPublish(cl *Client, pk packets.Packet, sent int64, resends int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, pk)
}

// TestQosPublishReportsStateChanges: the hooks see a QoS 2 message three
// times, with the same QueueSeq: queued (no id), given its packet id as it
// is sent, and released (the PUBREL, once the client's PUBREC came).
func TestQosPublishReportsStateChanges(t *testing.T) {
	s := newServer()
	rec := new(qosPublishRecorder)
	require.NoError(t, s.AddHook(rec, nil))
	cl, r, w := newTestClient()
	cl.ops.hooks = s.hooks
	go func() { _, _ = io.Copy(io.Discard, r) }()
	defer func() { _ = w.Close() }()

	pk := *packets.TPacketData[packets.Publish].Get(packets.TPublishQos2).Packet
	out, err := s.publishToClient(cl, packets.Subscription{Filter: pk.TopicName, Qos: 2}, pk)
	require.NoError(t, err)
	require.NotZero(t, out.PacketID)

	ev := rec.events()
	require.Len(t, ev, 2)
	require.Equal(t, packets.Publish, ev[0].FixedHeader.Type)
	require.Zero(t, ev[0].PacketID, "queued: no id yet")
	require.Equal(t, packets.Publish, ev[1].FixedHeader.Type)
	require.Equal(t, out.PacketID, ev[1].PacketID, "sent: its id")
	require.Equal(t, ev[0].QueueSeq, ev[1].QueueSeq)

	pubrec := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: out.PacketID}
	require.NoError(t, s.processPacket(cl, pubrec))
	ev = rec.events()
	require.Len(t, ev, 3)
	require.Equal(t, packets.Pubrel, ev[2].FixedHeader.Type, "released: the PUBREL")
	require.Equal(t, out.PacketID, ev[2].PacketID)
	require.Equal(t, ev[0].QueueSeq, ev[2].QueueSeq)

	// A queued message sent when the session's client comes back
	// (ResendInflightMessages) is reported with its new id too.
	queued := pk
	queued.FixedHeader.Qos = 2
	cl.State.Inflight.Enqueue(queued) // as for an offline session
	require.NoError(t, cl.ResendInflightMessages(true))
	ev = rec.events()
	last := ev[len(ev)-1]
	require.Equal(t, packets.Publish, last.FixedHeader.Type)
	require.NotZero(t, last.PacketID)
	require.NotEqual(t, out.PacketID, last.PacketID, "the PUBREL still holds its id")
}
