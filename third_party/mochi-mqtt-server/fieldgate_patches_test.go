// fieldgate patch: tests for the patches listed in PATCHES.md.

package mqtt

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/listeners"
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

// readPackets decodes n packets written to r.
func readPackets(t *testing.T, conn net.Conn, n int) []packets.Packet {
	t.Helper()
	var out []packets.Packet
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	r := bufio.NewReaderSize(conn, 1) // unbuffered enough: reads only what it needs
	for j := 0; j < n; j++ {
		b := make([]byte, 1)
		_, err := io.ReadFull(r, b)
		require.NoError(t, err)
		var fh packets.FixedHeader
		require.NoError(t, fh.Decode(b[0]))
		fh.Remaining, _, err = packets.DecodeLength(r)
		require.NoError(t, err)
		body := make([]byte, fh.Remaining)
		_, err = io.ReadFull(r, body)
		require.NoError(t, err)
		pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 4}
		switch fh.Type {
		case packets.Publish:
			require.NoError(t, pk.PublishDecode(body))
		case packets.Pubrel:
			require.NoError(t, pk.PubrelDecode(body))
		}
		out = append(out, pk)
	}
	return out
}

// Messages queued while the client is offline wait (they were never sent);
// on reconnect they leave in queue order, as first deliveries (DUP=0), as
// far as the receive maximum allows; only what was written before is resent
// with DUP=1 (patches: first delivery, resend).
func TestResendFirstDeliveryAndQuota(t *testing.T) {
	s := newServer()
	old, _, _ := newTestClient()
	old.Stop(nil) // offline
	old.Properties.ProtocolVersion = 4
	sub := packets.Subscription{Filter: "a/#", Qos: 1}

	// One message really in flight before the disconnect, then 4 queued offline.
	old.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a/0", PacketID: 1})
	old.State.Inflight.MarkSent(1)
	for i := 1; i <= 4; i++ {
		_, err := s.publishToClient(old, sub, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a/" + string(rune('0'+i))})
		require.ErrorIs(t, err, packets.CodeDisconnect)
	}
	require.Equal(t, 5, old.State.Inflight.Len())
	require.Equal(t, 4, old.State.Inflight.Waiting()) // queued offline: waiting, not in flight

	cl, r, w := newTestClient()
	defer w.Close()
	cl.Properties.ProtocolVersion = 4
	cl.State.Inflight = old.State.Inflight.Clone()
	cl.State.Inflight.ResetSendQuota(3) // receive maximum 3

	done := make(chan error, 1)
	go func() { done <- cl.ResendInflightMessages(true) }()
	got := readPackets(t, r, 3)
	require.NoError(t, <-done)
	var topics []string
	var dups []bool
	for _, pk := range got {
		topics = append(topics, pk.TopicName)
		dups = append(dups, pk.FixedHeader.Dup)
	}
	require.Equal(t, []string{"a/0", "a/1", "a/2"}, topics)
	require.Equal(t, []bool{true, false, false}, dups)
	require.Equal(t, 2, cl.State.Inflight.Waiting()) // the rest waits for quota

	// An acknowledgement frees quota: the next one leaves, DUP=0.
	require.NoError(t, s.processPacket(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: got[0].PacketID}))
	got = readPackets(t, r, 1)
	require.Equal(t, "a/3", got[0].TopicName)
	require.False(t, got[0].FixedHeader.Dup)
}

// Messages queued offline still expire while they wait.
func TestWaitingMessagesExpire(t *testing.T) {
	cl, _, _ := newTestClient()
	cl.State.Inflight.Set(packets.Packet{ProtocolVersion: 5, PacketID: 1, FixedHeader: packets.FixedHeader{Type: packets.Publish}, Expiry: 100})
	cl.State.Inflight.Set(packets.Packet{ProtocolVersion: 5, PacketID: 1, FixedHeader: packets.FixedHeader{Type: packets.Publish}, Expiry: -1})
	require.Equal(t, []uint16{1}, cl.ClearExpiredInflights(200, 0))
	require.Equal(t, 0, cl.State.Inflight.Waiting())
}

