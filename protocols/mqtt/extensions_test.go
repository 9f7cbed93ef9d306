package mqtt

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

func TestExtDelayedPublish(t *testing.T) {
	t.Parallel()
	tb := secStart(t, "", nil)
	addr := tb.Addr("tcp")
	sub := secMustV5(t, addr, secID("sub"), "", "")
	sub.sub(t, "a/b", 1)
	pub := secMustV5(t, addr, secID("pub"), "", "")

	start := time.Now()
	if rc := pub.pub(t, "$delayed/2/a/b", 1, "later"); rc != 0 {
		t.Fatalf("PUBACK of a delayed publish: %#x", rc)
	}
	m := sub.expect(t, "a/b", "later", 5*time.Second)
	d := time.Since(start)
	if d < 1500*time.Millisecond {
		t.Fatalf("delayed message delivered after %s, want about 2 s", d)
	}
	t.Logf("delivered after %s with QoS %d", d.Round(time.Millisecond), m.QoS)
	if m.QoS != 1 {
		t.Errorf("delayed QoS 1 message delivered at QoS %d", m.QoS)
	}
	sub.none(t, 200*time.Millisecond) // exactly once
	if n := tb.Stats().DelayedPending.Load(); n != 0 {
		t.Errorf("DelayedPending = %d after delivery", n)
	}
}

func TestExtDelayedInvalid(t *testing.T) {
	t.Parallel()
	tb := secStart(t, "", nil)
	addr := tb.Addr("tcp")
	sub := secMustV5(t, addr, secID("sub"), "", "")
	sub.sub(t, "x", 0)
	sub.sub(t, "$delayed/#", 0)
	sub.sub(t, "#", 0)
	pub := secMustV5(t, addr, secID("pub"), "", "")
	for _, topic := range []string{"$delayed/abc/x", "$delayed/0/x", "$delayed/4294968/x", "$delayed/-1/x", "$delayed/5"} {
		pub.pub(t, topic, 0, "bad")
	}
	secEventually(t, secWait, "DelayedInvalid counted", func() bool { return tb.Stats().DelayedInvalid.Load() == 5 })
	sub.none(t, 1500*time.Millisecond)
	if n := tb.Stats().DelayedPending.Load(); n != 0 {
		t.Errorf("DelayedPending = %d", n)
	}

	t.Run("QoS 1 is acknowledged", func(t *testing.T) {
		// A QoS 1 publisher must get an answer (the message is dropped, but
		// the publisher must not wait forever for its PUBACK).
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		pr, err := pub.Publish(ctx, &paho.Publish{Topic: "$delayed/abc/x", QoS: 1, Payload: []byte("bad1")})
		if pr == nil {
			t.Fatalf("regression: QoS 1 PUBLISH to $delayed/abc/x gets no PUBACK at all (%v); the packet id stays in use", err)
		}
		t.Logf("QoS 1 invalid delayed publish answered with %#x", pr.ReasonCode)
		sub.none(t, 300*time.Millisecond)
	})
}

func TestExtDelayedSurvivesRestart(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "broker.db")
	tb := secStart(t, path, nil)
	pub := secMustV5(t, tb.Addr("tcp"), secID("pub"), "", "")
	start := time.Now()
	if rc := pub.pub(t, "$delayed/3/x", 1, "persisted"); rc != 0 {
		t.Fatalf("PUBACK %#x", rc)
	}
	_ = pub.Disconnect(&paho.Disconnect{})
	secDrain(tb)
	tb.stop()

	tb2 := secStart(t, path, nil)
	if n := tb2.Stats().DelayedPending.Load(); n != 1 {
		t.Errorf("DelayedPending after restart = %d, want 1", n)
	}
	sub := secMustV5(t, tb2.Addr("tcp"), secID("sub"), "", "")
	sub.sub(t, "x", 1)
	if time.Since(start) > 2500*time.Millisecond {
		t.Fatalf("restart took %s; the message may be due before the subscriber is there", time.Since(start))
	}
	sub.expect(t, "x", "persisted", 6*time.Second)
	if d := time.Since(start); d < 2500*time.Millisecond {
		t.Errorf("delivered after %s, want about 3 s", d)
	}
	sub.none(t, 200*time.Millisecond)

	// Delivered messages are removed from the store: a third run has none.
	_ = sub.Disconnect(&paho.Disconnect{})
	secDrain(tb2)
	tb2.stop()
	tb3 := secStart(t, path, nil)
	if n := tb3.Stats().DelayedPending.Load(); n != 0 {
		t.Errorf("DelayedPending after a second restart = %d, want 0 (delivered message kept in the store)", n)
	}
}

