package mqtt

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldgate/fieldgate/bus"
)

// Tests of in-process sessions (session.go), the way the MQTT-SN and CoAP
// gateways connect their devices: each test has a real MQTT client on the
// other side.

var deviceAddr = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 40000}

func sessionConnect(t *testing.T, tb *testBroker, o SessionOptions) *Session {
	t.Helper()
	if o.Listener == "" {
		o.Listener = "mqttsn"
	}
	if o.Remote == nil {
		o.Remote = deviceAddr
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	s, err := tb.Connect(ctx, o)
	if err != nil {
		t.Fatalf("connect %s: %v", o.ClientID, err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestSessionPublishAllQoS(t *testing.T) {
	tb := startBroker(t, "-", nil)
	sub := connectV5(t, tb, "watcher", nil)
	sub.sub(t, "dev/#", 2, nil)
	s := sessionConnect(t, tb, SessionOptions{ClientID: "sn-1", CleanStart: true})
	ctx := context.Background()
	for qos := byte(0); qos <= 2; qos++ {
		if err := s.Publish(ctx, bus.Message{Topic: "dev/t", Payload: []byte{'0' + qos}, QoS: qos, ContentType: "text/plain"}); err != nil {
			t.Fatalf("publish qos %d: %v", qos, err)
		}
		got := recv(t, sub.Msgs, waitFor, "message")
		if string(got.Payload) != string('0'+qos) || got.QoS != qos {
			t.Fatalf("got %q qos %d, want qos %d", got.Payload, got.QoS, qos)
		}
		if got.Properties.ContentType != "text/plain" {
			t.Fatalf("content type %q", got.Properties.ContentType)
		}
	}
}

func TestSessionReceivesAndAcks(t *testing.T) {
	tb := startBroker(t, "-", nil)
	got := make(chan Delivery, 16)
	s := sessionConnect(t, tb, SessionOptions{ClientID: "sn-rx", CleanStart: true, OnMessage: func(d Delivery) { got <- d }})
	ctx := context.Background()
	if q, err := s.Subscribe(ctx, "cmd/+", 2); err != nil || q != 2 {
		t.Fatalf("subscribe: %d %v", q, err)
	}
	pub := connectV5(t, tb, "pub", nil)
	for qos := byte(0); qos <= 2; qos++ {
		pub.pub(t, &paho.Publish{Topic: "cmd/x", QoS: qos, Payload: []byte{'a' + qos}})
		d := recv(t, got, waitFor, "delivery")
		if d.QoS != qos || string(d.Payload) != string('a'+qos) {
			t.Fatalf("delivery %+v", d)
		}
		d.Ack()
	}
	// Everything acknowledged: nothing left in flight in the broker.
	cl, ok := tb.srv.Clients.Get("sn-rx")
	if !ok {
		t.Fatal("session not in the engine")
	}
	secEventually(t, waitFor, "inflight drained", func() bool { return cl.State.Inflight.Len() == 0 })
	if err := s.Unsubscribe(ctx, "cmd/+"); err != nil {
		t.Fatal(err)
	}
	pub.pub(t, &paho.Publish{Topic: "cmd/x", QoS: 1, Payload: []byte("late")})
	none(t, got, quietFor, "delivery after unsubscribe")
}

func TestSessionUnackedRedeliveredToPersistentSession(t *testing.T) {
	tb := startBroker(t, "", nil)
	got := make(chan Delivery, 16)
	o := SessionOptions{ClientID: "sleepy", SessionExpiry: 3600, OnMessage: func(d Delivery) { got <- d }}
	s := sessionConnect(t, tb, o)
	if _, err := s.Subscribe(context.Background(), "cmd/#", 1); err != nil {
		t.Fatal(err)
	}
	pub := connectV5(t, tb, "pub", nil)
	pub.pub(t, &paho.Publish{Topic: "cmd/a", QoS: 1, Payload: []byte("one")})
	recv(t, got, waitFor, "first delivery") // not acknowledged
	if err := s.Disconnect(false); err != nil {
		t.Fatal(err)
	}
	pub.pub(t, &paho.Publish{Topic: "cmd/a", QoS: 1, Payload: []byte("two")})

	s2 := sessionConnect(t, tb, o)
	if !s2.SessionPresent() {
		t.Fatal("session not resumed")
	}
	d := recv(t, got, waitFor, "redelivery")
	if string(d.Payload) != "one" || !d.Dup {
		t.Fatalf("first after resume: %q dup=%v", d.Payload, d.Dup)
	}
	d.Ack()
	d = recv(t, got, waitFor, "queued")
	if string(d.Payload) != "two" {
		t.Fatalf("second after resume: %q", d.Payload)
	}
	d.Ack()
}

func TestSessionAuthAndACL(t *testing.T) {
	tb := startBroker(t, "-", func(c *Config) {
		c.Auth.AllowAnonymous = false
		c.Auth.Users = []User{{Username: "meter", PasswordHash: secHash(t, "s3cret")}}
		c.ACL = []ACLRule{
			{Username: "meter", Topic: "meters/%c/#", Action: "all", Permission: "allow"},
			{Username: "sn-user", Topic: "sn/#", Action: "all", Permission: "allow"},
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, err := tb.Connect(ctx, SessionOptions{Listener: "coap", Remote: deviceAddr, ClientID: "m1", Username: "meter", Password: []byte("wrong")})
	if r := bus.RefusalOf(err); r == nil || r.Code != 0x86 {
		t.Fatalf("bad password: %v, want refusal 0x86", err)
	}
	_, err = tb.Connect(ctx, SessionOptions{Listener: "coap", Remote: deviceAddr, ClientID: "anon"})
	if r := bus.RefusalOf(err); r == nil || r.Code != 0x86 {
		t.Fatalf("anonymous: %v, want refusal 0x86", err)
	}
	s := sessionConnect(t, tb, SessionOptions{Listener: "coap", ClientID: "m1", Username: "meter", Password: []byte("s3cret")})
	if err := s.Publish(ctx, bus.Message{Topic: "meters/m1/kwh", QoS: 1, Payload: []byte("1")}); err != nil {
		t.Fatalf("allowed publish: %v", err)
	}
	err = s.Publish(ctx, bus.Message{Topic: "meters/m2/kwh", QoS: 1, Payload: []byte("1")})
	if r := bus.RefusalOf(err); r == nil || r.Code != 0x87 {
		t.Fatalf("denied publish: %v, want refusal 0x87", err)
	}
	_, err = s.Subscribe(ctx, "other/#", 1)
	if r := bus.RefusalOf(err); r == nil || r.Code != 0x87 {
		t.Fatalf("denied subscribe: %v, want refusal 0x87", err)
	}
	// Trusted: the gateway vouches for the username, the ACL still applies.
	sn := sessionConnect(t, tb, SessionOptions{ClientID: "sn-dev", Username: "sn-user", Trusted: true})
	if err := sn.Publish(ctx, bus.Message{Topic: "sn/x", QoS: 1}); err != nil {
		t.Fatalf("trusted allowed publish: %v", err)
	}
	if r := bus.RefusalOf(sn.Publish(ctx, bus.Message{Topic: "meters/x", QoS: 1})); r == nil || r.Code != 0x87 {
		t.Fatal("trusted session escaped the ACL")
	}
}

func TestSessionBannedAddress(t *testing.T) {
	tb := startBroker(t, "-", func(c *Config) { c.Banned.CIDRs = []string{"127.0.0.9/32"} })
	_, err := tb.Connect(context.Background(), SessionOptions{Listener: "mqttsn", Remote: deviceAddr, ClientID: "x"})
	if r := bus.RefusalOf(err); r == nil || r.Code != 0x8A {
		t.Fatalf("banned: %v", err)
	}
}

func TestSessionWill(t *testing.T) {
	tb := startBroker(t, "-", nil)
	w := connectV5(t, tb, "watcher", nil)
	w.sub(t, "wills/#", 1, nil)

	// Lost device: the will set at connect is published.
	s := sessionConnect(t, tb, SessionOptions{ClientID: "d1", Will: &Will{Topic: "wills/d1", Payload: []byte("gone"), QoS: 1}})
	s.Close()
	if m := recv(t, w.Msgs, waitFor, "will of a lost device"); m.Topic != "wills/d1" || string(m.Payload) != "gone" {
		t.Fatalf("will %s %q", m.Topic, m.Payload)
	}

	// Clean disconnect: no will. Disconnect with will: the replaced will.
	s = sessionConnect(t, tb, SessionOptions{ClientID: "d2", Will: &Will{Topic: "wills/d2", Payload: []byte("x")}})
	if err := s.Disconnect(false); err != nil {
		t.Fatal(err)
	}
	none(t, w.Msgs, quietFor, "will after a clean disconnect")

	// No will at connect, set later (MQTT-SN WILLTOPICUPD), then replaced.
	s = sessionConnect(t, tb, SessionOptions{ClientID: "d3"})
	s.SetWill(&Will{Topic: "wills/d3", Payload: []byte("first")})
	s.SetWill(&Will{Topic: "wills/d3", Payload: []byte("second"), QoS: 1})
	if err := s.Disconnect(true); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, w.Msgs, waitFor, "updated will"); string(m.Payload) != "second" {
		t.Fatalf("will %q", m.Payload)
	}

	// A device without a will publishes nothing when lost.
	s = sessionConnect(t, tb, SessionOptions{ClientID: "d4"})
	s.Close()
	none(t, w.Msgs, quietFor, "will of a device without one")
}

func TestSessionEndsOnTakeoverAndShutdown(t *testing.T) {
	tb := startBroker(t, "-", nil)
	s1 := sessionConnect(t, tb, SessionOptions{ClientID: "same"})
	s2 := sessionConnect(t, tb, SessionOptions{ClientID: "same"})
	select {
	case <-s1.Done():
	case <-time.After(waitFor):
		t.Fatal("first session not ended by takeover")
	}
	if s1.Err() == nil {
		t.Fatal("no reason for the end")
	}
	if err := s1.Publish(context.Background(), bus.Message{Topic: "a", QoS: 1}); err == nil {
		t.Fatal("publish on an ended session succeeded")
	}
	tb.cancel()
	select {
	case <-s2.Done():
	case <-time.After(waitFor):
		t.Fatal("session outlived the broker")
	}
}
