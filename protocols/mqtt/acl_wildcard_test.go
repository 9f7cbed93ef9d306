package mqtt

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Issue 12, item 4: a deny rule refuses a subscription only when it covers
// the whole filter; a wildcard subscription that overlaps a deny rule is
// granted and each of its messages passes the read check at delivery.

// aclIssueRules is the rule set of the issue (and of the Paho suites' runs):
// deny subscribing to test/nosubscribe, allow everything else.
func aclIssueRules(c *Config) {
	c.ACL = []ACLRule{
		{Topic: "test/nosubscribe", Action: "subscribe", Permission: "deny"},
		{Topic: "#", Action: "all", Permission: "allow"},
	}
}

// aclNext returns the next message c receives, skipping the markers
// (marker/…) other clients' subscribers may see.
func aclNext(t *testing.T, c *secV5) *paho.Publish {
	t.Helper()
	for {
		select {
		case m := <-c.msgs:
			if !strings.HasPrefix(m.Topic, "marker/") {
				return m
			}
		case <-time.After(secWait):
			t.Fatal("no message")
			return nil
		}
	}
}

// aclNextV3 returns the next message c receives.
func aclNextV3(t *testing.T, c *secV3) mqtt3.Message {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(secWait):
		t.Fatal("v3: no message")
		return nil
	}
}

// aclDropped waits until the broker's ACLDropped counter reaches want and
// fails if it goes past it.
func aclDropped(t *testing.T, tb *testBroker, want int64) {
	t.Helper()
	secEventually(t, secWait, "ACLDropped reaches the expected count", func() bool { return tb.Stats().ACLDropped.Load() >= want })
	if got := tb.Stats().ACLDropped.Load(); got != want {
		t.Fatalf("ACLDropped = %d, want %d", got, want)
	}
}

// aclReadGrant returns the read grant of client id's subscription as the
// engine delivers a message on topic to it (false: not a subscriber).
func aclReadGrant(tb *testBroker, id, topic string) (uint64, bool) {
	sub, ok := tb.srv.Topics.Subscribers(topic).Subscriptions[id]
	return sub.ReadGrant, ok
}

func TestACLWildcardSubscriptionsV5(t *testing.T) {
	t.Parallel()
	tb := secStart(t, "", aclIssueRules)
	addr := tb.Addr("tcp")

	// Each filter on its own client, so each client's messages tell what
	// its one subscription let through.
	granted := []string{"#", "+/+", "test/#", "test/+", "$share/g/#", "$exclusive/test/#"}
	subs := make([]*secV5, len(granted))
	for i, f := range granted {
		subs[i] = secMustV5(t, addr, secID("mon"), "", "")
		if rc := subs[i].sub(t, f, 1); rc != 1 {
			t.Fatalf("subscribe %s: SUBACK %#x, want 0x01 (granted QoS 1)", f, rc)
		}
	}
	refused := secMustV5(t, addr, secID("refused"), "", "")
	for _, f := range []string{"test/nosubscribe", "$share/g/test/nosubscribe", "$exclusive/test/nosubscribe"} {
		if rc := refused.sub(t, f, 1); rc != 0x87 {
			t.Errorf("subscribe %s: SUBACK %#x, want 0x87", f, rc)
		}
	}
	plain := secMustV5(t, addr, secID("plain"), "", "")
	if rc := plain.sub(t, "other/#", 1); rc != 1 {
		t.Fatalf("subscribe other/#: %#x", rc)
	}

	pub := secMustV5(t, addr, secID("pub"), "", "")
	if rc := pub.pub(t, "test/nosubscribe", 1, "secret"); rc != 0 {
		t.Fatalf("publish test/nosubscribe (publishing is allowed): %#x", rc)
	}
	if rc := pub.pub(t, "test/other", 1, "ok"); rc != 0 {
		t.Fatalf("publish test/other: %#x", rc)
	}
	// One publisher, QoS 1, acknowledged one after the other: a subscriber
	// would get test/nosubscribe before test/other.
	for i, c := range subs {
		if m := aclNext(t, c); m.Topic != "test/other" || string(m.Payload) != "ok" {
			t.Errorf("subscriber of %s: first message on %s %q, want test/other \"ok\"", granted[i], m.Topic, m.Payload)
		}
	}
	aclDropped(t, tb, int64(len(granted)))

	// Only the subscriptions that overlap the deny rule are checked per
	// message; the others carry the current rules' read grant.
	rt := tb.rt.Load()
	for _, c := range subs[:4] {
		if g, ok := aclReadGrant(tb, c.ClientID(), "test/other"); !ok || g != 0 {
			t.Errorf("%s: read grant %#x (subscribed %v), want 0: its filter overlaps the deny rule", c.ClientID(), g, ok)
		}
	}
	if g, ok := aclReadGrant(tb, plain.ClientID(), "other/x"); !ok || g != rt.aclGrant || g == 0 {
		t.Errorf("other/#: read grant %#x (subscribed %v), want the rules' %#x", g, ok, rt.aclGrant)
	}
	pub.pub(t, "other/x", 1, "plain")
	plain.expect(t, "other/x", "plain", secWait)
	if got := tb.Stats().ACLDropped.Load(); got != int64(len(granted)) {
		t.Errorf("ACLDropped = %d after a message nobody is denied, want %d", got, len(granted))
	}
}

