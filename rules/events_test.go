package rules

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/testwait"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// The broker's $events/ sources, end to end: a real broker on loopback,
// the engine on it as its bus, real MQTT 5 clients connecting,
// disconnecting and being dropped messages, and rules whose republish
// action shows what they saw.

const eventsWait = 10 * time.Second

// startEventsBroker runs the real broker on a loopback port with small
// session queues (2 in flight + 1 queued), stopped at test end.
func startEventsBroker(t *testing.T) *mqtt.Broker {
	t.Helper()
	cfg := mqtt.DefaultConfig()
	cfg.Listeners.TCP.Address = "127.0.0.1:0"
	cfg.Listeners.TLS.Enabled = false
	cfg.Listeners.WebSocket.Enabled = false
	cfg.Limits.MaxInflight = 2
	cfg.Limits.MaxQueued = 1
	b, err := mqtt.New(cfg, mqtt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	testwait.NoError(t, eventsWait, func() error {
		if _, port, err := net.SplitHostPort(b.Addr("tcp")); err != nil || port == "0" {
			return fmt.Errorf("broker listener has no address: %q", b.Addr("tcp"))
		}
		return nil
	})
	return b
}

// startEventsEngine runs the engine with rules on the broker.
func startEventsEngine(t *testing.T, b *mqtt.Broker, cfg Config) *Engine {
	t.Helper()
	e, err := New(cfg, Options{Bus: b, GatewayID: "gw-events", StatsInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	testwait.For(t, eventsWait, "rules running", func() bool {
		for _, r := range e.Stats().Rules {
			if !r.Running {
				return false
			}
		}
		return true
	})
	return e
}

// collect subscribes to filter on the broker and returns the JSON objects
// published there.
func collect(t *testing.T, b *mqtt.Broker, filter string) <-chan map[string]any {
	t.Helper()
	out := make(chan map[string]any, 100)
	unsub, err := b.Subscribe(filter, func(m bus.Message) {
		var row map[string]any
		if err := json.Unmarshal(m.Payload, &row); err != nil {
			t.Errorf("%s: payload %q: %v", m.Topic, m.Payload, err)
			return
		}
		select {
		case out <- row:
		default:
			t.Errorf("%s: collector full", m.Topic)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unsub)
	return out
}

// next returns the next row whose clientid is id.
func next(t *testing.T, rows <-chan map[string]any, id string) map[string]any {
	t.Helper()
	deadline := time.After(eventsWait)
	for {
		select {
		case r := <-rows:
			if r["clientid"] == id {
				return r
			}
		case <-deadline:
			t.Fatalf("no output for client %s within %v", id, eventsWait)
		}
	}
}

// mqttClient connects an MQTT 5 client over TCP.
func mqttClient(t *testing.T, b *mqtt.Broker, id string, mutate func(*paho.Connect)) (*paho.Client, net.Conn) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", b.Addr("tcp"), eventsWait)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: conn, OnClientError: func(error) {}, PacketTimeout: eventsWait})
	cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}
	if mutate != nil {
		mutate(cp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), eventsWait)
	defer cancel()
	if _, err := c.Connect(ctx, cp); err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return c, conn
}

func republishTo(topic string) []Action {
	return []Action{{Republish: &RepublishAction{Topic: topic, QoS: 0}}}
}

// TestEventsClientConnectedDisconnected: client_connected and
// client_disconnected rules fire for a real client, with EMQX's fields and
// the disconnect reason (normal on DISCONNECT, tcp_closed on a dropped
// socket, kicked by the gateway).
func TestEventsClientConnectedDisconnected(t *testing.T) {
	b := startEventsBroker(t)
	startEventsEngine(t, b, Config{
		{ID: "on-connect", Enabled: true, Actions: republishTo("ev/connected"),
			SQL: `SELECT clientid, username, peerhost, proto_ver, keepalive, clean_start, connected_at, node, event FROM "$events/client_connected"`},
		{ID: "on-disconnect", Enabled: true, Actions: republishTo("ev/disconnected/${clientid}"),
			SQL: `SELECT clientid, reason FROM "$events/client_disconnected"`},
	})
	connected := collect(t, b, "ev/connected")
	disconnected := collect(t, b, "ev/disconnected/+")

	c, _ := mqttClient(t, b, "dev1", func(cp *paho.Connect) { cp.KeepAlive = 20 })
	r := next(t, connected, "dev1")
	if r["peerhost"] != "127.0.0.1" || r["proto_ver"] != 5.0 || r["keepalive"] != 20.0 || r["clean_start"] != true ||
		r["node"] != "gw-events" || r["event"] != "client.connected" || r["username"] != nil {
		t.Errorf("client_connected output %v", r)
	}
	if at, _ := r["connected_at"].(float64); time.Since(time.UnixMilli(int64(at))) > time.Minute {
		t.Errorf("connected_at %v", r["connected_at"])
	}
	if err := c.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		t.Fatal(err)
	}
	if r := next(t, disconnected, "dev1"); r["reason"] != "normal" || len(r) != 2 {
		t.Errorf("client_disconnected output %v, want {clientid dev1, reason normal}", r)
	}

	_, conn := mqttClient(t, b, "dev2", nil)
	next(t, connected, "dev2")
	_ = conn.Close()
	if r := next(t, disconnected, "dev2"); r["reason"] != "tcp_closed" {
		t.Errorf("socket closed: reason %v, want tcp_closed", r["reason"])
	}

	mqttClient(t, b, "dev3", nil)
	next(t, connected, "dev3")
	_ = b.DisconnectClient("dev3") // returns the reason code it sent (0x98)
	if r := next(t, disconnected, "dev3"); r["reason"] != "kicked" {
		t.Errorf("disconnected by the gateway: reason %v, want kicked", r["reason"])
	}
}

// TestEventsMessageDropped: a persistent session offline with a full queue
// drops its oldest messages; a message_dropped rule sees each, with the
// subscriber, topic, QoS, publisher, size and reason queue_full, and never
// the payload.
func TestEventsMessageDropped(t *testing.T) {
	b := startEventsBroker(t)
	e := startEventsEngine(t, b, Config{
		{ID: "on-drop", Enabled: true, Actions: republishTo("ev/dropped"),
			SQL: `SELECT clientid, from_clientid, topic, qos, reason, payload_size, payload FROM "$events/message_dropped" WHERE reason = 'queue_full'`},
	})
	dropped := collect(t, b, "ev/dropped")

	sub, _ := mqttClient(t, b, "sub1", func(cp *paho.Connect) {
		cp.CleanStart = false
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: paho.Uint32(300)}
	})
	ctx, cancel := context.WithTimeout(context.Background(), eventsWait)
	defer cancel()
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "q/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := sub.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		t.Fatal(err)
	}

	pub, _ := mqttClient(t, b, "pub1", nil)
	for i := range 5 { // 3 fit (2 in flight + 1 queued): 2 dropped
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "q/x", QoS: 1, Payload: fmt.Appendf(nil, "secret-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		r := next(t, dropped, "sub1")
		if r["from_clientid"] != "pub1" || r["topic"] != "q/x" || r["qos"] != 1.0 || r["reason"] != "queue_full" ||
			r["payload_size"] != 8.0 || r["payload"] != nil {
			t.Errorf("message_dropped output %v", r)
		}
	}
	testwait.For(t, eventsWait, "two drops counted", func() bool { return b.Stats().QueuedDropped.Load() == 2 })
	if st := e.Stats().Rules[0]; st.Passed != 2 || st.Dropped != 0 {
		t.Errorf("rule stats %+v, want 2 passed", st)
	}
}
