package mqttsn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// MsgType is an MQTT-SN message type (spec v1.2, table 3).
type MsgType byte

// The MQTT-SN v1.2 message types.
const (
	TypeAdvertise     MsgType = 0x00
	TypeSearchGW      MsgType = 0x01
	TypeGWInfo        MsgType = 0x02
	TypeConnect       MsgType = 0x04
	TypeConnack       MsgType = 0x05
	TypeWillTopicReq  MsgType = 0x06
	TypeWillTopic     MsgType = 0x07
	TypeWillMsgReq    MsgType = 0x08
	TypeWillMsg       MsgType = 0x09
	TypeRegister      MsgType = 0x0A
	TypeRegack        MsgType = 0x0B
	TypePublish       MsgType = 0x0C
	TypePuback        MsgType = 0x0D
	TypePubcomp       MsgType = 0x0E
	TypePubrec        MsgType = 0x0F
	TypePubrel        MsgType = 0x10
	TypeSubscribe     MsgType = 0x12
	TypeSuback        MsgType = 0x13
	TypeUnsubscribe   MsgType = 0x14
	TypeUnsuback      MsgType = 0x15
	TypePingreq       MsgType = 0x16
	TypePingresp      MsgType = 0x17
	TypeDisconnect    MsgType = 0x18
	TypeWillTopicUpd  MsgType = 0x1A
	TypeWillTopicResp MsgType = 0x1B
	TypeWillMsgUpd    MsgType = 0x1C
	TypeWillMsgResp   MsgType = 0x1D
)

var typeNames = map[MsgType]string{
	TypeAdvertise: "ADVERTISE", TypeSearchGW: "SEARCHGW", TypeGWInfo: "GWINFO",
	TypeConnect: "CONNECT", TypeConnack: "CONNACK", TypeWillTopicReq: "WILLTOPICREQ",
	TypeWillTopic: "WILLTOPIC", TypeWillMsgReq: "WILLMSGREQ", TypeWillMsg: "WILLMSG",
	TypeRegister: "REGISTER", TypeRegack: "REGACK", TypePublish: "PUBLISH",
	TypePuback: "PUBACK", TypePubcomp: "PUBCOMP", TypePubrec: "PUBREC", TypePubrel: "PUBREL",
	TypeSubscribe: "SUBSCRIBE", TypeSuback: "SUBACK", TypeUnsubscribe: "UNSUBSCRIBE",
	TypeUnsuback: "UNSUBACK", TypePingreq: "PINGREQ", TypePingresp: "PINGRESP",
	TypeDisconnect: "DISCONNECT", TypeWillTopicUpd: "WILLTOPICUPD", TypeWillTopicResp: "WILLTOPICRESP",
	TypeWillMsgUpd: "WILLMSGUPD", TypeWillMsgResp: "WILLMSGRESP", TypeEncapsulated: "ENCAPSULATED",
}

func (t MsgType) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type 0x%02x", byte(t))
}

// ReturnCode is the return code of CONNACK, REGACK, PUBACK, SUBACK,
// WILLTOPICRESP and WILLMSGRESP.
type ReturnCode byte

// The MQTT-SN return codes.
const (
	Accepted             ReturnCode = 0x00
	RejectedCongestion   ReturnCode = 0x01
	RejectedInvalidTopic ReturnCode = 0x02
	RejectedNotSupported ReturnCode = 0x03
	protocolID                      = 0x01 // CONNECT's ProtocolId for MQTT-SN v1.2
	maxShortLength                  = 255  // longest message with the 1-byte length field
	maxMessageLength                = 65535
)

// Topic id types (the low two bits of Flags).
const (
	TopicNormal     byte = 0 // a topic id (PUBLISH) or a topic name (SUBSCRIBE)
	TopicPredefined byte = 1
	TopicShort      byte = 2
)

// Flags is the Flags field of CONNECT, WILLTOPIC, PUBLISH, SUBSCRIBE,
// SUBACK and UNSUBSCRIBE.
type Flags struct {
	DUP          bool
	QoS          int8 // -1, 0, 1 or 2
	Retain       bool
	Will         bool
	CleanSession bool
	TopicIDType  byte // TopicNormal, TopicPredefined or TopicShort
}

