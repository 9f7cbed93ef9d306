package mqttsn

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// FuzzDecode: Decode never panics, and what it accepts encodes to a
// datagram that decodes to the same encoding again.
func FuzzDecode(f *testing.F) {
	for _, p := range samples {
		b, err := Encode(nil, p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x01, 0x00, 0x06, byte(TypePubrel), 0x00, 0x07})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			if CauseOf(err) == "" {
				t.Fatalf("error without cause: %v", err)
			}
			return
		}
		enc, err := Encode(nil, p)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", p, err)
		}
		p2, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-encoded % x does not decode: %v", enc, err)
		}
		enc2, err := Encode(nil, p2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("unstable encoding: % x then % x (%v)", enc, enc2, err)
		}
	})
}

// FuzzGateway drives a whole gateway with random datagrams from a fresh
// address (connected first when the input's first byte is odd). The input
// is a sequence of datagrams, each prefixed by its length byte. Afterwards
// a valid client must still connect and get PINGRESP.
func FuzzGateway(f *testing.F) {
	enc := func(ps ...Packet) []byte {
		var out []byte
		for _, p := range ps {
			b, _ := Encode(nil, p)
			out = append(append(out, byte(len(b))), b...)
		}
		return out
	}
	f.Add(append([]byte{1}, enc(
		Packet{Type: TypeRegister, MsgID: 1, TopicName: "a/b"},
		Packet{Type: TypePublish, Flags: Flags{QoS: 1}, TopicID: 1, MsgID: 2, Data: []byte("x")},
		Packet{Type: TypeSubscribe, Flags: Flags{QoS: 2}, MsgID: 3, TopicName: "a/#"},
		Packet{Type: TypePublish, Flags: Flags{QoS: 2}, TopicID: 1, MsgID: 4},
		Packet{Type: TypePubrel, MsgID: 4},
	)...))
	f.Add(append([]byte{0}, enc(
		Packet{Type: TypeConnect, Flags: Flags{Will: true}, ProtocolID: 1, Duration: 1, ClientID: "fz"},
		Packet{Type: TypeWillTopic, TopicName: "w"},
		Packet{Type: TypeWillMsg, Data: []byte("w")},
		Packet{Type: TypeDisconnect, HasDuration: true, Duration: 1},
		Packet{Type: TypePingreq, ClientID: "fz"},
	)...))
	f.Add(append([]byte{1}, enc(
		Packet{Type: TypeWillTopicUpd, TopicName: "x"},
		Packet{Type: TypeWillMsgUpd, Data: []byte("y")},
		Packet{Type: TypePublish, Flags: Flags{QoS: -1, TopicIDType: TopicShort}, TopicID: ShortTopicID("zz")},
		Packet{Type: TypeSearchGW},
		Packet{Type: TypeUnsubscribe, Flags: Flags{TopicIDType: TopicPredefined}, TopicID: 1},
	)...))
	f.Add([]byte{1, 2, 0xFF, 0x00, 3, 0x04, 0x00, 0x01, 1, 1})

	// Every input connects from a new port of 127.0.0.1, and one that
	// starts a will handshake holds its slot for connect_timeout: no
	// per-address cap here (TestConnectFlood covers it).
	e := startEnv(f, nil, func(c *Config) { c.MaxClientsPerAddress, c.MaxClients = 0, 100000 })
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		i := n.Add(1)
		fz := e.dial(t)
		if data[0]&1 == 1 {
			fz.connect(fmt.Sprintf("fz-%d", i), true, 60)
		}
		for rest := data[1:]; len(rest) > 0; {
			size := min(int(rest[0]), len(rest)-1)
			fz.raw(rest[1 : 1+size])
			rest = rest[1+size:]
		}
		fz.send(Packet{Type: TypeDisconnect})

		// UDP may lose datagrams in a flood (the socket buffers overflow),
		// so the probe retries as MQTT-SN clients do.
		probe := e.dial(t)
		connect := Packet{Type: TypeConnect, Flags: Flags{CleanSession: true}, ProtocolID: 1, Duration: 60, ClientID: fmt.Sprintf("probe-%d", i)}
		for try := 0; ; try++ {
			probe.send(connect)
			if p, ok := probe.recv(500 * time.Millisecond); ok {
				if p.Type != TypeConnack || p.ReturnCode != Accepted {
					t.Fatalf("probe: %+v", p)
				}
				break
			}
			if try == 10 {
				t.Fatal("the gateway no longer answers CONNECT")
			}
		}
		probe.send(Packet{Type: TypePingreq})
		probe.expect(TypePingresp)
		probe.send(Packet{Type: TypeDisconnect})
		probe.expect(TypeDisconnect)
		_ = fz.conn.Close()
		_ = probe.conn.Close()
	})
}
