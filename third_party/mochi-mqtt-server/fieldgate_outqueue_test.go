// fieldgate patch: tests of the idle memory patch (outbound queue, writer
// ending when idle) in PATCHES.md.

package mqtt

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mochi-mqtt/server/v2/packets"
)

func TestOutboundPacketQueueBoundOrderAndRelease(t *testing.T) {
	const limit = 1000
	q := newOutboundPacketQueue(limit)
	require.Nil(t, q.buf, "no ring before the first packet")
	pks := make([]*packets.Packet, limit)
	for i := range pks {
		pks[i] = &packets.Packet{PacketID: uint16(i)}
		require.True(t, q.push(pks[i]))
	}
	require.False(t, q.push(&packets.Packet{}), "over the bound")
	require.Equal(t, limit, q.Len())
	require.Equal(t, limit, q.Cap())
	for i := 0; i < limit; i++ {
		pk, res := q.pop(nil, nil, 0)
		require.Equal(t, popPacket, res)
		require.Same(t, pks[i], pk)
		if i == limit/2 { // wrap the ring around
			require.True(t, q.push(&packets.Packet{PacketID: 60000}))
		}
	}
	require.Equal(t, 1, q.Len())
	pk, ok := q.tryPop()
	require.True(t, ok)
	require.Equal(t, uint16(60000), pk.PacketID)
	require.Nil(t, q.buf, "a ring grown past the kept size is released once empty")

	require.True(t, q.push(&packets.Packet{}))
	_, _ = q.tryPop()
	require.NotNil(t, q.buf, "a small ring is kept")
	q.release()
	require.Nil(t, q.buf)
}

func TestOutboundPacketQueuePopEnds(t *testing.T) {
	q := newOutboundPacketQueue(4)
	done := make(chan struct{})
	idle := time.NewTimer(time.Hour)
	_, res := q.pop(done, idle, 10*time.Millisecond)
	require.Equal(t, popIdle, res)

	go func() {
		time.Sleep(5 * time.Millisecond)
		q.push(&packets.Packet{PacketID: 7})
	}()
	pk, res := q.pop(done, idle, time.Minute)
	require.Equal(t, popPacket, res)
	require.Equal(t, uint16(7), pk.PacketID)

	close(done)
	q.push(&packets.Packet{})
	_, res = q.pop(done, idle, time.Minute)
	require.Equal(t, popClosed, res)
}

// TestWriterEndsWhenIdleAndRestarts: a client's write loop ends when it has
// had nothing to write for writerIdle, and the next message starts it again.
func TestWriterEndsWhenIdleAndRestarts(t *testing.T) {
	defer func(d time.Duration) { writerIdle = d }(writerIdle)
	writerIdle = 20 * time.Millisecond
	s := newServerWithInlineClient()
	r, w := net.Pipe()
	defer w.Close()
	defer r.Close()
	cl := s.NewClient(w, "t1", "writer-idle", false)
	cl.Properties.ProtocolVersion = 4
	s.Clients.Add(cl)
	read := make(chan byte, 16)
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := r.Read(buf)
			if err != nil {
				close(read)
				return
			}
			if n > 0 {
				read <- buf[0] >> 4
			}
		}
	}()
	require.NoError(t, s.processPacket(cl, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: "a/b"}},
	}))
	for round := 0; round < 2; round++ {
		require.NoError(t, s.Publish("a/b", []byte("x"), false, 0))
		for typ := range read {
			if typ == packets.Publish {
				break
			}
		}
		require.Eventually(t, func() bool { return !cl.State.writerStarted.Load() }, 10*time.Second, 5*time.Millisecond, "writer ended")
	}
}