func (f Flags) byte() byte {
	var b byte
	if f.DUP {
		b |= 0x80
	}
	switch f.QoS {
	case 1:
		b |= 0x20
	case 2:
		b |= 0x40
	case -1:
		b |= 0x60
	}
	if f.Retain {
		b |= 0x10
	}
	if f.Will {
		b |= 0x08
	}
	if f.CleanSession {
		b |= 0x04
	}
	return b | f.TopicIDType&0x03
}

func flagsOf(b byte) Flags {
	f := Flags{
		DUP:          b&0x80 != 0,
		Retain:       b&0x10 != 0,
		Will:         b&0x08 != 0,
		CleanSession: b&0x04 != 0,
		TopicIDType:  b & 0x03,
	}
	switch (b >> 5) & 0x03 {
	case 1:
		f.QoS = 1
	case 2:
		f.QoS = 2
	case 3:
		f.QoS = -1
	}
	return f
}

// Packet is one MQTT-SN message. Which fields are meaningful depends on
// Type, following the field names of the specification:
//
//	ADVERTISE     GatewayID, Duration
//	SEARCHGW      Radius
//	GWINFO        GatewayID, GatewayAddr
//	CONNECT       Flags, ProtocolID, Duration (keep alive), ClientID
//	CONNACK, WILLTOPICRESP, WILLMSGRESP   ReturnCode
//	WILLTOPIC, WILLTOPICUPD   Flags, TopicName (empty: no will / delete it)
//	WILLMSG, WILLMSGUPD       Data
//	REGISTER      TopicID, MsgID, TopicName
//	REGACK, PUBACK            TopicID, MsgID, ReturnCode
//	PUBLISH       Flags, TopicID (a short name's two bytes too), MsgID, Data
//	PUBREC, PUBREL, PUBCOMP, UNSUBACK   MsgID
//	SUBSCRIBE, UNSUBSCRIBE    Flags, MsgID, TopicName (normal) or TopicID (predefined, short)
//	SUBACK        Flags, TopicID, MsgID, ReturnCode
//	PINGREQ       ClientID (optional)
//	DISCONNECT    Duration when HasDuration (a sleep request)
//	WILLTOPICREQ, WILLMSGREQ, PINGRESP    nothing
type Packet struct {
	Type        MsgType
	Flags       Flags
	GatewayID   byte
	Radius      byte
	GatewayAddr []byte
	ProtocolID  byte
	Duration    uint16
	HasDuration bool
	ClientID    string
	ReturnCode  ReturnCode
	TopicID     uint16
	MsgID       uint16
	TopicName   string
	Data        []byte
}

// ShortTopic returns the two-character topic name carried in a topic id of
// type TopicShort.
func ShortTopic(id uint16) string {
	return string([]byte{byte(id >> 8), byte(id)})
}

// ShortTopicID packs a two-character topic name into a topic id.
func ShortTopicID(name string) uint16 {
	return uint16(name[0])<<8 | uint16(name[1])
}

// DecodeError is why a datagram could not be decoded. Cause is one of the
// Drop* causes, used to count drops.
type DecodeError struct {
	Cause  string
	Type   MsgType
	Reason string
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("mqttsn: decode %s: %s", e.Type, e.Reason)
}

// Drop causes, the keys of Stats.Drops.
const (
	DropShort        = "short"         // fewer bytes than a header
	DropLength       = "length"        // the length field disagrees with the datagram
	DropUnknownType  = "unknown_type"  // a message type MQTT-SN v1.2 does not define
	DropMalformed    = "malformed"     // a field has the wrong size or value
	DropNotConnected = "not_connected" // needs a connection the sender does not have
	DropUnexpected   = "unexpected"    // valid but not expected now (an ack for nothing, a gateway's message)
	DropOverload     = "overload"      // the client's queue was full
	DropBuffer       = "buffer_full"   // a QoS 0 delivery dropped for a full sleep buffer
)

func decodeErr(cause string, t MsgType, format string, args ...any) error {
	return &DecodeError{Cause: cause, Type: t, Reason: fmt.Sprintf(format, args...)}
}

// CauseOf returns the drop cause of a Decode error.
func CauseOf(err error) string {
	var de *DecodeError
	if errors.As(err, &de) {
		return de.Cause
	}
	return DropMalformed
}

