package mqttsn

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

func TestPublishAllQoS(t *testing.T) {
	e := startEnv(t, nil, nil)
	msgs := e.watch(t, "#")
	c := e.dial(t)
	c.connect("pub-1", true, 60)
	id := c.register("sensors/temp", 1)

	// QoS 0, lenient: a MsgId that is not 0.
	c.send(Packet{Type: TypePublish, Flags: Flags{QoS: 0}, TopicID: id, MsgID: 77, Data: []byte("q0")})
	if m := next(t, msgs); m.Topic != "sensors/temp" || string(m.Payload) != "q0" || m.QoS != 0 {
		t.Fatalf("QoS 0: %+v", m)
	}
	// QoS 1: PUBACK after the broker has it.
	c.send(Packet{Type: TypePublish, Flags: Flags{QoS: 1, Retain: true}, TopicID: id, MsgID: 2, Data: []byte("q1")})
	ack := c.expect(TypePuback)
	if ack.ReturnCode != Accepted || ack.MsgID != 2 || ack.TopicID != id {
		t.Fatalf("PUBACK %+v", ack)
	}
	if m := next(t, msgs); string(m.Payload) != "q1" || m.QoS != 1 || !m.Retain {
		t.Fatalf("QoS 1: %+v", m)
	}
	// QoS 2: PUBREC, a duplicate PUBLISH is not published twice, PUBREL → PUBCOMP.
	pub := Packet{Type: TypePublish, Flags: Flags{QoS: 2, TopicIDType: TopicShort}, TopicID: ShortTopicID("ab"), MsgID: 3, Data: []byte("q2")}
	c.send(pub)
	c.expect(TypePubrec)
	pub.Flags.DUP = true
	c.send(pub)
	c.expect(TypePubrec)
	c.send(Packet{Type: TypePubrel, MsgID: 3})
	if got := c.expect(TypePubcomp); got.MsgID != 3 {
		t.Fatalf("PUBCOMP %+v", got)
	}
	if m := next(t, msgs); m.Topic != "ab" || string(m.Payload) != "q2" || m.QoS != 2 {
		t.Fatalf("QoS 2: %+v", m)
	}
	// Predefined topic id.
	c.send(Packet{Type: TypePublish, Flags: Flags{QoS: 1, TopicIDType: TopicPredefined}, TopicID: 2, MsgID: 4, Data: []byte("p")})
	c.expect(TypePuback)
	if m := next(t, msgs); m.Topic != "predef/two" {
		t.Fatalf("predefined: %+v", m)
	}
	select {
	case m := <-msgs:
		t.Fatalf("published twice: %+v", m)
	default:
	}
	// Unknown topic id: PUBACK 0x02, for QoS 0 too.
	for _, qos := range []int8{0, 1} {
		c.send(Packet{Type: TypePublish, Flags: Flags{QoS: qos}, TopicID: 999, MsgID: 5, Data: []byte("x")})
		if ack := c.expect(TypePuback); ack.ReturnCode != RejectedInvalidTopic || ack.TopicID != 999 {
			t.Fatalf("unknown topic id, QoS %d: %+v", qos, ack)
		}
	}
	if s := e.g.Stats(); s.PublishesIn != 4 || s.ClientsConnected != 1 || s.Drops[DropInvalidTopic] != 2 {
		t.Fatalf("stats %+v", s)
	}
	c.send(Packet{Type: TypeDisconnect})
	c.expect(TypeDisconnect)
	eventually(t, "client gone", func() bool { return e.g.Stats().ClientsConnected == 0 })
}

func TestQoSMinusOne(t *testing.T) {
	e := startEnv(t, nil, nil)
	msgs := e.watch(t, "#")
	c := e.dial(t) // never connects
	c.send(Packet{Type: TypePublish, Flags: Flags{QoS: -1, TopicIDType: TopicPredefined}, TopicID: 1, Data: []byte("a")})
	c.send(Packet{Type: TypePublish, Flags: Flags{QoS: -1, TopicIDType: TopicShort}, TopicID: ShortTopicID("zz"), Data: []byte("b")})
	c.send(Packet{Type: TypePublish, Flags: Flags{QoS: -1, TopicIDType: TopicPredefined}, TopicID: 42, Data: []byte("c")}) // unknown
	if m := next(t, msgs); m.Topic != "predef/one" || string(m.Payload) != "a" {
		t.Fatalf("%+v", m)
	}
	if m := next(t, msgs); m.Topic != "zz" || string(m.Payload) != "b" {
		t.Fatalf("%+v", m)
	}
	eventually(t, "unknown predefined id counted", func() bool { return e.g.Stats().Drops[DropInvalidTopic] == 1 })
}