func TestACLWildcardRetainedV5AndV311(t *testing.T) {
	t.Parallel()
	tb := secStart(t, "", aclIssueRules)
	addr := tb.Addr("tcp")
	pub := secMustV5(t, addr, secID("pub"), "", "")
	for _, m := range []struct{ topic, payload string }{{"test/nosubscribe", "r-secret"}, {"test/other", "r-ok"}} {
		ctx, cancel := context.WithTimeout(context.Background(), secWait)
		_, err := pub.Publish(ctx, &paho.Publish{Topic: m.topic, QoS: 1, Retain: true, Payload: []byte(m.payload)})
		cancel()
		if err != nil {
			t.Fatalf("publish retained %s: %v", m.topic, err)
		}
	}
	aclDropped(t, tb, 0) // nobody subscribed yet

	// The retained messages go out right after the SUBACK, before the
	// subscriber's next packet is read: its own marker comes after them.
	v5 := secMustV5(t, addr, secID("mon5"), "", "")
	if rc := v5.sub(t, "#", 1); rc != 1 {
		t.Fatalf("v5 subscribe #: %#x", rc)
	}
	v5.pub(t, "marker/v5", 1, "end")
	var got []string
	for m := (*paho.Publish)(nil); m == nil || m.Topic != "marker/v5"; {
		select {
		case m = <-v5.msgs:
			got = append(got, m.Topic+"="+string(m.Payload))
		case <-time.After(secWait):
			t.Fatalf("v5: no marker; got %q", got)
		}
	}
	if len(got) != 2 || got[0] != "test/other=r-ok" {
		t.Errorf("v5 subscriber of # got %q, want [test/other=r-ok marker/v5=end]", got)
	}
	aclDropped(t, tb, 1)

	// MQTT 3.1.1: the refusal is 0x80; the same filtering applies.
	v3 := secMustV3(t, secV3Opts(tb.tcpURL(), secID("mon3")))
	if rc := v3.sub(t, "test/nosubscribe", 1); rc != 0x80 {
		t.Errorf("v3 subscribe test/nosubscribe: %#x, want 0x80", rc)
	}
	if rc := v3.sub(t, "#", 1); rc != 1 {
		t.Fatalf("v3 subscribe #: %#x, want 1", rc)
	}
	if tok := v3.Publish("marker/v3", 1, false, "end"); !tok.WaitTimeout(secWait) || tok.Error() != nil {
		t.Fatalf("v3 marker: %v", tok.Error())
	}
	got = got[:0]
	for {
		m := aclNextV3(t, v3)
		got = append(got, m.Topic()+"="+string(m.Payload()))
		if m.Topic() == "marker/v3" {
			break
		}
	}
	if len(got) != 2 || got[0] != "test/other=r-ok" {
		t.Errorf("v3 subscriber of # got %q, want [test/other=r-ok marker/v3=end]", got)
	}
	aclDropped(t, tb, 2)

	// Live messages too, to both.
	pub.pub(t, "test/nosubscribe", 1, "live-secret")
	pub.pub(t, "test/other", 1, "live-ok")
	if m := aclNext(t, v5); m.Topic != "test/other" || string(m.Payload) != "live-ok" {
		t.Errorf("v5: %s %q, want test/other \"live-ok\"", m.Topic, m.Payload)
	}
	if m := aclNextV3(t, v3); m.Topic() != "test/other" || string(m.Payload()) != "live-ok" {
		t.Errorf("v3: %s %q, want test/other \"live-ok\"", m.Topic(), m.Payload())
	}
	aclDropped(t, tb, 4)
}

