// fieldgate patch: tests for patch 19 (topic aliases, message expiry) in PATCHES.md.

package mqtt

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mochi-mqtt/server/v2/packets"
)

// readV5 decodes n MQTT 5 packets written to conn.
func readV5(t *testing.T, conn net.Conn, n int) []packets.Packet {
	t.Helper()
	var out []packets.Packet
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	r := bufio.NewReaderSize(conn, 1)
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
		pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 5}
		switch fh.Type {
		case packets.Publish:
			require.NoError(t, pk.PublishDecode(body))
		case packets.Disconnect:
			require.NoError(t, pk.DisconnectDecode(body))
		case packets.Puback:
			require.NoError(t, pk.PubackDecode(body))
		}
		out = append(out, pk)
	}
	return out
}

func v5Publish(topic string, qos byte, props packets.Properties) packets.Packet {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		Payload:     []byte("hello"),
		Properties:  props,
	}
	if qos > 0 {
		pk.PacketID = 7
	}
	return pk
}

// An empty topic with an alias the connection never defined is a protocol
// error (DISCONNECT 0x94), not a publish to nobody acknowledged as a success.
func TestInboundAliasUnknownDisconnects(t *testing.T) {
	s := newServer()
	cl, r, w := newTestClient()
	defer w.Close()
	cl.Properties.ProtocolVersion = 5

	done := make(chan error, 1)
	go func() {
		done <- s.processPacket(cl, v5Publish("", 1, packets.Properties{TopicAlias: 1, TopicAliasFlag: true}))
	}()
	got := readV5(t, r, 1)
	require.Equal(t, packets.Disconnect, got[0].FixedHeader.Type)
	require.Equal(t, packets.ErrTopicAliasInvalid.Code, got[0].ReasonCode)
	require.ErrorIs(t, <-done, packets.ErrTopicAliasInvalid)
}

// The alias is resolved before the ACL check, which sees the real topic.
func TestInboundAliasResolvedBeforeACL(t *testing.T) {
	s := New(&Options{Logger: logger})
	var checked []string
	require.NoError(t, s.AddHook(&aclRecorder{topics: &checked}, nil))
	cl, r, w := newTestClient()
	defer w.Close()
	cl.Properties.ProtocolVersion = 5
	cl.State.TopicAliases.Inbound.Set(3, "a/b/c")

	done := make(chan error, 1)
	go func() {
		done <- s.processPacket(cl, v5Publish("", 1, packets.Properties{TopicAlias: 3, TopicAliasFlag: true}))
	}()
	got := readV5(t, r, 1)
	require.NoError(t, <-done)
	require.Equal(t, packets.Puback, got[0].FixedHeader.Type)
	require.Equal(t, []string{"a/b/c"}, checked)
}

// aclRecorder records the topics of publish ACL checks and allows them.
type aclRecorder struct {
	HookBase
	topics *[]string
}

func (h *aclRecorder) ID() string { return "acl-recorder" }

func (h *aclRecorder) Provides(b byte) bool { return b == OnACLCheck }

func (h *aclRecorder) OnACLCheck(_ *Client, topic string, write bool) bool {
	if write {
		*h.topics = append(*h.topics, topic)
	}
	return true
}