// TestQoSMinusOneBanned: a QoS -1 publish has no session for the broker to
// refuse, so the gateway checks the broker's banned addresses itself.
func TestQoSMinusOneBanned(t *testing.T) {
	e := startEnv(t, func(b *mqtt.Config) { b.Banned.CIDRs = []string{"127.0.0.0/8"} }, nil)
	msgs := e.watch(t, "#")
	c := e.dial(t)
	c.send(Packet{Type: TypePublish, Flags: Flags{QoS: -1, TopicIDType: TopicPredefined}, TopicID: 1, Data: []byte("a")})
	eventually(t, "banned publish counted", func() bool { return e.g.Stats().Drops[DropBanned] == 1 })
	select {
	case m := <-msgs:
		t.Fatalf("a banned address published %+v", m)
	default:
	}
}

// TestInteropPahoSubscriber: an MQTT-SN device publishes, an MQTT 5 client
// (paho.golang) receives.
func TestInteropPahoSubscriber(t *testing.T) {
	e := startEnv(t, nil, nil)
	conn, err := net.DialTimeout("tcp", e.b.Addr("tcp"), waitFor)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *paho.Publish, 10)
	pc := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			got <- pr.Packet
			return true, nil
		}},
		OnClientError: func(error) {},
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := pc.Connect(ctx, &paho.Connect{ClientID: "paho-sub", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	defer pc.Disconnect(&paho.Disconnect{})
	if _, err := pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "field/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	c := e.dial(t)
	c.connect("sn-dev", true, 60)
	id := c.register("field/pressure", 1)
	c.send(Packet{Type: TypePublish, Flags: Flags{QoS: 1}, TopicID: id, MsgID: 9, Data: []byte("1013")})
	c.expect(TypePuback)
	select {
	case p := <-got:
		if p.Topic != "field/pressure" || string(p.Payload) != "1013" || p.QoS != 1 {
			t.Fatalf("paho got %+v", p)
		}
	case <-time.After(waitFor):
		t.Fatal("paho subscriber got nothing")
	}
}

// TestRetainedFromMosquittoPub: a retained message published with
// Debian's mosquitto_pub reaches an MQTT-SN subscriber that subscribes
// later, through REGISTER for a long topic name.
func TestRetainedFromMosquittoPub(t *testing.T) {
	if _, err := exec.LookPath("mosquitto_pub"); err != nil {
		t.Skip("mosquitto_pub not installed (Debian package mosquitto-clients)")
	}
	e := startEnv(t, nil, nil)
	host, port, _ := net.SplitHostPort(e.b.Addr("tcp"))
	out, err := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-V", "mqttv5", "-q", "1", "-r",
		"-t", "plant/line1/setpoint", "-m", "42").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}
	c := e.dial(t)
	c.connect("sn-sub", true, 60)
	ack := c.subscribe("plant/+/setpoint", 1, 1)
	if ack.TopicID != 0 || ack.Flags.QoS != 1 {
		t.Fatalf("wildcard SUBACK %+v", ack)
	}
	reg := c.expect(TypeRegister)
	if reg.TopicName != "plant/line1/setpoint" || reg.TopicID == 0 {
		t.Fatalf("REGISTER %+v", reg)
	}
	c.send(Packet{Type: TypeRegack, TopicID: reg.TopicID, MsgID: reg.MsgID, ReturnCode: Accepted})
	p := c.expect(TypePublish)
	if p.TopicID != reg.TopicID || string(p.Data) != "42" || !p.Flags.Retain || p.Flags.QoS != 1 || p.Flags.TopicIDType != TopicNormal {
		t.Fatalf("PUBLISH %+v", p)
	}
	c.send(Packet{Type: TypePuback, TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: Accepted})
	// The next message on that topic needs no REGISTER.
	if err := e.b.Publish(context.Background(), bus.Message{Topic: "plant/line1/setpoint", Payload: []byte("43"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	p = c.expect(TypePublish)
	if p.TopicID != reg.TopicID || string(p.Data) != "43" {
		t.Fatalf("PUBLISH %+v", p)
	}
}

// TestMosquittoSubReceives: an MQTT 3.1.1 subscriber (mosquitto_sub)
// receives what an MQTT-SN device publishes with QoS 2.
func TestMosquittoSubReceives(t *testing.T) {
	if _, err := exec.LookPath("mosquitto_sub"); err != nil {
		t.Skip("mosquitto_sub not installed (Debian package mosquitto-clients)")
	}
	e := startEnv(t, nil, nil)
	host, port, _ := net.SplitHostPort(e.b.Addr("tcp"))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	cmd := exec.CommandContext(ctx, "mosquitto_sub", "-h", host, "-p", port, "-i", "mosq-sub", "-q", "2", "-t", "sn/#", "-C", "1", "-v")
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "mosquitto_sub subscribed", func() bool { return e.b.Info().Subscriptions >= 1 })
	c := e.dial(t)
	c.connect("sn-pub", true, 60)
	id := c.register("sn/hello", 1)
	c.send(Packet{Type: TypePublish, Flags: Flags{QoS: 2}, TopicID: id, MsgID: 1, Data: []byte("world")})
	c.expect(TypePubrec)
	c.send(Packet{Type: TypePubrel, MsgID: 1})
	c.expect(TypePubcomp)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("mosquitto_sub: %v (output %q)", err, out.String())
	}
	if got := strings.TrimSpace(out.String()); got != "sn/hello world" {
		t.Fatalf("mosquitto_sub printed %q", got)
	}
}

