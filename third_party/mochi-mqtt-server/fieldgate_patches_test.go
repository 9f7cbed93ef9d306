// fieldgate patch: tests for the patches listed in PATCHES.md.

package mqtt

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mochi-mqtt/server/v2/packets"
)

func TestInflightInsertionOrder(t *testing.T) {
	in := NewInflights()
	ids := []uint16{500, 3, 65535, 1, 42, 7}
	for _, id := range ids {
		in.Set(packets.Packet{PacketID: id, Created: 1000}) // all in the same second
	}
	in.Set(packets.Packet{PacketID: 3, Created: 1000, Payload: []byte("updated")}) // in place: keeps its position
	got := []uint16{}
	for _, pk := range in.GetAll(false) {
		got = append(got, pk.PacketID)
	}
	require.Equal(t, ids, got)
	require.Equal(t, []byte("updated"), in.GetAll(false)[1].Payload)
}

func TestInflightImmediateFIFO(t *testing.T) {
	in := NewInflights()
	for id := uint16(1); id <= 10; id++ {
		in.Set(packets.Packet{PacketID: id, Expiry: 99})
		in.Set(packets.Packet{PacketID: id, Expiry: -1}) // marked waiting after being added
	}
	require.Equal(t, 10, in.Waiting())
	in.Delete(1)
	in.Delete(4)
	in.Set(packets.Packet{PacketID: 4, Expiry: -1}) // re-added: goes to the back
	want := []uint16{2, 3, 5, 6, 7, 8, 9, 10, 4}

	c := in.Clone()
	for _, x := range []*Inflight{in, c} {
		got := []uint16{}
		for {
			pk, ok := x.TakeImmediate()
			if !ok {
				break
			}
			got = append(got, pk.PacketID)
			if pk.PacketID != 4 {
				require.Equal(t, int64(99), pk.Expiry) // its own expiry is restored
			}
		}
		require.Equal(t, want, got)
		require.Equal(t, 0, x.Waiting())
		require.Equal(t, 9, x.Len()) // still in flight until acknowledged
	}

	in.Set(packets.Packet{PacketID: 20, Expiry: -1})
	pk, ok := in.TakeImmediate()
	require.True(t, ok)
	in.Untake(pk)
	pk, ok = in.NextImmediate()
	require.True(t, ok)
	require.Equal(t, uint16(20), pk.PacketID)
}