// Decode parses one datagram. It accepts the 3-byte length form for short
// messages too. The returned packet shares no memory with b.
func Decode(b []byte) (Packet, error) {
	var p Packet
	if len(b) < 2 {
		return p, decodeErr(DropShort, 0, "%d bytes, need at least 2", len(b))
	}
	length, hdr := int(b[0]), 1
	if b[0] == 0x01 {
		if len(b) < 4 {
			return p, decodeErr(DropShort, 0, "%d bytes with a 3-byte length field", len(b))
		}
		length, hdr = int(binary.BigEndian.Uint16(b[1:3])), 3
	}
	if length != len(b) {
		return p, decodeErr(DropLength, 0, "length field says %d bytes, datagram has %d", length, len(b))
	}
	if length < hdr+1 {
		return p, decodeErr(DropShort, 0, "length %d leaves no message type", length)
	}
	p.Type = MsgType(b[hdr])
	body := b[hdr+1:]
	r := reader{t: p.Type, b: body}
	switch p.Type {
	case TypeAdvertise:
		r.exact(3)
		p.GatewayID = r.u8()
		p.Duration = r.u16()
	case TypeSearchGW:
		r.exact(1)
		p.Radius = r.u8()
	case TypeGWInfo:
		r.atLeast(1)
		p.GatewayID = r.u8()
		p.GatewayAddr = r.rest()
	case TypeConnect:
		r.atLeast(4)
		p.Flags = r.flags()
		p.ProtocolID = r.u8()
		p.Duration = r.u16()
		p.ClientID = r.str()
	case TypeConnack, TypeWillTopicResp, TypeWillMsgResp:
		r.exact(1)
		p.ReturnCode = ReturnCode(r.u8())
	case TypeWillTopicReq, TypeWillMsgReq, TypePingresp:
		r.exact(0)
	case TypeWillTopic, TypeWillTopicUpd:
		if len(body) > 0 { // an empty message deletes the will
			p.Flags = r.flags()
			p.TopicName = r.str()
		}
	case TypeWillMsg, TypeWillMsgUpd:
		p.Data = r.rest()
	case TypeRegister:
		r.atLeast(5)
		p.TopicID = r.u16()
		p.MsgID = r.u16()
		p.TopicName = r.str()
	case TypeRegack, TypePuback:
		r.exact(5)
		p.TopicID = r.u16()
		p.MsgID = r.u16()
		p.ReturnCode = ReturnCode(r.u8())
	case TypePublish:
		r.atLeast(5)
		p.Flags = r.flags()
		p.TopicID = r.u16()
		p.MsgID = r.u16()
		p.Data = r.rest()
	case TypePubcomp, TypePubrec, TypePubrel, TypeUnsuback:
		r.exact(2)
		p.MsgID = r.u16()
	case TypeSubscribe, TypeUnsubscribe:
		r.atLeast(4)
		p.Flags = r.flags()
		p.MsgID = r.u16()
		switch p.Flags.TopicIDType {
		case TopicNormal:
			p.TopicName = r.str()
		case TopicPredefined, TopicShort:
			r.exact(2)
			p.TopicID = r.u16()
		default:
			r.fail(DropMalformed, "reserved topic id type 3")
		}
	case TypeSuback:
		r.exact(6)
		p.Flags = r.flags()
		p.TopicID = r.u16()
		p.MsgID = r.u16()
		p.ReturnCode = ReturnCode(r.u8())
	case TypePingreq:
		p.ClientID = r.str()
	case TypeDisconnect:
		switch len(body) {
		case 0:
		case 2:
			p.Duration, p.HasDuration = r.u16(), true
		default:
			r.fail(DropMalformed, "%d bytes, want 0 or 2 (sleep duration)", len(body))
		}
	default:
		return p, decodeErr(DropUnknownType, p.Type, "unknown message type")
	}
	if r.err != nil {
		return Packet{Type: p.Type}, r.err
	}
	return p, nil
}

// reader reads big-endian fields from a message body, remembering the first
// error; reads after an error return zero values.
type reader struct {
	t   MsgType
	b   []byte
	err error
}

func (r *reader) fail(cause, format string, args ...any) {
	if r.err == nil {
		r.err = decodeErr(cause, r.t, format, args...)
		r.b = nil
	}
}