func TestSubscribeKinds(t *testing.T) {
	e := startEnv(t, nil, nil)
	c := e.dial(t)
	c.connect("sub-1", true, 60)
	pub := func(topic string, qos byte) {
		t.Helper()
		if err := e.b.Publish(context.Background(), bus.Message{Topic: topic, Payload: []byte("v:" + topic), QoS: qos}); err != nil {
			t.Fatal(err)
		}
	}
	// By name without wildcard: SUBACK carries the topic id, no REGISTER.
	ack := c.subscribe("room/temp", 0, 1)
	if ack.TopicID == 0 {
		t.Fatalf("SUBACK without topic id: %+v", ack)
	}
	pub("room/temp", 0)
	if p := c.expect(TypePublish); p.TopicID != ack.TopicID || p.Flags.TopicIDType != TopicNormal || string(p.Data) != "v:room/temp" {
		t.Fatalf("%+v", p)
	}
	// Predefined.
	c.send(Packet{Type: TypeSubscribe, Flags: Flags{QoS: 1, TopicIDType: TopicPredefined}, MsgID: 2, TopicID: 1})
	if ack := c.expect(TypeSuback); ack.ReturnCode != Accepted || ack.TopicID != 1 || ack.Flags.QoS != 1 {
		t.Fatalf("%+v", ack)
	}
	pub("predef/one", 1)
	p := c.expect(TypePublish)
	if p.TopicID != 1 || p.Flags.TopicIDType != TopicPredefined || p.Flags.QoS != 1 || p.MsgID == 0 {
		t.Fatalf("%+v", p)
	}
	c.send(Packet{Type: TypePuback, TopicID: 1, MsgID: p.MsgID, ReturnCode: Accepted})
	// Short topic name.
	c.send(Packet{Type: TypeSubscribe, Flags: Flags{QoS: 2, TopicIDType: TopicShort}, MsgID: 3, TopicID: ShortTopicID("s1")})
	if ack := c.expect(TypeSuback); ack.ReturnCode != Accepted || ack.Flags.QoS != 2 {
		t.Fatalf("%+v", ack)
	}
	pub("s1", 2)
	p = c.expect(TypePublish)
	if p.Flags.TopicIDType != TopicShort || ShortTopic(p.TopicID) != "s1" || p.Flags.QoS != 2 {
		t.Fatalf("%+v", p)
	}
	c.send(Packet{Type: TypePubrec, MsgID: p.MsgID})
	if rel := c.expect(TypePubrel); rel.MsgID != p.MsgID {
		t.Fatalf("%+v", rel)
	}
	c.send(Packet{Type: TypePubcomp, MsgID: p.MsgID})
	// Unknown predefined id and an invalid filter are refused.
	c.send(Packet{Type: TypeSubscribe, Flags: Flags{TopicIDType: TopicPredefined}, MsgID: 4, TopicID: 99})
	if ack := c.expect(TypeSuback); ack.ReturnCode != RejectedInvalidTopic {
		t.Fatalf("%+v", ack)
	}
	c.send(Packet{Type: TypeSubscribe, MsgID: 5, TopicName: "a/#/b"})
	if ack := c.expect(TypeSuback); ack.ReturnCode != RejectedInvalidTopic {
		t.Fatalf("%+v", ack)
	}
	// Unsubscribe by name: nothing more arrives.
	c.send(Packet{Type: TypeUnsubscribe, MsgID: 6, TopicName: "room/temp"})
	if u := c.expect(TypeUnsuback); u.MsgID != 6 {
		t.Fatalf("%+v", u)
	}
	pub("room/temp", 0)
	pub("s1", 0) // still subscribed: proves room/temp was skipped, in order
	if p := c.expect(TypePublish); ShortTopic(p.TopicID) != "s1" {
		t.Fatalf("after UNSUBSCRIBE got %+v", p)
	}
	// The counter moves just after the datagram is written: poll it.
	eventually(t, "4 publishes counted", func() bool { return e.g.Stats().PublishesOut == 4 })
	if s := e.g.Stats(); s.PublishesOut != 4 {
		t.Fatalf("stats %+v", s)
	}
}

