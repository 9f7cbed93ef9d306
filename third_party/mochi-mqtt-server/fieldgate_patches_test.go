// fieldgate patch: tests for the patches listed in PATCHES.md.

package mqtt

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
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

// testBudget is a PacketBudget with a limit that records its peak.
type testBudget struct {
	mu            sync.Mutex
	limit         int64
	used, peak    int64
	reserveCalled int
}

func (b *testBudget) Reserve(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reserveCalled++
	if b.limit > 0 && b.used+n > b.limit {
		return false
	}
	b.used += n
	b.peak = max(b.peak, b.used)
	return true
}

func (b *testBudget) Release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
}

func (b *testBudget) state() (used, peak int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.peak
}

// A body is read as it arrives (patch: memory bomb): a client announcing
// 256 MiB and sending 100 bytes holds one 64 KiB chunk, counted by the
// budget and released when the read ends.
func TestReadPacketBodyFollowsBytes(t *testing.T) {
	cl, r, _ := newTestClient()
	defer cl.Stop(errClientStop)
	budget := &testBudget{}
	cl.ops.options.PacketBudget = budget

	// PUBLISH, remaining length 268,435,455 (the largest), then 100 bytes.
	go func() {
		_, _ = r.Write([]byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F})
		_, _ = r.Write(make([]byte, 100))
	}()
	fh := new(packets.FixedHeader)
	require.NoError(t, cl.ReadFixedHeader(fh))
	require.Equal(t, 268435455, fh.Remaining)
	done := make(chan error, 1)
	go func() {
		_, err := cl.ReadPacket(fh)
		done <- err
	}()
	require.Eventually(t, func() bool { used, _ := budget.state(); return used == bodyChunk }, 2*time.Second, time.Millisecond)
	_ = r.Close()
	require.Error(t, <-done)
	used, peak := budget.state()
	require.Equal(t, int64(0), used)
	require.Equal(t, int64(bodyChunk), peak)
}