func TestExtExclusive(t *testing.T) {
	t.Parallel()
	tb := secStart(t, "", nil)
	addr := tb.Addr("tcp")
	first := secMustV5(t, addr, secID("first"), "", "")
	second := secMustV5(t, addr, secID("second"), "", "")
	v3 := secMustV3(t, secV3Opts(tb.tcpURL(), secID("v3")))

	if rc := first.sub(t, "$exclusive/t/#", 1); rc != 1 {
		t.Fatalf("first exclusive subscribe: %#x, want 0x01", rc)
	}
	if rc := second.sub(t, "$exclusive/t/#", 1); rc != 0x97 {
		t.Fatalf("second exclusive subscribe: %#x, want 0x97", rc)
	}
	if rc := v3.sub(t, "$exclusive/t/#", 1); rc != 0x80 {
		t.Fatalf("v3 exclusive subscribe: %#x, want 0x80", rc)
	}
	// The owner may subscribe again (e.g. to change its QoS).
	if rc := first.sub(t, "$exclusive/t/#", 0); rc != 0 {
		t.Fatalf("owner re-subscribes: %#x, want 0x00", rc)
	}
	// A plain subscription to the same filter is not exclusive.
	if rc := second.sub(t, "t/plain", 0); rc != 0 {
		t.Fatalf("plain subscribe: %#x", rc)
	}
	second.pub(t, "t/1", 0, "one")
	first.expect(t, "t/1", "one", secWait)
	if tb.Stats().ExclusiveRefused.Load() != 2 {
		t.Errorf("ExclusiveRefused = %d, want 2", tb.Stats().ExclusiveRefused.Load())
	}

	ctx, cancel := context.WithTimeout(context.Background(), secWait)
	defer cancel()
	ua, err := first.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"$exclusive/t/#"}})
	if err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}
	if rc := second.sub(t, "$exclusive/t/#", 1); rc != 1 {
		t.Fatalf("second exclusive subscribe after the first left: %#x, want 0x01", rc)
	}
	second.pub(t, "t/2", 0, "two")
	second.expect(t, "t/2", "two", secWait)
	var bugs []string
	if ua.Reasons[0] != 0 {
		bugs = append(bugs, fmt.Sprintf("UNSUBACK of $exclusive/t/# is %#x (no subscription existed), want 0x00", ua.Reasons[0]))
	}
	select {
	case m := <-first.msgs:
		bugs = append(bugs, "after unsubscribing $exclusive/t/# the first client still receives "+m.Topic)
	case <-time.After(300 * time.Millisecond):
	}
	if len(bugs) > 0 {
		t.Fatal("regression: " + strings.Join(bugs, "; "))
	}
}

func TestExtExclusiveReleasedOnDisconnect(t *testing.T) {
	t.Parallel()
	tb := secStart(t, "", nil)
	addr := tb.Addr("tcp")
	first := secMustV5(t, addr, secID("first"), "", "")
	if rc := first.sub(t, "$exclusive/d", 0); rc != 0 {
		t.Fatalf("subscribe: %#x", rc)
	}
	_ = first.Disconnect(&paho.Disconnect{})
	second := secMustV5(t, addr, secID("second"), "", "")
	secEventually(t, secWait, "exclusive released", func() bool { return second.sub(t, "$exclusive/d", 0) == 0 })
}

