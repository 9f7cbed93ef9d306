package mqtt

import (
	"bufio"
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mochi-mqtt/server/v2/packets"
)

// fieldgate patch: tests for patches 20 (delivery ACL) and 21 (keep alive
// warning at the minimum) in PATCHES.md.

// deliveryHook allows subscribing and publishing, and lets a message through
// at delivery when its subscription carries read grant 7 or its topic is not
// "a/deny". It records the subscriptions it was asked about.
type deliveryHook struct {
	HookBase
	mu   sync.Mutex
	seen []packets.Subscription
}

func (h *deliveryHook) ID() string { return "delivery-acl" }

func (h *deliveryHook) Provides(b byte) bool {
	return b == OnACLCheck || b == OnDeliveryACLCheck || b == OnConnectAuthenticate
}

func (h *deliveryHook) OnConnectAuthenticate(*Client, packets.Packet) bool { return true }
func (h *deliveryHook) OnACLCheck(*Client, string, bool) bool              { return true }

func (h *deliveryHook) OnDeliveryACLCheck(cl *Client, sub packets.Subscription, topic string) bool {
	h.mu.Lock()
	h.seen = append(h.seen, sub)
	h.mu.Unlock()
	return sub.ReadGrant == 7 || topic != "a/deny"
}

func (h *deliveryHook) calls() []packets.Subscription {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]packets.Subscription(nil), h.seen...)
}

func newDeliveryServer(t *testing.T, hook Hook) *Server {
	t.Helper()
	cc := NewDefaultServerCapabilities()
	cc.MaximumMessageExpiryInterval = 0
	s := New(&Options{Logger: logger, Capabilities: cc})
	require.NoError(t, s.AddHook(hook, nil))
	return s
}

func TestDeliveryACLCheckSeesTheSubscription(t *testing.T) {
	h := new(deliveryHook)
	s := newDeliveryServer(t, h)
	cl, _, _ := newTestClient()
	cl.Net.Conn = nil // offline: a QoS 0 message is refused with CodeDisconnect after the ACL
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/deny"}

	_, err := s.publishToClient(cl, packets.Subscription{Filter: "a/+"}, pk)
	require.ErrorIs(t, err, packets.ErrNotAuthorized)
	_, err = s.publishToClient(cl, packets.Subscription{Filter: "a/#", ReadGrant: 7}, pk)
	require.ErrorIs(t, err, packets.CodeDisconnect, "granted: past the ACL")
	pk.TopicName = "a/ok"
	_, err = s.publishToClient(cl, packets.Subscription{Filter: "a/+"}, pk)
	require.ErrorIs(t, err, packets.CodeDisconnect)

	seen := h.calls()
	require.Len(t, seen, 3)
	require.Equal(t, "a/+", seen[0].Filter)
	require.Equal(t, uint64(7), seen[1].ReadGrant)
}

func TestDeliveryACLCheckFallsBackToOnACLCheck(t *testing.T) {
	cl, _, _ := newTestClient()
	cl.Net.Conn = nil
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/b"}

	allow := newDeliveryServer(t, new(AllowHook)) // provides OnACLCheck only
	_, err := allow.publishToClient(cl, packets.Subscription{Filter: "a/b"}, pk)
	require.ErrorIs(t, err, packets.CodeDisconnect)

	deny := newDeliveryServer(t, new(DenyHook))
	_, err = deny.publishToClient(cl, packets.Subscription{Filter: "a/b", ReadGrant: 7}, pk)
	require.ErrorIs(t, err, packets.ErrNotAuthorized, "a read grant means nothing without a hook that reads it")
}

func TestDeliveryACLMergeKeepsReadGrant(t *testing.T) {
	checked := packets.Subscription{Filter: "#"}
	whole := packets.Subscription{Filter: "a/+", ReadGrant: 7}
	require.Equal(t, uint64(7), checked.Merge(whole).ReadGrant)
	require.Equal(t, uint64(7), whole.Merge(checked).ReadGrant)
	require.Equal(t, uint64(0), checked.Merge(packets.Subscription{Filter: "+/b"}).ReadGrant)

	// Through the index: one client, two filters matching a/deny.
	h := new(deliveryHook)
	s := newDeliveryServer(t, h)
	s.Topics.Subscribe("cl", packets.Subscription{Filter: "#"})
	s.Topics.Subscribe("cl", packets.Subscription{Filter: "a/+", ReadGrant: 7})
	subs := s.Topics.Subscribers("a/deny")
	require.Equal(t, uint64(7), subs.Subscriptions["cl"].ReadGrant)
}

func TestDeliveryACLRetainedOnSubscribe(t *testing.T) {
	h := new(deliveryHook)
	s := newDeliveryServer(t, h)
	cl, _, _ := newTestClient()
	cl.Net.Conn = nil
	for _, topic := range []string{"a/deny", "a/ok"} {
		s.retainMessage(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, TopicName: topic, Payload: []byte("x")})
	}
	s.publishRetainedToClient(cl, packets.Subscription{Filter: "a/#"}, false)
	seen := h.calls()
	require.Len(t, seen, 2, "each retained message passes the delivery check")
	for _, sub := range seen {
		require.Equal(t, "a/#", sub.Filter)
		require.True(t, sub.FwdRetainedFlag)
	}
}

func TestDeliveryACLInheritedSessionLosesReadGrant(t *testing.T) {
	s := newDeliveryServer(t, new(deliveryHook))
	existing, _, _ := newTestClient()
	existing.Net.Conn = nil
	existing.ID = "dev"
	sub := packets.Subscription{Filter: "a/#", ReadGrant: 7}
	existing.State.Subscriptions.Add(sub.Filter, sub)
	s.Topics.Subscribe(existing.ID, sub)
	s.Clients.Add(existing)

	cl, _, _ := newTestClient()
	cl.ID = "dev"
	cl.Properties.ProtocolVersion = 5
	require.True(t, s.inheritClientSession(packets.Packet{Connect: packets.ConnectParams{ClientIdentifier: "dev"}}, cl))
	got, ok := cl.State.Subscriptions.Get("a/#")
	require.True(t, ok)
	require.Equal(t, uint64(0), got.ReadGrant, "the grant belonged to the previous connection")
	require.Equal(t, uint64(0), s.Topics.Subscribers("a/b").Subscriptions["dev"].ReadGrant)
}

func TestKeepaliveWarningOnlyBelowMinimum(t *testing.T) {
	for _, tc := range []struct {
		keepalive uint16
		warn      bool
	}{
		{0, false},
		{1, true},
		{minimumKeepalive - 1, true},
		{minimumKeepalive, false},
		{minimumKeepalive + 1, false},
		{60, false},
	} {
		cl, _, _ := newTestClient()
		var b bytes.Buffer
		x := bufio.NewWriter(&b)
		cl.ops.log = slog.New(slog.NewTextHandler(x, nil))
		cl.ParseConnect("tcp1", packets.Packet{ProtocolVersion: 4, Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Keepalive: tc.keepalive, ClientIdentifier: "dev-7",
		}})
		require.NoError(t, x.Flush())
		out := b.String()
		require.Equal(t, tc.warn, strings.Contains(out, ErrMinimumKeepalive.Error()), "keepalive %d: %q", tc.keepalive, out)
		if tc.warn {
			require.Contains(t, out, "client=dev-7")
			require.Contains(t, out, "minimum=5")
		}
	}
}