// Server-to-client aliases are chosen as packets are written: the copy kept
// in flight has its full topic and no alias, so it can be resent on a new
// connection.
func TestOutboundAliasInflightKeepsTopic(t *testing.T) {
	s := newServer()
	cl, r, w := newTestClient()
	defer w.Close()
	cl.Properties.ProtocolVersion = 5
	cl.Properties.Props.TopicAliasMaximum = 5
	cl.State.TopicAliases.Outbound = NewOutboundTopicAliases(5)
	s.Clients.Add(cl)

	sub := packets.Subscription{Filter: "a/b/c", Qos: 1}
	errs := make(chan error, 2)
	go func() { // a write holds the client's lock until the pipe is read
		for i := 0; i < 2; i++ {
			_, err := s.publishToClient(cl, sub, v5Publish("a/b/c", 1, packets.Properties{}))
			errs <- err
		}
	}()
	got := readV5(t, r, 2)
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)
	require.Equal(t, "a/b/c", got[0].TopicName)
	require.Equal(t, uint16(1), got[0].Properties.TopicAlias)
	require.Equal(t, "", got[1].TopicName)
	require.Equal(t, uint16(1), got[1].Properties.TopicAlias)

	for _, pk := range cl.State.Inflight.GetAll(false) {
		require.Equal(t, "a/b/c", pk.TopicName)
		require.False(t, pk.Properties.TopicAliasFlag)
		require.Zero(t, pk.Properties.TopicAlias)
	}

	// A re-delivery (DUP) carries its topic and no alias.
	pk := cl.State.Inflight.GetAll(false)[0]
	pk.FixedHeader.Dup = true
	go func() { _ = cl.WritePacket(pk) }()
	got = readV5(t, r, 1)
	require.Equal(t, "a/b/c", got[0].TopicName)
	require.False(t, got[0].Properties.TopicAliasFlag)
}

// A PUBLISH that was to define an alias but could not be written (too large
// for the client) leaves the alias undefined: the next one sends the topic.
func TestOutboundAliasForgottenWhenNotWritten(t *testing.T) {
	cl, r, w := newTestClient()
	defer w.Close()
	cl.Properties.ProtocolVersion = 5
	cl.Properties.Props.TopicAliasMaximum = 5
	cl.Properties.Props.MaximumPacketSize = 64
	cl.State.TopicAliases.Outbound = NewOutboundTopicAliases(5)

	big := v5Publish("a/b/c", 0, packets.Properties{})
	big.Payload = make([]byte, 100)
	require.ErrorIs(t, cl.WritePacket(big), packets.ErrPacketTooLarge)

	go func() { _ = cl.WritePacket(v5Publish("a/b/c", 0, packets.Properties{})) }()
	got := readV5(t, r, 1)
	require.Equal(t, "a/b/c", got[0].TopicName)
	require.True(t, got[0].Properties.TopicAliasFlag)
}

// A message published without a Message Expiry Interval is delivered
// without one and does not get the server's maximum as its expiry; one with
// an interval gets the time left.
func TestMessageExpiryOnlyWhenSet(t *testing.T) {
	s := newServer()
	s.Options.Capabilities.MaximumMessageExpiryInterval = 3600
	cl, r, w := newTestClient()
	defer w.Close()
	cl.Properties.ProtocolVersion = 5
	s.Clients.Add(cl)
	require.True(t, s.Topics.Subscribe(cl.ID, packets.Subscription{Filter: "a/#"}))

	pub, pr, pw := newTestClient()
	defer pw.Close()
	pub.ID = "publisher"
	pub.Properties.ProtocolVersion = 5
	go func() { _, _ = io.Copy(io.Discard, pr) }()

	go func() {
		_ = s.processPacket(pub, v5Publish("a/none", 0, packets.Properties{}))
		_ = s.processPacket(pub, v5Publish("a/set", 0, packets.Properties{MessageExpiryInterval: 100}))
		_ = s.processPacket(pub, v5Publish("a/long", 0, packets.Properties{MessageExpiryInterval: 7200}))
	}()
	expiry := map[string]uint32{} // by topic: newTestClient may run two write loops
	for _, pk := range readV5(t, r, 3) {
		expiry[pk.TopicName] = pk.Properties.MessageExpiryInterval
	}
	require.Len(t, expiry, 3)
	require.Zero(t, expiry["a/none"])
	require.InDelta(t, 100, expiry["a/set"], 2)
	require.InDelta(t, 3600, expiry["a/long"], 2)

	// Without an expiry of its own, a message is still kept no longer than
	// the maximum.
	now := time.Now().Unix()
	cl.State.Inflight.Set(packets.Packet{ProtocolVersion: 5, PacketID: 9, FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, Created: now - 100})
	require.Equal(t, []uint16{9}, cl.ClearExpiredInflights(now, 50))
}