func (r *reader) exact(n int) {
	if len(r.b) != n {
		r.fail(DropMalformed, "%d bytes of fields, want %d", len(r.b), n)
	}
}

func (r *reader) atLeast(n int) {
	if len(r.b) < n {
		r.fail(DropMalformed, "%d bytes of fields, want at least %d", len(r.b), n)
	}
}

func (r *reader) u8() byte {
	if len(r.b) < 1 {
		r.fail(DropMalformed, "truncated")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u16() uint16 {
	if len(r.b) < 2 {
		r.fail(DropMalformed, "truncated")
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reader) flags() Flags {
	f := r.u8()
	return flagsOf(f)
}

// rest returns a copy of what is left.
func (r *reader) rest() []byte {
	if len(r.b) == 0 {
		return nil
	}
	v := append([]byte(nil), r.b...)
	r.b = nil
	return v
}

// str returns what is left as a UTF-8 string without NUL.
func (r *reader) str() string {
	s := string(r.b)
	r.b = nil
	if !utf8.ValidString(s) {
		r.fail(DropMalformed, "string is not valid UTF-8")
		return ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			r.fail(DropMalformed, "string holds a NUL character")
			return ""
		}
	}
	return s
}

// Encode appends the encoding of p to dst. It fails only when the message
// would be longer than MQTT-SN allows (65535 bytes).
func Encode(dst []byte, p Packet) ([]byte, error) {
	var body []byte
	u16 := func(v uint16) { body = binary.BigEndian.AppendUint16(body, v) }
	switch p.Type {
	case TypeAdvertise:
		body = append(body, p.GatewayID)
		u16(p.Duration)
	case TypeSearchGW:
		body = append(body, p.Radius)
	case TypeGWInfo:
		body = append(append(body, p.GatewayID), p.GatewayAddr...)
	case TypeConnect:
		body = append(body, p.Flags.byte(), p.ProtocolID)
		u16(p.Duration)
		body = append(body, p.ClientID...)
	case TypeConnack, TypeWillTopicResp, TypeWillMsgResp:
		body = append(body, byte(p.ReturnCode))
	case TypeWillTopicReq, TypeWillMsgReq, TypePingresp:
	case TypeWillTopic, TypeWillTopicUpd:
		if p.TopicName != "" {
			body = append(append(body, p.Flags.byte()), p.TopicName...)
		}
	case TypeWillMsg, TypeWillMsgUpd:
		body = append(body, p.Data...)
	case TypeRegister:
		u16(p.TopicID)
		u16(p.MsgID)
		body = append(body, p.TopicName...)
	case TypeRegack, TypePuback:
		u16(p.TopicID)
		u16(p.MsgID)
		body = append(body, byte(p.ReturnCode))
	case TypePublish:
		body = append(body, p.Flags.byte())
		u16(p.TopicID)
		u16(p.MsgID)
		body = append(body, p.Data...)
	case TypePubcomp, TypePubrec, TypePubrel, TypeUnsuback:
		u16(p.MsgID)
	case TypeSubscribe, TypeUnsubscribe:
		body = append(body, p.Flags.byte())
		u16(p.MsgID)
		if p.Flags.TopicIDType == TopicNormal {
			body = append(body, p.TopicName...)
		} else {
			u16(p.TopicID)
		}
	case TypeSuback:
		body = append(body, p.Flags.byte())
		u16(p.TopicID)
		u16(p.MsgID)
		body = append(body, byte(p.ReturnCode))
	case TypePingreq:
		body = append(body, p.ClientID...)
	case TypeDisconnect:
		if p.HasDuration {
			u16(p.Duration)
		}
	default:
		return dst, fmt.Errorf("mqttsn: encode: unknown message type 0x%02x", byte(p.Type))
	}
	n := len(body) + 2
	switch {
	case n <= maxShortLength:
		dst = append(dst, byte(n))
	case n+2 <= maxMessageLength:
		dst = append(dst, 0x01)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n+2))
	default:
		return dst, fmt.Errorf("mqttsn: encode %s: %d bytes, at most %d allowed", p.Type, n+2, maxMessageLength)
	}
	dst = append(dst, byte(p.Type))
	return append(dst, body...), nil
}