// aclDialSession connects an MQTT 5 client that keeps its session.
func aclDialSession(t *testing.T, addr, id, user string, clean bool) (*secV5, bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, secWait)
	if err != nil {
		t.Fatal(err)
	}
	cp := &paho.Connect{ClientID: id, CleanStart: clean, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(300)}}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
		cp.Password, cp.PasswordFlag = []byte("pw"), true
	}
	c, ca, err := secConnectV5(t, conn, cp)
	if err != nil {
		t.Fatalf("connect %s as %q: %v", id, user, err)
	}
	return c, ca.SessionPresent
}

func TestACLPlaceholdersAndSessionTakeover(t *testing.T) {
	t.Parallel()
	hash := secHash(t, "pw")
	tb := secStart(t, "", func(c *Config) {
		c.Auth.Users = []User{{Username: "alice", PasswordHash: hash}, {Username: "bob", PasswordHash: hash}}
		c.ACL = []ACLRule{
			{Topic: "users/%u/private", Action: "subscribe", Permission: "deny"},
			{Topic: "devices/%c/secret", Action: "subscribe", Permission: "deny"},
			{Topic: "#", Action: "all", Permission: "allow"},
		}
	})
	addr := tb.Addr("tcp")
	pub := secMustV5(t, addr, secID("pub"), "", "")

	alice := secMustV5(t, addr, secID("alice"), "alice", "pw")
	for _, tc := range []struct {
		filter string
		want   byte
	}{
		{"users/alice/private", 0x87},
		{"users/bob/private", 1}, // bob's private, not alice's
		{"users/alice/#", 1},     // checked per message
	} {
		if rc := alice.sub(t, tc.filter, 1); rc != tc.want {
			t.Errorf("alice subscribe %s: %#x, want %#x", tc.filter, rc, tc.want)
		}
	}
	pub.pub(t, "users/alice/private", 1, "no")
	pub.pub(t, "users/alice/x", 1, "yes")
	pub.pub(t, "users/bob/private", 1, "bob's")
	for _, want := range []string{"users/alice/x=yes", "users/bob/private=bob's"} {
		if m := aclNext(t, alice); m.Topic+"="+string(m.Payload) != want {
			t.Errorf("alice got %s=%q, want %s", m.Topic, m.Payload, want)
		}
	}
	aclDropped(t, tb, 1)

	dev := secMustV5(t, addr, "dev-1", "", "")
	if rc := dev.sub(t, "devices/dev-1/secret", 1); rc != 0x87 {
		t.Errorf("dev-1 subscribe devices/dev-1/secret: %#x, want 0x87", rc)
	}
	if rc := dev.sub(t, "devices/+/secret", 1); rc != 1 {
		t.Fatalf("dev-1 subscribe devices/+/secret: %#x", rc)
	}
	pub.pub(t, "devices/dev-1/secret", 1, "own")
	pub.pub(t, "devices/dev-2/secret", 1, "other's")
	if m := aclNext(t, dev); m.Topic != "devices/dev-2/secret" {
		t.Errorf("dev-1 got %s %q, want devices/dev-2/secret", m.Topic, m.Payload)
	}
	aclDropped(t, tb, 2)

	// A session subscribed by bob to users/alice/# (readable whole for bob)
	// is taken over by alice: her deny rule applies to what it receives.
	id := secID("shared-dev")
	asBob, _ := aclDialSession(t, addr, id, "bob", true)
	if rc := asBob.sub(t, "users/alice/#", 1); rc != 1 {
		t.Fatalf("bob subscribe users/alice/#: %#x", rc)
	}
	if g, _ := aclReadGrant(tb, id, "users/alice/x"); g == 0 {
		t.Fatal("bob's users/alice/# has no read grant: nothing overlaps his deny rules")
	}
	_ = asBob.Disconnect(&paho.Disconnect{})
	secEventually(t, secWait, "bob's connection gone", func() bool {
		cl, ok := tb.srv.Clients.Get(id)
		return ok && cl.Closed()
	})
	asAlice, present := aclDialSession(t, addr, id, "alice", false)
	if !present {
		t.Fatal("session not present after reconnecting with clean start 0")
	}
	pub.pub(t, "users/alice/private", 1, "not for the session")
	pub.pub(t, "users/alice/y", 1, "for the session")
	if m := aclNext(t, asAlice); m.Topic != "users/alice/y" {
		t.Errorf("session taken over by alice got %s %q, want users/alice/y", m.Topic, m.Payload)
	}
	if g, _ := aclReadGrant(tb, id, "users/alice/x"); g != 0 {
		t.Errorf("inherited users/alice/# keeps read grant %#x under alice, want 0", g)
	}
}

