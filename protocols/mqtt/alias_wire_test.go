package mqtt

import (
	"bufio"
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Topic aliases (issue 12, defects 1 and 2) and, in expiry_wire_test.go,
// message expiry (defect 3), checked with raw MQTT 5 packets built by the
// engine's codec.

// v5Conn is a raw MQTT 5 connection to the broker.
type v5Conn struct {
	t  *testing.T
	c  net.Conn
	r  *bufio.Reader
	id uint16 // last packet id used
}

// v5Dial connects a raw MQTT 5 client: clean start as given, props for the
// CONNECT (session expiry, topic alias maximum). It fails unless the
// CONNACK accepts the connection.
func v5Dial(t *testing.T, tb *testBroker, clientID string, clean bool, props packets.Properties) (*v5Conn, packets.Packet) {
	t.Helper()
	c, err := net.DialTimeout("tcp", tb.Addr("tcp"), wireWait)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	vc := &v5Conn{t: t, c: c, r: bufio.NewReader(c)}
	vc.write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			ClientIdentifier: clientID,
			Clean:            clean,
			Keepalive:        60,
		},
		Properties: props,
	})
	ack := vc.read()
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK: type %d reason %#x, want accepted", ack.FixedHeader.Type, ack.ReasonCode)
	}
	return vc, ack
}

// write encodes and sends pk as MQTT 5.
func (vc *v5Conn) write(pk packets.Packet) {
	vc.t.Helper()
	pk.ProtocolVersion = 5
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		pk.Connect.ProtocolName = []byte("MQTT")
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		vc.t.Fatalf("v5Conn cannot write packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		vc.t.Fatalf("encode packet type %d: %v", pk.FixedHeader.Type, err)
	}
	if _, err := vc.c.Write(buf.Bytes()); err != nil {
		vc.t.Fatalf("write packet type %d: %v", pk.FixedHeader.Type, err)
	}
}

// read reads and decodes the next packet, failing after wireWait.
func (vc *v5Conn) read() packets.Packet {
	vc.t.Helper()
	_ = vc.c.SetReadDeadline(time.Now().Add(wireWait))
	defer func() { _ = vc.c.SetReadDeadline(time.Time{}) }()
	pk, err := readPacket(vc.r, 5) // the sessions' reader
	if err != nil {
		vc.t.Fatalf("read packet: %v", err)
	}
	return pk
}

// subscribe subscribes to filter at qos and waits for a granting SUBACK.
func (vc *v5Conn) subscribe(filter string, qos byte) {
	vc.t.Helper()
	vc.id++
	vc.write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    vc.id,
		Filters:     packets.Subscriptions{{Filter: filter, Qos: qos}},
	})
	ack := vc.read()
	if ack.FixedHeader.Type != packets.Suback || len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] != qos {
		vc.t.Fatalf("SUBACK for %q: type %d codes % x", filter, ack.FixedHeader.Type, ack.ReasonCodes)
	}
}

// publish sends a PUBLISH; at QoS 1 it waits for the PUBACK and returns it.
func (vc *v5Conn) publish(topic string, qos byte, payload string, props packets.Properties) packets.Packet {
	vc.t.Helper()
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		Payload:     []byte(payload),
		Properties:  props,
	}
	if qos > 0 {
		vc.id++
		pk.PacketID = vc.id
	}
	vc.write(pk)
	if qos == 0 {
		return packets.Packet{}
	}
	return vc.read()
}

// puback acknowledges a QoS 1 delivery.
func (vc *v5Conn) puback(id uint16) {
	vc.t.Helper()
	vc.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id})
}

// readPublish reads the next packet and fails unless it is a PUBLISH.
func (vc *v5Conn) readPublish() packets.Packet {
	vc.t.Helper()
	pk := vc.read()
	if pk.FixedHeader.Type != packets.Publish {
		vc.t.Fatalf("got packet type %d (reason %#x), want PUBLISH", pk.FixedHeader.Type, pk.ReasonCode)
	}
	return pk
}

func sessionProps(aliasMax uint16) packets.Properties {
	return packets.Properties{SessionExpiryInterval: 300, SessionExpiryIntervalFlag: true, TopicAliasMaximum: aliasMax}
}

// A client's topic aliases belong to one network connection: after a
// reconnect (clean start 0, session kept) an alias sent with an empty topic
// is unknown, a protocol error answered with DISCONNECT 0x94, and nothing is
// delivered. Within the connection that defined it, the alias works.
func TestClientTopicAliasPerConnection(t *testing.T) {
	tb := startBroker(t, "-", nil)
	sub, _ := v5Dial(t, tb, "alias-sub", true, packets.Properties{})
	sub.subscribe("alias/#", 0)

	pub, ack := v5Dial(t, tb, "alias-pub", true, sessionProps(0))
	if ack.Properties.TopicAliasMaximum == 0 {
		t.Fatal("CONNACK announces no Topic Alias Maximum")
	}
	alias1 := packets.Properties{TopicAlias: 1, TopicAliasFlag: true}
	if got := pub.publish("alias/TopicA", 1, "define", alias1); got.ReasonCode != 0 {
		t.Fatalf("PUBACK defining alias 1: %#x", got.ReasonCode)
	}
	if got := pub.publish("", 1, "use", alias1); got.ReasonCode != 0 {
		t.Fatalf("PUBACK using alias 1: %#x", got.ReasonCode)
	}
	for _, want := range []string{"define", "use"} {
		m := sub.readPublish()
		if m.TopicName != "alias/TopicA" || string(m.Payload) != want {
			t.Fatalf("delivered %q %q, want alias/TopicA %q", m.TopicName, m.Payload, want)
		}
	}
	pub.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	_ = pub.c.Close()

	pub2, ack := v5Dial(t, tb, "alias-pub", false, sessionProps(0))
	if !ack.SessionPresent {
		t.Fatal("session not kept across the reconnect")
	}
	pub2.id = 10
	got := pub2.publish("", 1, "lost", alias1)
	if got.FixedHeader.Type != packets.Disconnect || got.ReasonCode != packets.ErrTopicAliasInvalid.Code {
		t.Fatalf("publish with an alias of the previous connection: type %d reason %#x, want DISCONNECT 0x94",
			got.FixedHeader.Type, got.ReasonCode)
	}
	wireClosed(t, pub2.c, wireWait)

	// Nothing was delivered for it: the next message the subscriber gets is
	// the marker published afterwards.
	marker, _ := v5Dial(t, tb, "alias-marker", true, packets.Properties{})
	marker.publish("alias/marker", 1, "marker", packets.Properties{})
	if m := sub.readPublish(); m.TopicName != "alias/marker" {
		t.Fatalf("subscriber got %q %q, want the marker", m.TopicName, m.Payload)
	}
}

