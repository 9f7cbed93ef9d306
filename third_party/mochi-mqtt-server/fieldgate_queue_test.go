// SPDX-License-Identifier: MIT

package mqtt

import (
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// fieldgate patch (queue without ids): tests.

// TestInflightQueueWithoutPacketIDs: 100,000 messages are queued without
// packet ids; they take ids only as they enter a send window of 1,000,
// leave in order, and ids are reused once acknowledged.
func TestInflightQueueWithoutPacketIDs(t *testing.T) {
	const n, window = 100_000, 1_000
	in := NewInflights()
	for i := 0; i < n; i++ {
		in.Enqueue(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, Payload: []byte(strconv.Itoa(i)), PacketID: 99})
	}
	require.Equal(t, n, in.Len())
	require.Equal(t, n, in.Waiting())

	next := 0
	var sent []packets.Packet
	for next < n {
		for len(sent) < window {
			pk, ok := in.TakeImmediate()
			if !ok {
				break
			}
			require.NotZero(t, pk.PacketID)
			require.NotZero(t, pk.QueueSeq)
			require.False(t, pk.FixedHeader.Dup)
			sent = append(sent, pk)
		}
		pk := sent[0]
		sent = sent[1:]
		require.Equal(t, strconv.Itoa(next), string(pk.Payload), "out of order")
		got, ok := in.Take(pk.PacketID)
		require.True(t, ok)
		require.Equal(t, pk.QueueSeq, got.QueueSeq)
		next++
	}
	require.Equal(t, 0, in.Len())
	require.Equal(t, 0, in.Waiting())
}

// TestPublishToClientQueueBeyondPacketIDs: a session whose client is
// offline holds more QoS 1 messages than there are packet ids.
func TestPublishToClientQueueBeyondPacketIDs(t *testing.T) {
	const n = 70_000
	s := newServer()
	s.Options.Capabilities.MaximumQueued = n
	cl, _, _ := newTestClient()
	cl.Net.Conn = nil
	pk := *packets.TPacketData[packets.Publish].Get(packets.TPublishQos1).Packet
	for i := 0; i < n; i++ {
		out, err := s.publishToClient(cl, packets.Subscription{Filter: "a/b/c", Qos: 1}, pk)
		require.ErrorIs(t, err, packets.CodeDisconnect)
		require.Zero(t, out.PacketID)
		require.NotZero(t, out.QueueSeq)
	}
	require.Equal(t, n, cl.State.Inflight.Len())
	require.Equal(t, int64(0), atomic.LoadInt64(&s.Info.InflightDropped))
	_, err := s.publishToClient(cl, packets.Subscription{Filter: "a/b/c", Qos: 1}, pk)
	require.ErrorIs(t, err, packets.ErrQuotaExceeded)
}

// TestInflightMoveAndExpired: a session taken over passes its queue on
// whole; expiry is found without sorting, on waiting messages too.
func TestInflightMoveAndExpired(t *testing.T) {
	in := NewInflights()
	in.Enqueue(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 5, Expiry: 10, Created: 1})
	in.Enqueue(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 5, Expiry: 100, Created: 1})
	moved := in.Move()
	require.Equal(t, 0, in.Len())
	require.Equal(t, 0, in.Waiting())
	require.Equal(t, 2, moved.Len())
	require.Equal(t, 2, moved.Waiting())

	exp := moved.Expired(50, 0)
	require.Len(t, exp, 1)
	require.Equal(t, int64(10), exp[0].Expiry)
	_, ok := moved.DeleteSeq(exp[0].QueueSeq)
	require.True(t, ok)
	require.Equal(t, 1, moved.Waiting())
	require.Len(t, moved.Expired(50, 10), 1) // created too long ago
}

// BenchmarkInflightQueueFull is the engine's cost of one more message for
// a full queue of n: enqueue it, drop the oldest. Flat in n.
func BenchmarkInflightQueueFull(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run("queued="+strconv.Itoa(n), func(b *testing.B) {
			in := NewInflights()
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, Payload: []byte("x")}
			var seqs []uint64
			for i := 0; i < n; i++ {
				seqs = append(seqs, in.Enqueue(pk))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				seqs = append(seqs, in.Enqueue(pk))
				if _, ok := in.DeleteSeq(seqs[0]); !ok {
					b.Fatal("oldest missing")
				}
				seqs = seqs[1:]
			}
		})
	}
}