// A SUBSCRIBE or UNSUBSCRIBE whose packet id equals one of the server's
// outgoing ids is granted; only an inbound QoS 2 awaiting PUBREL holds a
// client id, and only MQTT 5 has 0x91 (patch: packet id spaces).
func TestSubscribePacketIDSpaces(t *testing.T) {
	for _, tc := range []struct {
		version byte
		inUse   byte // type of the inflight entry with id 15
		want    byte
	}{
		{4, packets.Publish, 1},
		{5, packets.Publish, 1},
		{5, packets.Pubrel, 1},
		{4, packets.Pubrec, 1},
		{5, packets.Pubrec, packets.ErrPacketIdentifierInUse.Code},
	} {
		s := newServer()
		cl, r, w := newTestClient()
		cl.Properties.ProtocolVersion = tc.version
		if tc.inUse == packets.Pubrec { // an inbound QoS 2 publish awaiting PUBREL
			cl.State.InboundQos2.Set(packets.Packet{PacketID: 15, FixedHeader: packets.FixedHeader{Type: tc.inUse}})
		} else {
			cl.State.Inflight.Set(packets.Packet{PacketID: 15, FixedHeader: packets.FixedHeader{Type: tc.inUse}})
		}
		go func() {
			_ = s.processPacket(cl, packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: tc.version,
				PacketID: 15, Filters: packets.Subscriptions{{Filter: "a/b", Qos: 1}},
			})
			_ = w.Close()
		}()
		buf, err := io.ReadAll(r)
		require.NoError(t, err)
		require.Equal(t, byte(packets.Suback<<4), buf[0])
		require.Equal(t, tc.want, buf[len(buf)-1], "v%d, entry type %d", tc.version, tc.inUse)
	}
}

// MQTT 3 has no DISCONNECT from the server: the client is only closed
// (patch: no v3 DISCONNECT).
func TestDisconnectClientV3(t *testing.T) {
	s := newServer()
	cl, r, w := newTestClient()
	cl.Properties.ProtocolVersion = 4
	go func() {
		err := s.DisconnectClient(cl, packets.ErrServerShuttingDown)
		require.ErrorIs(t, err, packets.ErrServerShuttingDown)
		_ = w.Close()
	}()
	buf, err := io.ReadAll(r)
	require.NoError(t, err)
	require.Empty(t, buf)
	require.True(t, cl.Closed())
}

// Keep alive 1 s: the deadline is 1.5 s away, not 1 s (patch: keep alive).
func TestKeepAliveDeadline(t *testing.T) {
	cl, r, w := newTestClient()
	defer r.Close()
	defer w.Close()
	start := time.Now()
	cl.refreshDeadline(1)
	_, err := w.Read(make([]byte, 1))
	require.Error(t, err)
	require.InDelta(t, 1500, time.Since(start).Milliseconds(), 300)
}

// The will keeps its MQTT 5 properties, through the store too (patch: will
// properties).
func TestWillProperties(t *testing.T) {
	cl, _, _ := newTestClient()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5}
	pk.Connect = packets.ConnectParams{
		ProtocolName: []byte("MQTT"), ClientIdentifier: "w", WillFlag: true, WillQos: 1,
		WillTopic: "w/t", WillPayload: []byte("gone"),
		WillProperties: packets.Properties{
			ContentType: "text/plain", ResponseTopic: "w/r", CorrelationData: []byte("c1"),
			MessageExpiryInterval: 30, PayloadFormat: 1, PayloadFormatFlag: true,
			User: []packets.UserProperty{{Key: "k", Val: "v"}},
		},
	}
	cl.ParseConnect("tcp", pk)
	w := Will(storage.ClientWill(cl.Properties.Will)) // round trip through the storage type
	out := w.Packet("w")
	require.Equal(t, packets.Publish, out.FixedHeader.Type)
	require.Equal(t, byte(1), out.FixedHeader.Qos)
	require.Equal(t, "w/t", out.TopicName)
	require.Equal(t, "w", out.Origin)
	p := out.Properties
	require.Equal(t, "text/plain", p.ContentType)
	require.Equal(t, "w/r", p.ResponseTopic)
	require.Equal(t, []byte("c1"), p.CorrelationData)
	require.Equal(t, uint32(30), p.MessageExpiryInterval)
	require.True(t, p.PayloadFormatFlag)
	require.Equal(t, byte(1), p.PayloadFormat)
	require.Equal(t, []packets.UserProperty{{Key: "k", Val: "v"}}, p.User)
}

// No client is counted once CloseAll has begun, so ClientsWg.Add never races
// ClientsWg.Wait (patch: shutdown race).
func TestAttachClientAfterClose(t *testing.T) {
	s := newServer()
	s.Listeners.CloseAll(func(string) {})
	cl, r, _ := newTestClient()
	defer r.Close()
	require.ErrorIs(t, s.attachClient(cl, "tcp"), packets.ErrServerShuttingDown)
	require.True(t, cl.Closed())

	l := listeners.New()
	require.True(t, l.AddClient())
	done := make(chan struct{})
	go func() { l.CloseAll(func(string) {}); close(done) }()
	l.ClientDone()
	<-done
	require.False(t, l.AddClient())
}

// A zero-length password with the password flag is valid (patch: empty
// password).
func TestConnectEmptyPassword(t *testing.T) {
	for _, v := range []byte{4, 5} {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: v}
		pk.Connect = packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "c", Clean: true,
			UsernameFlag: true, Username: []byte("u"), PasswordFlag: true, Password: []byte{}}
		require.Equal(t, packets.CodeSuccess, pk.ConnectValidate())
		require.True(t, pk.Copy(false).Connect.PasswordFlag)
	}
}