// The broker sends topic aliases to a client that accepts them: the first
// message on a topic carries the topic and its alias, the next ones the
// alias alone; when all aliases are taken, the least recently used one is
// given to the new topic (sent with its topic).
func TestServerTopicAliasesLRU(t *testing.T) {
	tb := startBroker(t, "-", nil)
	sub, _ := v5Dial(t, tb, "salias-sub", true, packets.Properties{TopicAliasMaximum: 2})
	sub.subscribe("salias/#", 1)
	pub, _ := v5Dial(t, tb, "salias-pub", true, packets.Properties{})

	steps := []struct {
		topic     string
		alias     uint16
		withTopic bool
	}{
		{"salias/a", 1, true},
		{"salias/a", 1, false},
		{"salias/b", 2, true},
		{"salias/c", 1, true}, // a is the least recently used
		{"salias/b", 2, false},
		{"salias/a", 1, true}, // c (alias 1) is now the least recently used
		{"salias/a", 1, false},
	}
	for i, s := range steps {
		pub.publish(s.topic, 1, s.topic, packets.Properties{})
		m := sub.readPublish()
		sub.puback(m.PacketID)
		wantTopic := ""
		if s.withTopic {
			wantTopic = s.topic
		}
		if !m.Properties.TopicAliasFlag || m.Properties.TopicAlias != s.alias || m.TopicName != wantTopic || string(m.Payload) != s.topic {
			t.Fatalf("step %d: got topic %q alias %d (flag %v) payload %q, want topic %q alias %d",
				i, m.TopicName, m.Properties.TopicAlias, m.Properties.TopicAliasFlag, m.Payload, wantTopic, s.alias)
		}
	}

	// A client that accepts no aliases gets none.
	plain, _ := v5Dial(t, tb, "salias-plain", true, packets.Properties{})
	plain.subscribe("salias/#", 0)
	for i := 0; i < 2; i++ {
		pub.publish("salias/a", 1, "x", packets.Properties{})
		if m := plain.readPublish(); m.Properties.TopicAliasFlag || m.TopicName != "salias/a" {
			t.Fatalf("client without aliases got topic %q alias %d", m.TopicName, m.Properties.TopicAlias)
		}
		sub.puback(sub.readPublish().PacketID)
	}
}

// Messages left unacknowledged when the connection drops are resent on the
// next connection with their topic and without an alias (the new
// connection's alias table is empty); new messages then define aliases
// afresh.
func TestServerTopicAliasResendAfterReconnect(t *testing.T) {
	tb := startBroker(t, "-", nil)
	sub, _ := v5Dial(t, tb, "ralias-sub", true, sessionProps(5))
	sub.subscribe("ralias/t", 1)
	pub, _ := v5Dial(t, tb, "ralias-pub", true, packets.Properties{})

	pub.publish("ralias/t", 1, "one", packets.Properties{})
	pub.publish("ralias/t", 1, "two", packets.Properties{})
	first, second := sub.readPublish(), sub.readPublish()
	if first.TopicName != "ralias/t" || !first.Properties.TopicAliasFlag || second.TopicName != "" || !second.Properties.TopicAliasFlag {
		t.Fatalf("first delivery %q alias %d, second %q alias %d: want the topic then the alias alone",
			first.TopicName, first.Properties.TopicAlias, second.TopicName, second.Properties.TopicAlias)
	}
	_ = sub.c.Close() // no PUBACKs

	sub2, ack := v5Dial(t, tb, "ralias-sub", false, sessionProps(5))
	if !ack.SessionPresent {
		t.Fatal("session not kept")
	}
	for _, want := range []string{"one", "two"} {
		m := sub2.readPublish()
		if m.TopicName != "ralias/t" || m.Properties.TopicAliasFlag || !m.FixedHeader.Dup || string(m.Payload) != want {
			t.Fatalf("resent %q: topic %q alias %d dup %v payload %q, want its topic, no alias, DUP",
				want, m.TopicName, m.Properties.TopicAlias, m.FixedHeader.Dup, m.Payload)
		}
		sub2.puback(m.PacketID)
	}
	pub.publish("ralias/t", 1, "three", packets.Properties{})
	if m := sub2.readPublish(); m.TopicName != "ralias/t" || !m.Properties.TopicAliasFlag || m.FixedHeader.Dup {
		t.Fatalf("new message after reconnect: topic %q alias %d dup %v, want topic and a new alias",
			m.TopicName, m.Properties.TopicAlias, m.FixedHeader.Dup)
	}
}