func TestWillOnKeepAliveTimeout(t *testing.T) {
	e := startEnv(t, nil, nil)
	wills := e.watch(t, "wills/#")
	c := e.dial(t)
	c.send(Packet{Type: TypeConnect, Flags: Flags{Will: true, CleanSession: true}, ProtocolID: 1, Duration: 1, ClientID: "will-1"})
	c.expect(TypeWillTopicReq)
	c.send(Packet{Type: TypeWillTopic, Flags: Flags{QoS: 1}, TopicName: "wills/will-1"})
	c.expect(TypeWillMsgReq)
	c.send(Packet{Type: TypeWillMsg, Data: []byte("gone")})
	if ack := c.expect(TypeConnack); ack.ReturnCode != Accepted {
		t.Fatalf("%+v", ack)
	}
	start := time.Now()
	// Silent for 1.5 × 1 s: lost, will published.
	m := next(t, wills)
	if m.Topic != "wills/will-1" || string(m.Payload) != "gone" {
		t.Fatalf("will %+v", m)
	}
	if el := time.Since(start); el < 1400*time.Millisecond {
		t.Fatalf("lost after %s, before 1.5 × keep alive", el)
	}
	eventually(t, "lost counted", func() bool { s := e.g.Stats(); return s.LostClients == 1 && s.ClientsConnected == 0 })
}

// TestMaxKeepAlive: a device that asks for no keep alive (0), or for more
// than max_keepalive, is held to max_keepalive: silent for 1.5 × it, it is
// lost and its will published.
func TestMaxKeepAlive(t *testing.T) {
	const limit = 400 * time.Millisecond
	e := startEnv(t, nil, func(c *Config) { c.MaxKeepAlive = limit })
	wills := e.watch(t, "wills/#")
	start := time.Now()
	for _, d := range []struct {
		id        string
		keepAlive uint16
	}{{"ka-zero", 0}, {"ka-above", 3600}} {
		c := e.dial(t)
		c.send(Packet{Type: TypeConnect, Flags: Flags{Will: true, CleanSession: true}, ProtocolID: 1, Duration: d.keepAlive, ClientID: d.id})
		c.expect(TypeWillTopicReq)
		c.send(Packet{Type: TypeWillTopic, TopicName: "wills/" + d.id})
		c.expect(TypeWillMsgReq)
		c.send(Packet{Type: TypeWillMsg, Data: []byte(d.id + " gone")})
		if ack := c.expect(TypeConnack); ack.ReturnCode != Accepted {
			t.Fatalf("%s: %+v", d.id, ack)
		}
	}
	got := map[string]bool{}
	for range 2 {
		m := next(t, wills)
		got[string(m.Payload)] = true
	}
	if !got["ka-zero gone"] || !got["ka-above gone"] {
		t.Fatalf("wills %v", got)
	}
	if el := time.Since(start); el < limit*3/2 {
		t.Fatalf("lost after %s, before 1.5 × max_keepalive", el)
	}
	eventually(t, "lost counted", func() bool { s := e.g.Stats(); return s.LostClients == 2 && s.ClientsConnected == 0 })
}

func TestKeepAliveCap(t *testing.T) {
	for _, tt := range []struct {
		limit time.Duration
		secs  uint16
		want  time.Duration
	}{
		{time.Hour, 0, time.Hour},
		{time.Hour, 60, time.Minute},
		{time.Hour, 3600, time.Hour},
		{time.Hour, 7200, time.Hour},
		{0, 0, 0},
		{0, 7200, 2 * time.Hour},
	} {
		g := &Gateway{cfg: Config{MaxKeepAlive: tt.limit}}
		if got := g.keepAlive(tt.secs); got != tt.want {
			t.Errorf("max_keepalive %s, keep alive %ds: %s, want %s", tt.limit, tt.secs, got, tt.want)
		}
	}
}

