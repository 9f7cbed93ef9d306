package mqtt

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// eventRows subscribes to an event topic on the bus and returns its JSON
// objects.
func eventRows(t *testing.T, tb *testBroker, topic string) <-chan map[string]any {
	t.Helper()
	out := make(chan map[string]any, 100)
	unsub, err := tb.Subscribe(topic, func(m bus.Message) {
		var ev map[string]any
		if err := json.Unmarshal(m.Payload, &ev); err != nil {
			t.Errorf("%s: %v", topic, err)
			return
		}
		if m.Origin != eventOrigin || m.Topic != topic {
			t.Errorf("event message origin %q topic %q", m.Origin, m.Topic)
		}
		select {
		case out <- ev:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unsub)
	return out
}

func nextEvent(t *testing.T, evs <-chan map[string]any, within time.Duration) map[string]any {
	t.Helper()
	select {
	case ev := <-evs:
		return ev
	case <-time.After(within):
		t.Fatalf("no event within %v", within)
		return nil
	}
}

// TestEventsNotForClients: no MQTT client may subscribe to $events/ (SUBACK
// 0x87, shared or not) or publish there (PUBACK 0x87), and a client that
// publishes there anyway reaches no event subscriber.
func TestEventsNotForClients(t *testing.T) {
	tb := startBroker(t, "-", nil)
	connected := eventRows(t, tb, EventClientConnected)
	c := connectV5(t, tb, "snoop", nil)
	if ev := nextEvent(t, connected, waitFor); ev["clientid"] != "snoop" || ev["listener"] != "tcp" || ev["proto_name"] != "MQTT" {
		t.Errorf("client_connected %v", ev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for _, f := range []string{"$events/#", EventClientConnected, "$share/g/$events/client_disconnected"} {
		sa, _ := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: f, QoS: 0}}})
		if sa == nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 0x87 {
			t.Errorf("subscribe %s: SUBACK %+v, want 0x87", f, sa)
		}
	}
	r, err := c.Publish(ctx, &paho.Publish{Topic: EventClientConnected, QoS: 1, Payload: []byte(`{"clientid":"fake"}`)})
	if err == nil && (r == nil || r.ReasonCode != 0x87) {
		t.Errorf("publish to %s: %+v, want 0x87", EventClientConnected, r)
	}
	select {
	case ev := <-connected:
		t.Errorf("a client's publish reached the event subscribers: %v", ev)
	case <-time.After(quietFor):
	}
}

// TestEventsDisconnectReasons: the reason of client_disconnected for a
// DISCONNECT, a dropped socket, a kick, a takeover and a keep alive
// timeout.
func TestEventsDisconnectReasons(t *testing.T) {
	tb := startBroker(t, "-", nil)
	evs := eventRows(t, tb, EventClientDisconnected)
	want := func(id, reason string) {
		t.Helper()
		ev := nextEvent(t, evs, waitFor)
		if ev["clientid"] != id || ev["reason"] != reason || ev["peerhost"] != "127.0.0.1" || ev["disconnected_at"] == nil {
			t.Errorf("client_disconnected %v, want client %s reason %s", ev, id, reason)
		}
	}
	connectV5(t, tb, "a", nil).close()
	want("a", "normal")
	connectV5(t, tb, "b", nil).kill()
	want("b", "tcp_closed")
	connectV5(t, tb, "c", nil)
	_ = tb.DisconnectClient("c")
	want("c", "kicked")
	connectV5(t, tb, "d", nil)
	connectV5(t, tb, "d", nil)
	want("d", "takenover")

	// keep alive 1 s, and a client that never pings
	conn := wireDial(t, tb, nil, "tcp")
	if _, err := conn.Write(wireConnectPkt(5, "e", 1, "", "")); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, evs, 3*waitFor)
	if ev["clientid"] != "e" || ev["reason"] != "keepalive_timeout" {
		t.Errorf("silent client: %v, want keepalive_timeout", ev)
	}
}

