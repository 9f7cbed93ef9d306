package mqttsn

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// samples is one packet of every type, as the codec should round-trip it.
var samples = []Packet{
	{Type: TypeAdvertise, GatewayID: 7, Duration: 900},
	{Type: TypeSearchGW, Radius: 1},
	{Type: TypeGWInfo, GatewayID: 7, GatewayAddr: []byte{10, 0, 0, 1}},
	{Type: TypeGWInfo, GatewayID: 7},
	{Type: TypeConnect, Flags: Flags{Will: true, CleanSession: true}, ProtocolID: 1, Duration: 60, ClientID: "dev-1"},
	{Type: TypeConnect, ProtocolID: 1, Duration: 0},
	{Type: TypeConnack, ReturnCode: RejectedCongestion},
	{Type: TypeWillTopicReq},
	{Type: TypeWillTopic, Flags: Flags{QoS: 1, Retain: true}, TopicName: "dev/1/status"},
	{Type: TypeWillTopic},
	{Type: TypeWillMsgReq},
	{Type: TypeWillMsg, Data: []byte("offline")},
	{Type: TypeRegister, TopicID: 0, MsgID: 3, TopicName: "a/b/c"},
	{Type: TypeRegack, TopicID: 5, MsgID: 3, ReturnCode: Accepted},
	{Type: TypePublish, Flags: Flags{DUP: true, QoS: 2, Retain: true, TopicIDType: TopicNormal}, TopicID: 5, MsgID: 9, Data: []byte("21.5")},
	{Type: TypePublish, Flags: Flags{QoS: -1, TopicIDType: TopicShort}, TopicID: ShortTopicID("ab"), Data: []byte{0, 1, 2}},
	{Type: TypePublish, Flags: Flags{QoS: 0, TopicIDType: TopicPredefined}, TopicID: 1},
	{Type: TypePuback, TopicID: 5, MsgID: 9, ReturnCode: RejectedInvalidTopic},
	{Type: TypePubcomp, MsgID: 1},
	{Type: TypePubrec, MsgID: 2},
	{Type: TypePubrel, MsgID: 0xFFFF},
	{Type: TypeSubscribe, Flags: Flags{QoS: 1}, MsgID: 4, TopicName: "a/+/c"},
	{Type: TypeSubscribe, Flags: Flags{QoS: 2, TopicIDType: TopicPredefined}, MsgID: 4, TopicID: 1},
	{Type: TypeSuback, Flags: Flags{QoS: 1}, TopicID: 5, MsgID: 4, ReturnCode: Accepted},
	{Type: TypeUnsubscribe, Flags: Flags{TopicIDType: TopicShort}, MsgID: 6, TopicID: ShortTopicID("xy")},
	{Type: TypeUnsuback, MsgID: 6},
	{Type: TypePingreq, ClientID: "dev-1"},
	{Type: TypePingreq},
	{Type: TypePingresp},
	{Type: TypeDisconnect},
	{Type: TypeDisconnect, HasDuration: true, Duration: 30},
	{Type: TypeWillTopicUpd, Flags: Flags{QoS: 2}, TopicName: "w"},
	{Type: TypeWillTopicUpd},
	{Type: TypeWillTopicResp, ReturnCode: Accepted},
	{Type: TypeWillMsgUpd, Data: []byte("bye")},
	{Type: TypeWillMsgResp, ReturnCode: RejectedNotSupported},
}

func TestRoundTrip(t *testing.T) {
	for _, p := range samples {
		t.Run(p.Type.String(), func(t *testing.T) {
			b, err := Encode(nil, p)
			if err != nil {
				t.Fatal(err)
			}
			if int(b[0]) != len(b) {
				t.Fatalf("length byte %d, encoded %d bytes", b[0], len(b))
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("decode % x: %v", b, err)
			}
			if !reflect.DeepEqual(got, p) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, p)
			}
		})
	}
}