func TestWillUpdate(t *testing.T) {
	e := startEnv(t, nil, nil)
	wills := e.watch(t, "w/#")
	c := e.dial(t)
	c.send(Packet{Type: TypeConnect, Flags: Flags{Will: true, CleanSession: true}, ProtocolID: 1, Duration: 1, ClientID: "will-2"})
	c.expect(TypeWillTopicReq)
	c.send(Packet{Type: TypeWillTopic, TopicName: "w/old"})
	c.expect(TypeWillMsgReq)
	c.send(Packet{Type: TypeWillMsg, Data: []byte("old")})
	c.expect(TypeConnack)
	c.send(Packet{Type: TypeWillTopicUpd, Flags: Flags{QoS: 1, Retain: true}, TopicName: "w/new"})
	if r := c.expect(TypeWillTopicResp); r.ReturnCode != Accepted {
		t.Fatalf("%+v", r)
	}
	c.send(Packet{Type: TypeWillMsgUpd, Data: []byte("new")})
	if r := c.expect(TypeWillMsgResp); r.ReturnCode != Accepted {
		t.Fatalf("%+v", r)
	}
	m := next(t, wills)
	if m.Topic != "w/new" || string(m.Payload) != "new" || !m.Retain {
		t.Fatalf("will %+v", m)
	}
}

func TestCleanDisconnectDiscardsWill(t *testing.T) {
	e := startEnv(t, nil, nil)
	wills := e.watch(t, "w/#")
	c := e.dial(t)
	c.send(Packet{Type: TypeConnect, Flags: Flags{Will: true, CleanSession: true}, ProtocolID: 1, Duration: 60, ClientID: "will-3"})
	c.expect(TypeWillTopicReq)
	c.send(Packet{Type: TypeWillTopic, TopicName: "w/x"})
	c.expect(TypeWillMsgReq)
	c.send(Packet{Type: TypeWillMsg, Data: []byte("x")})
	c.expect(TypeConnack)
	c.send(Packet{Type: TypeDisconnect})
	c.expect(TypeDisconnect)
	eventually(t, "client gone", func() bool { return e.g.Stats().ClientsConnected == 0 })
	// A marker published after the disconnect arrives alone.
	_ = e.b.Publish(context.Background(), bus.Message{Topic: "w/marker"})
	if m := next(t, wills); m.Topic != "w/marker" {
		t.Fatalf("will published on a clean DISCONNECT: %+v", m)
	}
}