func TestACLReloadRevokesReadGrants(t *testing.T) {
	t.Parallel()
	tb := secStart(t, "", func(c *Config) { c.ACL = []ACLRule{{Topic: "#", Action: "all", Permission: "allow"}} })
	addr := tb.Addr("tcp")
	sub := secMustV5(t, addr, secID("sub"), "", "")
	if rc := sub.sub(t, "plant/#", 1); rc != 1 {
		t.Fatalf("subscribe: %#x", rc)
	}
	old := tb.rt.Load().aclGrant
	if g, _ := aclReadGrant(tb, sub.ClientID(), "plant/a"); g != old {
		t.Fatalf("read grant %#x, want %#x", g, old)
	}

	// A reload that keeps the rules keeps the grants valid.
	if _, err := tb.Reload(tb.cfg); err != nil {
		t.Fatal(err)
	}
	if tb.rt.Load().aclGrant != old {
		t.Error("the same rules got another fingerprint")
	}

	cfg := tb.cfg
	cfg.ACL = append([]ACLRule{{Topic: "plant/secret", Action: "subscribe", Permission: "deny"}}, cfg.ACL...)
	if _, err := tb.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	pub := secMustV5(t, addr, secID("pub"), "", "")
	pub.pub(t, "plant/secret", 1, "no")
	pub.pub(t, "plant/a", 1, "yes")
	if m := aclNext(t, sub); m.Topic != "plant/a" {
		t.Errorf("after the reload: %s %q, want plant/a", m.Topic, m.Payload)
	}
	aclDropped(t, tb, 1)
}

func TestACLAutoSubscribeRetained(t *testing.T) {
	t.Parallel()
	tb := secStart(t, "", func(c *Config) {
		c.ACL = []ACLRule{
			{Topic: "alerts/secret", Action: "subscribe", Permission: "deny"},
			{Topic: "#", Action: "all", Permission: "allow"},
		}
		c.AutoSubscribe = []AutoSubscription{{Topic: "alerts/#", QoS: 1}}
	})
	addr := tb.Addr("tcp")
	pub := secMustV5(t, addr, secID("pub"), "", "")
	for _, m := range []struct{ topic, payload string }{{"alerts/secret", "r-secret"}, {"alerts/ok", "r-ok"}} {
		ctx, cancel := context.WithTimeout(context.Background(), secWait)
		_, err := pub.Publish(ctx, &paho.Publish{Topic: m.topic, QoS: 1, Retain: true, Payload: []byte(m.payload)})
		cancel()
		if err != nil {
			t.Fatalf("publish retained %s: %v", m.topic, err)
		}
	}
	// Auto-subscribed, the retained messages are sent before the client's
	// first packet is read: its marker comes after them.
	c := secMustV5(t, addr, secID("auto"), "", "")
	c.pub(t, "alerts/marker", 1, "end")
	var got []string
	for m := (*paho.Publish)(nil); m == nil || m.Topic != "alerts/marker"; {
		select {
		case m = <-c.msgs:
			got = append(got, m.Topic+"="+string(m.Payload))
		case <-time.After(secWait):
			t.Fatalf("no marker; got %q", got)
		}
	}
	if len(got) != 2 || got[0] != "alerts/ok=r-ok" {
		t.Errorf("auto-subscribed client got %q, want [alerts/ok=r-ok alerts/marker=end]", got)
	}
	aclDropped(t, tb, 2) // the publisher is auto-subscribed too: alerts/secret live, then retained
	pub.pub(t, "alerts/secret", 1, "live-secret")
	pub.pub(t, "alerts/ok", 1, "live-ok")
	if m := aclNext(t, c); m.Topic != "alerts/ok" || string(m.Payload) != "live-ok" {
		t.Errorf("live: %s %q, want alerts/ok \"live-ok\"", m.Topic, m.Payload)
	}
	aclDropped(t, tb, 4)
}