func TestExtExclusiveDeniedByACL(t *testing.T) {
	t.Parallel()
	hash := secHash(t, "pw")
	tb := secStart(t, "", func(c *Config) {
		c.Auth.AllowAnonymous = false
		c.Auth.Users = []User{{Username: "alice", PasswordHash: hash}, {Username: "bob", PasswordHash: hash}}
		c.ACL = []ACLRule{{Username: "bob", Topic: "ex/#", Action: "all", Permission: "allow"}}
	})
	addr := tb.Addr("tcp")
	alice := secMustV5(t, addr, secID("alice"), "alice", "pw")
	bob := secMustV5(t, addr, secID("bob"), "bob", "pw")
	if rc := alice.sub(t, "$exclusive/ex/#", 0); rc != 0x87 {
		t.Fatalf("alice exclusive subscribe denied by ACL: %#x, want 0x87", rc)
	}
	if rc := bob.sub(t, "$exclusive/ex/#", 0); rc != 0 {
		t.Fatalf("regression: bob's exclusive subscribe after alice's was denied by the ACL: %#x, want 0x00 (alice holds the lock without a subscription)", rc)
	}
}

func TestExtAutoSubscribe(t *testing.T) {
	t.Parallel()
	tb := secStart(t, "", func(c *Config) {
		c.AutoSubscribe = []AutoSubscription{{Topic: "devices/%c/cmd", QoS: 1}, {Topic: "users/%u/inbox", QoS: 0}}
		c.Auth.Users = []User{{Username: "alice", PasswordHash: secHash(t, "pw")}}
	})
	addr := tb.Addr("tcp")
	id := secID("dev")
	c := secMustV5(t, addr, id, "", "")
	v3id := secID("dev3")
	v3 := secMustV3(t, secV3Opts(tb.tcpURL(), v3id).SetUsername("alice").SetPassword("pw"))
	other := secMustV5(t, addr, secID("ctl"), "", "")

	other.pub(t, "devices/"+id+"/cmd", 1, "reboot")
	m := c.expect(t, "devices/"+id+"/cmd", "reboot", secWait)
	if m.QoS != 1 {
		t.Errorf("auto-subscribed QoS 1: delivered at QoS %d", m.QoS)
	}
	other.pub(t, "devices/"+v3id+"/cmd", 1, "v3-reboot")
	v3.expect(t, "devices/"+v3id+"/cmd", "v3-reboot", secWait)
	other.pub(t, "users/alice/inbox", 0, "mail")
	v3.expect(t, "users/alice/inbox", "mail", secWait)
	// Only its own: the anonymous client is not subscribed to users/%u/…
	other.pub(t, "devices/someone-else/cmd", 1, "no")
	c.none(t, 300*time.Millisecond)
}

func TestExtRewrite(t *testing.T) {
	t.Parallel()
	tb := secStart(t, "", func(c *Config) {
		c.Rewrite = []RewriteRule{
			{Action: "all", Source: "x/#", Regex: "^x/(.+)$", Dest: "y/$1"},
			{Action: "publish", Source: "p/#", Regex: "^p/(.+)$", Dest: "q/$1"},
		}
	})
	addr := tb.Addr("tcp")
	ysub := secMustV5(t, addr, secID("y"), "", "")
	ysub.sub(t, "y/1", 1)
	pub := secMustV5(t, addr, secID("pub"), "", "")
	pub.pub(t, "x/1", 1, "rewritten")
	ysub.expect(t, "y/1", "rewritten", secWait)

	xsub := secMustV5(t, addr, secID("x"), "", "")
	xsub.sub(t, "x/2", 1) // becomes y/2
	pub.pub(t, "y/2", 1, "to-y2")
	m := xsub.expect(t, "y/2", "to-y2", secWait)
	t.Logf("subscriber of x/2 got the message on %s", m.Topic)

	// Publish-only rule: subscriptions to p/… are not rewritten.
	psub := secMustV5(t, addr, secID("p"), "", "")
	psub.sub(t, "p/#", 0)
	psub.sub(t, "q/#", 0)
	pub.pub(t, "p/a", 0, "pq")
	psub.expect(t, "q/a", "pq", secWait)
	psub.none(t, 200*time.Millisecond)

	// Unsubscribing the filter that was subscribed stops the deliveries.
	ctx, cancel := context.WithTimeout(context.Background(), secWait)
	defer cancel()
	if _, err := xsub.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"x/2"}}); err != nil {
		t.Fatalf("unsubscribe x/2: %v", err)
	}
	pub.pub(t, "y/2", 1, "after-unsub")
	select {
	case m := <-xsub.msgs:
		t.Fatalf("regression: after unsubscribing x/2 (rewritten to y/2 on subscribe) the client still receives %s %q", m.Topic, m.Payload)
	case <-time.After(300 * time.Millisecond):
	}
}