func TestSleepingClient(t *testing.T) {
	e := startEnv(t, nil, func(c *Config) { c.SleepBuffer = 3 })
	wills := e.watch(t, "w/#")
	c := e.dial(t)
	c.send(Packet{Type: TypeConnect, Flags: Flags{Will: true}, ProtocolID: 1, Duration: 60, ClientID: "sleepy"})
	c.expect(TypeWillTopicReq)
	c.send(Packet{Type: TypeWillTopic, TopicName: "w/sleepy"})
	c.expect(TypeWillMsgReq)
	c.send(Packet{Type: TypeWillMsg, Data: []byte("overslept")})
	c.expect(TypeConnack)
	c.send(Packet{Type: TypeSubscribe, Flags: Flags{QoS: 1, TopicIDType: TopicShort}, MsgID: 1, TopicID: ShortTopicID("cm")})
	c.expect(TypeSuback)
	c.send(Packet{Type: TypeDisconnect, HasDuration: true, Duration: 2})
	c.expect(TypeDisconnect)
	eventually(t, "asleep", func() bool { return e.g.Stats().ClientsAsleep == 1 })

	// Four QoS 0 and one QoS 1 while asleep: the buffer (3) drops the
	// oldest QoS 0 ones.
	for i, qos := range []byte{0, 0, 1, 0, 0} {
		if err := e.b.Publish(context.Background(), bus.Message{Topic: "cm", Payload: []byte{'0' + byte(i)}, QoS: qos}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "buffer drops", func() bool { return e.g.Stats().Drops[DropBuffer] == 2 })
	c.silent(100 * time.Millisecond)

	// Wake up from a new address with PINGREQ + client id.
	c2 := e.dial(t)
	c2.send(Packet{Type: TypePingreq, ClientID: "sleepy"})
	var got []string
	for {
		p, ok := c2.recv(waitFor)
		if !ok {
			t.Fatal("nothing after PINGREQ")
		}
		if p.Type == TypePingresp {
			break
		}
		if p.Type != TypePublish {
			t.Fatalf("got %s", p.Type)
		}
		got = append(got, string(p.Data))
		if p.Flags.QoS == 1 {
			c2.send(Packet{Type: TypePuback, TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: Accepted})
		}
	}
	if strings.Join(got, ",") != "2,3,4" {
		t.Fatalf("delivered on wake: %v", got)
	}
	if s := e.g.Stats(); s.ClientsAsleep != 1 {
		t.Fatalf("not asleep again after PINGRESP: %+v", s)
	}
	// It oversleeps 1.5 × 2 s: lost, will published.
	if m := next(t, wills); m.Topic != "w/sleepy" || string(m.Payload) != "overslept" {
		t.Fatalf("will %+v", m)
	}
	eventually(t, "lost", func() bool {
		s := e.g.Stats()
		return s.LostClients == 1 && s.ClientsAsleep == 0 && s.ClientsConnected == 0
	})
}

func TestSleepThenConnectKeepsBuffer(t *testing.T) {
	e := startEnv(t, nil, nil)
	c := e.dial(t)
	c.connect("sleepy-2", false, 60)
	c.subscribe("ab", 0, 1)
	c.send(Packet{Type: TypeDisconnect, HasDuration: true, Duration: 60})
	c.expect(TypeDisconnect)
	eventually(t, "asleep", func() bool { return e.g.Stats().ClientsAsleep == 1 })
	_ = e.b.Publish(context.Background(), bus.Message{Topic: "ab", Payload: []byte("kept")})
	c.silent(100 * time.Millisecond)
	c.connect("sleepy-2", false, 60)
	if p := c.expect(TypePublish); string(p.Data) != "kept" {
		t.Fatalf("%+v", p)
	}
}

func TestRetransmitThenLost(t *testing.T) {
	e := startEnv(t, nil, nil)
	wills := e.watch(t, "w/#")
	c := e.dial(t)
	c.send(Packet{Type: TypeConnect, Flags: Flags{Will: true, CleanSession: true}, ProtocolID: 1, Duration: 60, ClientID: "deaf"})
	c.expect(TypeWillTopicReq)
	c.send(Packet{Type: TypeWillTopic, TopicName: "w/deaf"})
	c.expect(TypeWillMsgReq)
	c.send(Packet{Type: TypeWillMsg, Data: []byte("deaf")})
	c.expect(TypeConnack)
	c.subscribe("xy", 1, 1)
	_ = e.b.Publish(context.Background(), bus.Message{Topic: "xy", Payload: []byte("m"), QoS: 1})
	first := c.expect(TypePublish)
	if first.Flags.DUP {
		t.Fatal("first send has DUP")
	}
	for range 2 { // retry_count
		p := c.expect(TypePublish)
		if !p.Flags.DUP || p.MsgID != first.MsgID {
			t.Fatalf("retransmission %+v", p)
		}
	}
	if m := next(t, wills); string(m.Payload) != "deaf" {
		t.Fatalf("%+v", m)
	}
	s := e.g.Stats()
	if s.Retransmissions != 2 || s.LostClients != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestRegisterRetransmitAndRefusal(t *testing.T) {
	e := startEnv(t, nil, nil)
	c := e.dial(t)
	c.connect("reg", true, 60)
	c.subscribe("long/+", 0, 1)
	_ = e.b.Publish(context.Background(), bus.Message{Topic: "long/a", Payload: []byte("a")})
	_ = e.b.Publish(context.Background(), bus.Message{Topic: "long/b", Payload: []byte("b")})
	r := c.expect(TypeRegister)
	if again := c.expect(TypeRegister); again.MsgID != r.MsgID || again.TopicName != "long/a" {
		t.Fatalf("REGISTER retransmission %+v", again)
	}
	// Refused: that message is dropped, the next one gets its own REGISTER.
	c.send(Packet{Type: TypeRegack, TopicID: r.TopicID, MsgID: r.MsgID, ReturnCode: RejectedNotSupported})
	r2 := c.expect(TypeRegister)
	for r2.MsgID == r.MsgID && r2.TopicName == "long/a" {
		// A retransmission that crossed the REGACK (a loaded machine).
		r2 = c.expect(TypeRegister)
	}
	if r2.TopicName != "long/b" {
		t.Fatalf("%+v", r2)
	}
	c.send(Packet{Type: TypeRegack, TopicID: r2.TopicID, MsgID: r2.MsgID, ReturnCode: Accepted})
	if p := c.expect(TypePublish); string(p.Data) != "b" || p.TopicID != r2.TopicID {
		t.Fatalf("%+v", p)
	}
}

func TestACLWithClientUsername(t *testing.T) {
	e := startEnv(t, func(b *mqtt.Config) {
		b.ACL = []mqtt.ACLRule{
			{Username: "sensors", Topic: "sensors/#", Action: "all", Permission: "allow"},
		}
	}, func(c *Config) {
		c.Clients.Usernames = []ClientUsername{{ClientID: "sensor-*", Username: "sensors"}}
	})
	msgs := e.watch(t, "#")
	c := e.dial(t)
	c.connect("sensor-7", true, 60)
	ok := c.register("sensors/7", 1)
	denied := c.register("actuators/7", 2)
	c.send(Packet{Type: TypePublish, Flags: Flags{QoS: 1}, TopicID: ok, MsgID: 3, Data: []byte("ok")})
	if a := c.expect(TypePuback); a.ReturnCode != Accepted {
		t.Fatalf("%+v", a)
	}
	c.send(Packet{Type: TypePublish, Flags: Flags{QoS: 1}, TopicID: denied, MsgID: 4, Data: []byte("no")})
	if a := c.expect(TypePuback); a.ReturnCode != RejectedNotSupported || a.MsgID != 4 {
		t.Fatalf("ACL refusal: %+v", a)
	}
	c.send(Packet{Type: TypeSubscribe, Flags: Flags{QoS: 1}, MsgID: 5, TopicName: "actuators/#"})
	if a := c.expect(TypeSuback); a.ReturnCode != RejectedNotSupported {
		t.Fatalf("ACL refusal of SUBSCRIBE: %+v", a)
	}
	if m := next(t, msgs); m.Topic != "sensors/7" {
		t.Fatalf("%+v", m)
	}
	select {
	case m := <-msgs:
		t.Fatalf("denied publish arrived: %+v", m)
	default:
	}
	// Another client id has no username: anonymous, and the ACL (which
	// allows only "sensors") denies it too.
	o := e.dial(t)
	o.connect("other", true, 60)
	id := o.register("sensors/x", 1)
	o.send(Packet{Type: TypePublish, Flags: Flags{QoS: 1}, TopicID: id, MsgID: 2, Data: []byte("x")})
	if a := o.expect(TypePuback); a.ReturnCode != RejectedNotSupported {
		t.Fatalf("%+v", a)
	}
}

func TestAllowListAndAnonymous(t *testing.T) {
	e := startEnv(t, func(b *mqtt.Config) { b.Auth.AllowAnonymous = false }, func(c *Config) {
		c.Clients.Allow = []string{"ok-*", "anon"}
		c.Clients.Usernames = []ClientUsername{{ClientID: "ok-*", Username: "trusted"}}
	})
	c := e.dial(t)
	c.send(Packet{Type: TypeConnect, ProtocolID: 1, Duration: 60, ClientID: "intruder"})
	if a := c.expect(TypeConnack); a.ReturnCode != RejectedNotSupported {
		t.Fatalf("not allowed: %+v", a)
	}
	c.send(Packet{Type: TypeConnect, ProtocolID: 1, Duration: 60, ClientID: "anon"})
	if a := c.expect(TypeConnack); a.ReturnCode != RejectedNotSupported {
		t.Fatalf("anonymous with allow_anonymous off: %+v", a)
	}
	c.connect("ok-1", true, 60)
	if s := e.g.Stats(); s.ClientsConnected != 1 {
		t.Fatalf("%+v", s)
	}
}

func TestTakeoverFromNewAddress(t *testing.T) {
	e := startEnv(t, nil, nil)
	msgs := e.watch(t, "#")
	a := e.dial(t)
	a.connect("roamer", true, 60)
	b := e.dial(t)
	b.connect("roamer", true, 60)
	id := b.register("roam/x", 1)
	b.send(Packet{Type: TypePublish, Flags: Flags{QoS: 1}, TopicID: id, MsgID: 2, Data: []byte("b")})
	b.expect(TypePuback)
	next(t, msgs)
	eventually(t, "one client", func() bool { return e.g.Stats().ClientsConnected == 1 })
	// The old address is no longer connected.
	a.send(Packet{Type: TypePingreq})
	a.expect(TypeDisconnect)
	if s := e.g.Stats(); s.Drops[DropNotConnected] != 1 {
		t.Fatalf("%+v", s)
	}
}

func TestLenientConnect(t *testing.T) {
	e := startEnv(t, nil, nil)
	c := e.dial(t)
	// Empty client id: one is made from the address.
	c.connect("", true, 60)
	c.send(Packet{Type: TypePingreq})
	c.expect(TypePingresp)
	// The 3-byte length form for a short message.
	c.raw([]byte{0x01, 0x00, 0x04, byte(TypePingreq)})
	c.expect(TypePingresp)
	// A wrong protocol id is refused.
	d := e.dial(t)
	d.send(Packet{Type: TypeConnect, ProtocolID: 2, Duration: 60, ClientID: "x"})
	if a := d.expect(TypeConnack); a.ReturnCode != RejectedNotSupported {
		t.Fatalf("%+v", a)
	}
}

func TestMalformedCounted(t *testing.T) {
	e := startEnv(t, nil, nil)
	c := e.dial(t)
	c.connect("victim", true, 60)
	for _, b := range [][]byte{
		{1},                      // short
		{9, 0x16},                // length
		{2, 0x03},                // unknown type
		{4, 0x0D, 0},             // malformed PUBACK... length 4 says 4 bytes but 3 sent: length
		{4, 0x10, 0, 1},          // PUBREL: valid; unexpected? no: answered with PUBCOMP
		{3, 0x18, 0},             // malformed DISCONNECT
		{7, 0x0D, 0, 1, 0, 9, 0}, // PUBACK for nothing in flight: unexpected
	} {
		c.raw(b)
	}
	c.expect(TypePubcomp)
	eventually(t, "drops counted", func() bool {
		d := e.g.Stats().Drops
		return d[DropShort] == 1 && d[DropLength] == 2 && d[DropUnknownType] == 1 && d[DropMalformed] == 1 && d[DropUnexpected] == 1
	})
	// Still served.
	c.send(Packet{Type: TypePingreq})
	c.expect(TypePingresp)
}

func TestDiscovery(t *testing.T) {
	adv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer adv.Close()
	e := startEnv(t, nil, func(c *Config) {
		c.GatewayID = 42
		c.AdvertiseInterval = 2 * time.Second
		c.AdvertiseAddress = adv.LocalAddr().String()
	})
	buf := make([]byte, 64)
	_ = adv.SetReadDeadline(time.Now().Add(waitFor))
	n, _, err := adv.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Decode(buf[:n])
	if err != nil || p.Type != TypeAdvertise || p.GatewayID != 42 || p.Duration != 2 {
		t.Fatalf("ADVERTISE %+v, %v", p, err)
	}
	c := e.dial(t)
	c.send(Packet{Type: TypeSearchGW, Radius: 1})
	if gw := c.expect(TypeGWInfo); gw.GatewayID != 42 {
		t.Fatalf("%+v", gw)
	}
	// GWINFO is also broadcast (to the advertise address), for the other
	// devices that are searching.
	for {
		_ = adv.SetReadDeadline(time.Now().Add(waitFor))
		n, _, err := adv.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no GWINFO at the advertise address: %v", err)
		}
		if p, err := Decode(buf[:n]); err == nil && p.Type == TypeGWInfo {
			if p.GatewayID != 42 {
				t.Fatalf("broadcast %+v", p)
			}
			break
		}
	}
	// The socket may broadcast: without SO_BROADCAST the kernel refuses
	// a datagram to 255.255.255.255 (EACCES).
	rc, err := e.g.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var on int
	var gerr error
	if err := rc.Control(func(fd uintptr) { on, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if on != 1 {
		t.Fatalf("SO_BROADCAST = %d on the gateway's socket", on)
	}
}

func TestMaxClients(t *testing.T) {
	e := startEnv(t, nil, func(c *Config) { c.MaxClients = 1 })
	a := e.dial(t)
	a.connect("one", true, 60)
	b := e.dial(t)
	b.send(Packet{Type: TypeConnect, ProtocolID: 1, Duration: 60, ClientID: "two"})
	if ack := b.expect(TypeConnack); ack.ReturnCode != RejectedCongestion {
		t.Fatalf("%+v", ack)
	}
}

func TestBusyPort(t *testing.T) {
	e := startEnv(t, nil, nil)
	cfg := testConfig()
	cfg.Address = e.g.Addr().String()
	if _, err := New(cfg, e.b, nil); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("second gateway on a busy port: %v", err)
	}
	cfg.MaxInflight = 0
	if _, err := New(cfg, e.b, nil); err == nil || !strings.Contains(err.Error(), "max_inflight") {
		t.Fatalf("bad config: %v", err)
	}
}

func TestPersistentSessionRedelivers(t *testing.T) {
	e := startEnv(t, nil, nil)
	c := e.dial(t)
	c.connect("persist", false, 60)
	c.subscribe("pp", 1, 1)
	c.send(Packet{Type: TypeDisconnect})
	c.expect(TypeDisconnect)
	eventually(t, "gone", func() bool { return e.g.Stats().ClientsConnected == 0 })
	_ = e.b.Publish(context.Background(), bus.Message{Topic: "pp", Payload: []byte("queued"), QoS: 1})
	c.connect("persist", false, 60)
	p := c.expect(TypePublish)
	if string(p.Data) != "queued" || p.Flags.QoS != 1 {
		t.Fatalf("%+v", p)
	}
	c.send(Packet{Type: TypePuback, TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: Accepted})
}
