package mqttsn

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestWrapUnwrap(t *testing.T) {
	inner, err := Encode(nil, Packet{Type: TypePingreq})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Wrap(nil, Encapsulation{Ctrl: 1, NodeID: []byte{0xAB, 0xCD}}, inner)
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{5, 0xFE, 1, 0xAB, 0xCD, 2, 0x16}; !bytes.Equal(b, want) {
		t.Fatalf("wrapped % x, want % x", b, want)
	}
	enc, got, ok, err := Unwrap(b)
	if err != nil || !ok || enc.Ctrl != 1 || !bytes.Equal(enc.NodeID, []byte{0xAB, 0xCD}) || !bytes.Equal(got, inner) {
		t.Fatalf("Unwrap = %+v % x %v %v", enc, got, ok, err)
	}
	if _, _, ok, err := Unwrap(inner); ok || err != nil {
		t.Fatalf("a plain message unwrapped: %v %v", ok, err)
	}
	if _, err := Wrap(nil, Encapsulation{}, inner); err == nil {
		t.Fatal("empty node id wrapped")
	}
	if _, err := Wrap(nil, Encapsulation{NodeID: make([]byte, 253)}, inner); err == nil {
		t.Fatal("253-byte node id wrapped")
	}
	for name, bad := range map[string]struct {
		b     []byte
		cause string
	}{
		"no node id":  {[]byte{3, 0xFE, 0, 2, 0x16}, DropMalformed},
		"header long": {[]byte{9, 0xFE, 0, 1}, DropLength},
		"no message":  {[]byte{4, 0xFE, 0, 1}, DropShort},
		"nested":      {[]byte{4, 0xFE, 0, 1, 4, 0xFE, 0, 1, 2, 0x16}, DropMalformed},
	} {
		_, _, ok, err := Unwrap(bad.b)
		var de *DecodeError
		if !ok || !errors.As(err, &de) || CauseOf(err) != bad.cause {
			t.Errorf("%s: ok %v, err %v (cause %q), want cause %q", name, ok, err, CauseOf(err), bad.cause)
		}
	}
}

// TestForwarderNodesAreDevices drives two wireless nodes behind one
// forwarder socket: each is its own broker session, and everything the
// gateway sends them comes back encapsulated for the right node.
func TestForwarderNodesAreDevices(t *testing.T) {
	e := startEnv(t, nil, nil)
	msgs := e.watch(t, "fwd/#")
	nodes := e.dialForwarder(t, "\x00\x01", "\x00\x02")
	a, b := nodes[0], nodes[1]

	a.connect("node-a", true, 60)
	b.connect("node-b", true, 60)
	if s := e.g.Stats(); s.ClientsConnected != 2 {
		t.Fatalf("two nodes behind one address: %d sessions, want 2", s.ClientsConnected)
	}
	a.subscribe("fwd/to-a", 1, 1)

	// b publishes at QoS 1 to a topic a subscribed to.
	id := b.register("fwd/to-a", 1)
	b.send(Packet{Type: TypePublish, Flags: Flags{QoS: 1}, TopicID: id, MsgID: 7, Data: []byte("hello a")})
	// The forwarder sees b's PUBACK and a's REGISTER + PUBLISH, in some
	// order: read them and route each by its node id.
	var gotAck, gotPub bool
	deadline := time.Now().Add(waitFor)
	for !(gotAck && gotPub) && time.Now().Before(deadline) {
		p, node := recvAny(t, a)
		switch {
		case node == "\x00\x02" && p.Type == TypePuback:
			if p.MsgID != 7 || p.ReturnCode != Accepted {
				t.Fatalf("PUBACK to b %+v", p)
			}
			gotAck = true
		case node == "\x00\x01" && p.Type == TypeRegister:
			a.send(Packet{Type: TypeRegack, TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: Accepted})
		case node == "\x00\x01" && p.Type == TypePublish:
			if string(p.Data) != "hello a" || p.Flags.QoS != 1 {
				t.Fatalf("PUBLISH to a %+v", p)
			}
			a.send(Packet{Type: TypePuback, TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: Accepted})
			gotPub = true
		default:
			t.Fatalf("unexpected %s for node % x", p.Type, node)
		}
	}
	if !gotAck || !gotPub {
		t.Fatalf("PUBACK to b %v, PUBLISH to a %v", gotAck, gotPub)
	}
	if m := next(t, msgs); m.Topic != "fwd/to-a" || string(m.Payload) != "hello a" {
		t.Fatalf("broker got %+v", m)
	}

	// Discovery through the forwarder is answered to the node.
	b.send(Packet{Type: TypeSearchGW, Radius: 1})
	b.expect(TypeGWInfo)

	// One node leaving does not end the other.
	b.send(Packet{Type: TypeDisconnect})
	b.expect(TypeDisconnect)
	eventually(t, "b gone", func() bool { return e.g.Stats().ClientsConnected == 1 })
	a.send(Packet{Type: TypePingreq})
	a.expect(TypePingresp)

	if s := e.g.Stats(); s.Encapsulated < 8 {
		t.Fatalf("Encapsulated = %d, want every datagram of the nodes counted", s.Encapsulated)
	}
}