func TestSpecBytes(t *testing.T) {
	// Encodings written out from the v1.2 specification's field tables.
	tests := []struct {
		name string
		p    Packet
		wire []byte
	}{
		{"CONNECT clean will", Packet{Type: TypeConnect, Flags: Flags{Will: true, CleanSession: true}, ProtocolID: 1, Duration: 30, ClientID: "ab"},
			[]byte{8, 0x04, 0x0C, 0x01, 0x00, 30, 'a', 'b'}},
		{"PUBLISH qos1 retain short", Packet{Type: TypePublish, Flags: Flags{QoS: 1, Retain: true, TopicIDType: TopicShort}, TopicID: ShortTopicID("t1"), MsgID: 0x0102, Data: []byte("x")},
			[]byte{8, 0x0C, 0x32, 't', '1', 0x01, 0x02, 'x'}},
		{"PUBLISH qos-1 predefined", Packet{Type: TypePublish, Flags: Flags{QoS: -1, TopicIDType: TopicPredefined}, TopicID: 1},
			[]byte{7, 0x0C, 0x61, 0, 1, 0, 0}},
		{"SUBSCRIBE qos2 name", Packet{Type: TypeSubscribe, Flags: Flags{QoS: 2}, MsgID: 1, TopicName: "a/#"},
			[]byte{8, 0x12, 0x40, 0, 1, 'a', '/', '#'}},
		{"DISCONNECT sleep", Packet{Type: TypeDisconnect, HasDuration: true, Duration: 0x0100},
			[]byte{4, 0x18, 1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Encode(nil, tt.p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, tt.wire) {
				t.Fatalf("encode: got % x, want % x", b, tt.wire)
			}
			got, err := Decode(tt.wire)
			if err != nil || !reflect.DeepEqual(got, tt.p) {
				t.Fatalf("decode: got %+v, %v", got, err)
			}
		})
	}
}

func TestLongForm(t *testing.T) {
	p := Packet{Type: TypePublish, Flags: Flags{QoS: 1}, TopicID: 1, MsgID: 2, Data: bytes.Repeat([]byte("x"), 1000)}
	b, err := Encode(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 0x01 || int(b[1])<<8|int(b[2]) != len(b) {
		t.Fatalf("long form header % x for %d bytes", b[:3], len(b))
	}
	if got, err := Decode(b); err != nil || !reflect.DeepEqual(got, p) {
		t.Fatalf("decode long form: %v", err)
	}
	// Lenient: the 3-byte form for a short message.
	short := []byte{0x01, 0x00, 0x06, byte(TypePubrel), 0x00, 0x07}
	if got, err := Decode(short); err != nil || got.MsgID != 7 {
		t.Fatalf("3-byte length for a short message: %+v, %v", got, err)
	}
	if _, err := Encode(nil, Packet{Type: TypeWillMsg, Data: make([]byte, 70000)}); err == nil {
		t.Fatal("a 70000-byte message encoded")
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name  string
		wire  []byte
		cause string
	}{
		{"empty", nil, DropShort},
		{"one byte", []byte{1}, DropShort},
		{"long form cut", []byte{1, 0}, DropShort},
		{"length too big", []byte{5, 0x16}, DropLength},
		{"length too small", []byte{2, 0x17, 0}, DropLength},
		{"long form length wrong", []byte{1, 0, 9, 0x17}, DropLength},
		{"length leaves no type", []byte{1, 0, 3}, DropShort},
		{"unknown type", []byte{2, 0x03}, DropUnknownType},
		{"encapsulated unsupported", []byte{2, 0xFE}, DropUnknownType},
		{"connect short", []byte{4, 0x04, 0, 1}, DropMalformed},
		{"publish short", []byte{6, 0x0C, 0, 0, 1, 0}, DropMalformed},
		{"puback long", []byte{8, 0x0D, 0, 1, 0, 1, 0, 0}, DropMalformed},
		{"pubrel short", []byte{3, 0x10, 0}, DropMalformed},
		{"disconnect 1 byte", []byte{3, 0x18, 0}, DropMalformed},
		{"subscribe reserved id type", []byte{7, 0x12, 0x03, 0, 1, 0, 1}, DropMalformed},
		{"subscribe predefined 3 bytes", []byte{8, 0x12, 0x01, 0, 1, 0, 1, 2}, DropMalformed},
		{"register bad utf8", []byte{8, 0x0A, 0, 0, 0, 1, 0xff, 0xfe}, DropMalformed},
		{"client id with NUL", []byte{8, 0x04, 0, 1, 0, 1, 'a', 0}, DropMalformed},
		{"pingresp with body", []byte{3, 0x17, 1}, DropMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Decode(tt.wire)
			if err == nil {
				t.Fatalf("decoded %+v", p)
			}
			if got := CauseOf(err); got != tt.cause {
				t.Fatalf("cause %q, want %q (%v)", got, tt.cause, err)
			}
			if !strings.HasPrefix(err.Error(), "mqttsn: decode") {
				t.Fatalf("error %q", err)
			}
		})
	}
}

func TestDecodeCopies(t *testing.T) {
	b, _ := Encode(nil, Packet{Type: TypePublish, TopicID: 1, Data: []byte("abc")})
	p, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	if string(p.Data) != "abc" {
		t.Fatalf("payload shares the datagram buffer: %q", p.Data)
	}
}