// TestACLSubscribeTables checks the tables of docs/broker.md (ACL).
func TestACLSubscribeTables(t *testing.T) {
	issue := DefaultConfig()
	aclIssueRules(&issue)
	users := DefaultConfig()
	users.ACL = []ACLRule{
		{Topic: "users/%u/private", Action: "subscribe", Permission: "deny"},
		{Topic: "users/%u/#", Action: "all", Permission: "allow"},
	}
	for _, tc := range []struct {
		cfg          Config
		user, filter string
		allow, check bool
	}{
		{issue, "", "test/nosubscribe", false, false},
		{issue, "", "#", true, true},
		{issue, "", "+/+", true, true},
		{issue, "", "test/#", true, true},
		{issue, "", "test/+", true, true},
		{issue, "", "other/#", true, false},
		{issue, "", "test/other", true, false},
		{issue, "", "+/other", true, false},
		{users, "alice", "users/alice/private", false, false},
		{users, "alice", "users/alice/#", true, true},
		{users, "alice", "#", true, true},
		{users, "alice", "users/bob/#", false, false},
		{users, "alice", "users/alice/x/+", true, false},
		{users, "", "#", false, false}, // anonymous: no %u rule matches
	} {
		rt := secCompile(t, tc.cfg)
		if allow, check := rt.aclSubscribe(tc.user, "c1", tc.filter); allow != tc.allow || check != tc.check {
			t.Errorf("%q subscribes %s: allow %v check %v, want %v %v", tc.user, tc.filter, allow, check, tc.allow, tc.check)
		}
	}
	// The read check of a topic name never asks for another check.
	rt := secCompile(t, users)
	for topic, want := range map[string]bool{"users/alice/private": false, "users/alice/x": true, "users/alice": true, "users/bob/x": false} {
		if allow, check := rt.aclSubscribe("alice", "c1", topic); allow != want || check {
			t.Errorf("read %s: allow %v check %v, want %v false", topic, allow, check, want)
		}
	}
	if secCompile(t, issue).aclGrant == 0 || secCompile(t, DefaultConfig()).aclGrant == 0 {
		t.Error("a read grant of 0 would mean no grant")
	}
}

// BenchmarkACLDeliveryCheck measures the read check of one delivery: for a
// subscription granted whole (one comparison) and for one that overlaps a
// deny rule (the rules evaluated).
func BenchmarkACLDeliveryCheck(b *testing.B) {
	tb := startBroker(b, "-", aclIssueRules)
	cl := tb.srv.NewClient(nil, "tcp", "bench", false)
	rt := tb.rt.Load()
	for _, bc := range []struct {
		name string
		sub  packets.Subscription
	}{
		{"granted", packets.Subscription{Filter: "test/+", ReadGrant: rt.aclGrant}},
		{"checked", packets.Subscription{Filter: "#"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !tb.hook.OnDeliveryACLCheck(cl, bc.sub, "test/other") {
					b.Fatal("denied")
				}
			}
		})
	}
}