// TestEventsMessageExpired: a message that expires in an offline
// session's queue is a message_dropped event with reason expired.
func TestEventsMessageExpired(t *testing.T) {
	tb := startBroker(t, "-", nil)
	evs := eventRows(t, tb, EventMessageDropped)
	sub := connectV5(t, tb, "sleeper", func(cp *paho.Connect, _ *paho.ClientConfig) {
		cp.CleanStart = false
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: paho.Uint32(300)}
	})
	sub.sub(t, "exp/#", 1, nil)
	sub.close()
	pub := connectV5(t, tb, "pub", nil)
	pub.pub(t, &paho.Publish{Topic: "exp/1", QoS: 1, Payload: []byte("12345"),
		Properties: &paho.PublishProperties{MessageExpiry: paho.Uint32(1)}})
	ev := nextEvent(t, evs, 3*waitFor)
	if ev["clientid"] != "sleeper" || ev["from_clientid"] != "pub" || ev["topic"] != "exp/1" || ev["qos"] != 1.0 ||
		ev["reason"] != "expired" || ev["payload_size"] != 5.0 || ev["payload"] != nil {
		t.Errorf("message_dropped %v", ev)
	}
}

// TestEventsOnlyWhenSubscribed: with no event subscriber, nothing is built
// or counted; unsubscribing stops the events.
func TestEventsOnlyWhenSubscribed(t *testing.T) {
	tb := startBroker(t, "-", nil)
	connectV5(t, tb, "x", nil).close()
	if n := tb.Stats().Events.Load(); n != 0 {
		t.Fatalf("events with no subscriber: %d", n)
	}
	got := make(chan struct{}, 10)
	unsub, err := tb.Subscribe(EventClientConnected, func(bus.Message) { got <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	connectV5(t, tb, "y", nil)
	testwait.For(t, waitFor, "one event", func() bool { return tb.Stats().Events.Load() == 1 })
	unsub()
	connectV5(t, tb, "z", nil)
	if len(got) != 1 || tb.Stats().Events.Load() != 1 {
		t.Errorf("after unsubscribing: %d delivered, %d counted", len(got), tb.Stats().Events.Load())
	}
}

// TestEventsDroppedACLAndTooLarge: a message the subscriber may not read
// (its # overlaps a deny rule) and one over the maximum packet size the
// subscriber announced are message_dropped events (acl, too_large).
func TestEventsDroppedACLAndTooLarge(t *testing.T) {
	tb := startBroker(t, "-", func(c *Config) {
		c.ACL = []ACLRule{
			{Topic: "secret/#", Action: "subscribe", Permission: "deny"},
			{Topic: "#", Action: "all", Permission: "allow"},
		}
	})
	evs := eventRows(t, tb, EventMessageDropped)
	sub := connectV5(t, tb, "small", func(cp *paho.Connect, _ *paho.ClientConfig) {
		cp.Properties = &paho.ConnectProperties{MaximumPacketSize: paho.Uint32(64)}
	})
	sub.sub(t, "#", 0, nil)
	pub := connectV5(t, tb, "pub", nil)
	pub.pub(t, &paho.Publish{Topic: "secret/x", QoS: 0, Payload: []byte("s")})
	if ev := nextEvent(t, evs, waitFor); ev["clientid"] != "small" || ev["topic"] != "secret/x" || ev["reason"] != "acl" {
		t.Errorf("acl drop: %v", ev)
	}
	pub.pub(t, &paho.Publish{Topic: "big/x", QoS: 0, Payload: make([]byte, 100)})
	if ev := nextEvent(t, evs, waitFor); ev["clientid"] != "small" || ev["topic"] != "big/x" || ev["reason"] != "too_large" ||
		ev["payload_size"] != 100.0 || ev["from_clientid"] != "pub" {
		t.Errorf("too large: %v", ev)
	}
	pub.pub(t, &paho.Publish{Topic: "ok/x", QoS: 0, Payload: []byte("fits")})
	select {
	case m := <-sub.Msgs:
		if m.Topic != "ok/x" {
			t.Errorf("subscriber got %s, want only ok/x", m.Topic)
		}
	case <-time.After(waitFor):
		t.Error("the message that fits was not delivered")
	}
}