// TestForwarderMalformedCounted: bad encapsulations are dropped and counted,
// and the forwarder's other nodes are still served.
func TestForwarderMalformedCounted(t *testing.T) {
	e := startEnv(t, nil, nil)
	n := e.dialForwarder(t, "n1")[0]
	n.connect("n1", true, 60)
	before := e.g.Stats().Drops
	n.raw([]byte{3, 0xFE, 0, 2, 0x16})                   // no node id
	n.raw([]byte{4, 0xFE, 0, 1, 4, 0xFE, 0, 1, 2, 0x16}) // nested
	n.raw([]byte{4, 0xFE, 0, 'x'})                       // nothing inside
	eventually(t, "drops counted", func() bool {
		d := e.g.Stats().Drops
		return d[DropMalformed]-before[DropMalformed] == 2 && d[DropShort]-before[DropShort] == 1
	})
	n.send(Packet{Type: TypePingreq})
	n.expect(TypePingresp)
}

// recvAny reads the next datagram on the forwarder socket of c and returns
// the message and the node it is for.
func recvAny(t *testing.T, c *snClient) (Packet, string) {
	t.Helper()
	buf := make([]byte, 70000)
	_ = c.conn.SetReadDeadline(time.Now().Add(waitFor))
	n, _, err := c.conn.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	enc, inner, ok, err := Unwrap(buf[:n])
	if err != nil || !ok {
		t.Fatalf("not encapsulated for a node: % x (%v)", buf[:n], err)
	}
	p, err := Decode(inner)
	if err != nil {
		t.Fatal(err)
	}
	return p, string(enc.NodeID)
}

// FuzzUnwrap: Unwrap never panics; what it accepts wraps back to the same
// bytes, and its errors carry a drop cause.
func FuzzUnwrap(f *testing.F) {
	ping, _ := Encode(nil, Packet{Type: TypePingreq})
	for _, node := range [][]byte{{1}, {0xAB, 0xCD}, bytes.Repeat([]byte{7}, 252)} {
		b, _ := Wrap(nil, Encapsulation{Ctrl: 2, NodeID: node}, ping)
		f.Add(b)
	}
	f.Add([]byte{3, 0xFE, 0, 2, 0x16})
	f.Add([]byte{4, 0xFE, 0, 1, 4, 0xFE, 0, 1, 2, 0x16})
	f.Fuzz(func(t *testing.T, b []byte) {
		enc, inner, ok, err := Unwrap(b)
		if err != nil {
			if !ok || CauseOf(err) == "" {
				t.Fatalf("error %v (ok %v) without a cause", err, ok)
			}
			return
		}
		if !ok {
			return
		}
		again, err := Wrap(nil, enc, inner)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("% x unwrapped to %+v % x, wraps to % x (%v)", b, enc, inner, again, err)
		}
	})
}