// A large body that does arrive is read whole, across the growth of its
// buffer; the budget held at most twice the body.
func TestReadPacketLargeBody(t *testing.T) {
	cl, r, _ := newTestClient()
	defer cl.Stop(errClientStop)
	budget := &testBudget{}
	cl.ops.options.PacketBudget = budget
	payload := make([]byte, 700_000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	body := append([]byte{0, 3, 'a', '/', 'b'}, payload...)
	go func() {
		var hdr bytes.Buffer
		hdr.WriteByte(0x30)
		n := len(body)
		for { // varint
			d := byte(n % 128)
			n /= 128
			if n > 0 {
				d |= 0x80
			}
			hdr.WriteByte(d)
			if n == 0 {
				break
			}
		}
		_, _ = r.Write(hdr.Bytes())
		for b := body; len(b) > 0; { // in uneven pieces
			k := min(len(b), 30_001)
			_, _ = r.Write(b[:k])
			b = b[k:]
		}
	}()
	fh := new(packets.FixedHeader)
	require.NoError(t, cl.ReadFixedHeader(fh))
	pk, err := cl.ReadPacket(fh)
	require.NoError(t, err)
	require.Equal(t, "a/b", pk.TopicName)
	require.Equal(t, payload, pk.Payload)
	used, peak := budget.state()
	require.Equal(t, int64(0), used)
	require.LessOrEqual(t, peak, int64(2*len(body)))
}

// A body the budget refuses ends the read with ErrPacketBudget.
func TestReadPacketBudgetRefused(t *testing.T) {
	cl, r, _ := newTestClient()
	defer cl.Stop(errClientStop)
	budget := &testBudget{limit: 100 << 10}
	cl.ops.options.PacketBudget = budget
	go func() {
		_, _ = r.Write([]byte{0x30, 0x80, 0x80, 0x10}) // 256 KiB
		_, _ = r.Write(make([]byte, 256<<10))
	}()
	fh := new(packets.FixedHeader)
	require.NoError(t, cl.ReadFixedHeader(fh))
	_, err := cl.ReadPacket(fh)
	require.ErrorIs(t, err, ErrPacketBudget)
	used, _ := budget.state()
	require.Equal(t, int64(0), used)
}

// The remaining length of issue 17 (`FF FF FF FF 80 00`) and non-minimal
// ones are refused by ReadFixedHeader.
func TestReadFixedHeaderMalformedLength(t *testing.T) {
	for _, raw := range [][]byte{
		{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x00},
		{0x10, 0x80, 0x00},
		{0x30, 0xFF, 0xFF, 0x00},
	} {
		raw := raw
		cl, r, _ := newTestClient()
		go func() { _, _ = r.Write(raw) }()
		fh := new(packets.FixedHeader)
		require.ErrorIs(t, cl.ReadFixedHeader(fh), packets.ErrMalformedVariableByteInteger, "% x", raw)
		cl.Stop(errClientStop)
		_ = r.Close()
	}
}

// The maximum packet size counts the whole packet, length bytes included
// (MQTT 5 Maximum Packet Size).
func TestReadFixedHeaderMaximumPacketSize(t *testing.T) {
	for _, tc := range []struct {
		remaining []byte
		ok        bool
	}{
		{[]byte{0x7D}, true},  // 1 + 1 + 125 = 127
		{[]byte{0x7E}, false}, // 128 > 127
	} {
		tc := tc
		cl, r, _ := newTestClient()
		cl.ops.options.Capabilities.MaximumPacketSize = 127
		go func() { _, _ = r.Write(append([]byte{0x30}, tc.remaining...)) }()
		err := cl.ReadFixedHeader(new(packets.FixedHeader))
		if tc.ok {
			require.NoError(t, err)
		} else {
			require.ErrorIs(t, err, packets.ErrPacketTooLarge)
		}
		cl.Stop(errClientStop)
		_ = r.Close()
	}
}

// Bad packets are logged with type and sizes only, never their contents
// (a second CONNECT's password, a payload), and rate-limited per client.
func TestBadPacketLogs(t *testing.T) {
	var out bytes.Buffer
	s := newServer()
	s.Log = slog.New(slog.NewTextHandler(&out, nil))
	s.hooks.Log = s.Log
	const secret = "hunter2-secret"
	for i := 0; i < 50; i++ {
		cl, _, _ := newTestClient()
		cl.ops = &ops{options: s.Options, info: s.Info, hooks: s.hooks, log: s.Log, logs: s.logs}
		cl.ID = "mallory"
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect, Remaining: 40}}
		pk.Connect = packets.ConnectParams{ClientIdentifier: "mallory", UsernameFlag: true, Username: []byte("u"),
			PasswordFlag: true, Password: []byte(secret), WillFlag: true, WillPayload: []byte(secret)}
		pk.Payload = []byte(secret)
		err := s.receivePacket(cl, pk)
		require.ErrorIs(t, err, packets.ErrProtocolViolationSecondConnect, "round %d", i)
		cl.Stop(errClientStop)
	}
	got := out.String()
	require.NotContains(t, got, secret)
	require.NotContains(t, got, fmt.Sprint([]byte(secret))[1:20])
	require.Equal(t, 1, strings.Count(got, "error processing packet"), got)
	require.Contains(t, got, "packet.type=Connect")
	require.Contains(t, got, "packet.remaining_length=40")

	// slog resolves the packet and its parts through LogValue.
	out.Reset()
	s.Log.Info("dump", "packet", pkWithSecret(secret), "connect", pkWithSecret(secret).Connect, "will", Will{Payload: []byte(secret), TopicName: "w"})
	require.NotContains(t, out.String(), secret)
}

func pkWithSecret(secret string) *packets.Packet {
	return &packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		Payload:     []byte(secret),
		Connect:     packets.ConnectParams{Password: []byte(secret), WillPayload: []byte(secret)},
		Properties:  packets.Properties{CorrelationData: []byte(secret)},
	}
}

func TestLogLimiter(t *testing.T) {
	l := newLogLimiter(time.Minute, 3)
	now := time.Unix(1000, 0)
	ok, _ := l.allow("a", now)
	require.True(t, ok)
	ok, _ = l.allow("a", now.Add(time.Second))
	require.False(t, ok) // one per key per window
	ok, n := l.allow("b", now.Add(2*time.Second))
	require.True(t, ok)
	require.Equal(t, 1, n) // reports what it held back
	ok, _ = l.allow("c", now.Add(3*time.Second))
	require.True(t, ok)
	ok, _ = l.allow("d", now.Add(4*time.Second))
	require.False(t, ok) // 3 lines per window in all
	ok, n = l.allow("a", now.Add(61*time.Second))
	require.True(t, ok) // next window
	require.Equal(t, 1, n)
	var nl *logLimiter
	ok, _ = nl.allow("x", now)
	require.True(t, ok)
}
