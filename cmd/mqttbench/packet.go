package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MQTT 3.1.1 control packet types (the high nibble of the first byte).
const (
	typeConnect    = 1
	typeConnack    = 2
	typePublish    = 3
	typePuback     = 4
	typeSubscribe  = 8
	typeSuback     = 9
	typePingreq    = 12
	typePingresp   = 13
	typeDisconnect = 14
)

// maxRemainingLength is the largest packet body the decoder accepts. The
// benchmark never sends more than a few hundred bytes; anything larger is a
// broken stream.
const maxRemainingLength = 1 << 20

// errMalformed is wrapped by every decoding error about packet contents.
var errMalformed = errors.New("malformed packet")

// appendRemainingLength appends n in MQTT's variable-length encoding.
func appendRemainingLength(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// appendString appends a length-prefixed UTF-8 string.
func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// appendConnect appends an MQTT 3.1.1 CONNECT without will, username or
// password.
func appendConnect(b []byte, clientID string, keepAliveSeconds uint16, cleanSession bool) []byte {
	const variableHeaderLen = 10 // protocol name (6), level, flags, keep alive (2)
	flags := byte(0)
	if cleanSession {
		flags |= 0x02
	}
	b = append(b, typeConnect<<4)
	b = appendRemainingLength(b, variableHeaderLen+2+len(clientID))
	b = appendString(b, "MQTT")
	b = append(b, 4, flags) // protocol level 4 = 3.1.1
	b = binary.BigEndian.AppendUint16(b, keepAliveSeconds)
	return appendString(b, clientID)
}

// appendPublish appends a PUBLISH. packetID is used only when qos > 0.
func appendPublish(b []byte, topic string, qos byte, packetID uint16, payload []byte) []byte {
	return appendPublishRetain(b, topic, qos, false, packetID, payload)
}

// appendPublishRetain is appendPublish with the retain flag given.
func appendPublishRetain(b []byte, topic string, qos byte, retain bool, packetID uint16, payload []byte) []byte {
	n := 2 + len(topic) + len(payload)
	if qos > 0 {
		n += 2
	}
	header := typePublish<<4 | qos<<1
	if retain {
		header |= 0x01
	}
	b = append(b, header)
	b = appendRemainingLength(b, n)
	b = appendString(b, topic)
	if qos > 0 {
		b = binary.BigEndian.AppendUint16(b, packetID)
	}
	return append(b, payload...)
}

// appendSubscribe appends a SUBSCRIBE for one topic filter.
func appendSubscribe(b []byte, packetID uint16, filter string, qos byte) []byte {
	b = append(b, typeSubscribe<<4|0x02) // reserved flags must be 0010
	b = appendRemainingLength(b, 2+2+len(filter)+1)
	b = binary.BigEndian.AppendUint16(b, packetID)
	b = appendString(b, filter)
	return append(b, qos)
}

// appendPuback appends a PUBACK for packetID.
func appendPuback(b []byte, packetID uint16) []byte {
	b = append(b, typePuback<<4, 2)
	return binary.BigEndian.AppendUint16(b, packetID)
}

// appendPingreq appends a PINGREQ.
func appendPingreq(b []byte) []byte {
	return append(b, typePingreq<<4, 0)
}

// appendDisconnect appends a DISCONNECT.
func appendDisconnect(b []byte) []byte {
	return append(b, typeDisconnect<<4, 0)
}

// packetReader decodes packets from a buffered stream, reusing one body
// buffer: the body returned by next is valid only until the following call.
type packetReader struct {
	r   *bufio.Reader
	buf []byte
	// beforeBlock, when set, is called before a read that may block on the
	// network, i.e. when the buffered bytes do not hold what is needed next.
	// Subscribers use it to flush their pending PUBACKs: a broker whose
	// in-flight window is full waits for them.
	beforeBlock func() error
}

// newPacketReader returns a packetReader over r.
func newPacketReader(r *bufio.Reader) *packetReader {
	return &packetReader{r: r, buf: make([]byte, 0, 512)}
}

// ensure calls beforeBlock when fewer than n bytes are buffered.
func (p *packetReader) ensure(n int) error {
	if p.beforeBlock == nil || p.r.Buffered() >= n {
		return nil
	}
	return p.beforeBlock()
}

// next reads one packet and returns its first byte and its body.
func (p *packetReader) next() (header byte, body []byte, err error) {
	if err := p.ensure(2); err != nil {
		return 0, nil, err
	}
	header, err = p.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, err := readRemainingLength(p.r)
	if err != nil {
		return 0, nil, err
	}
	if cap(p.buf) < n {
		p.buf = make([]byte, n)
	}
	body = p.buf[:n]
	if err := p.ensure(n); err != nil {
		return 0, nil, err
	}
	if _, err := io.ReadFull(p.r, body); err != nil {
		return 0, nil, fmt.Errorf("read body of packet type %d: %w", header>>4, unexpectedEOF(err))
	}
	return header, body, nil
}

// readRemainingLength decodes MQTT's variable-length integer.
func readRemainingLength(r io.ByteReader) (int, error) {
	n, shift := 0, 0
	for i := 0; i < 4; i++ {
		d, err := r.ReadByte()
		if err != nil {
			if i > 0 {
				err = unexpectedEOF(err)
			}
			return 0, err
		}
		n |= int(d&0x7f) << shift
		if d&0x80 == 0 {
			if n > maxRemainingLength {
				return 0, fmt.Errorf("%w: remaining length %d over %d", errMalformed, n, maxRemainingLength)
			}
			return n, nil
		}
		shift += 7
	}
	return 0, fmt.Errorf("%w: remaining length longer than 4 bytes", errMalformed)
}

// unexpectedEOF turns io.EOF inside a packet into io.ErrUnexpectedEOF.
func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// publishView is a decoded PUBLISH; its slices alias the packet body.
type publishView struct {
	QoS      byte
	Topic    []byte
	PacketID uint16
	Payload  []byte
}

// parsePublish decodes the body of a PUBLISH whose first byte is header.
func parsePublish(header byte, body []byte) (publishView, error) {
	var p publishView
	p.QoS = header >> 1 & 0x03
	if p.QoS > 2 {
		return p, fmt.Errorf("%w: PUBLISH with QoS 3", errMalformed)
	}
	if len(body) < 2 {
		return p, fmt.Errorf("%w: PUBLISH body of %d bytes", errMalformed, len(body))
	}
	tl := int(binary.BigEndian.Uint16(body))
	rest := body[2:]
	if len(rest) < tl {
		return p, fmt.Errorf("%w: PUBLISH topic length %d over body", errMalformed, tl)
	}
	p.Topic, rest = rest[:tl], rest[tl:]
	if p.QoS > 0 {
		if len(rest) < 2 {
			return p, fmt.Errorf("%w: PUBLISH without packet id", errMalformed)
		}
		p.PacketID, rest = binary.BigEndian.Uint16(rest), rest[2:]
	}
	p.Payload = rest
	return p, nil
}

// parseConnack returns the return code of a CONNACK body (0 = accepted).
func parseConnack(body []byte) (byte, error) {
	if len(body) != 2 {
		return 0, fmt.Errorf("%w: CONNACK body of %d bytes", errMalformed, len(body))
	}
	return body[1], nil
}

// parsePacketID returns the packet id of a PUBACK (or any ack with a bare
// packet id body).
func parsePacketID(body []byte) (uint16, error) {
	if len(body) < 2 {
		return 0, fmt.Errorf("%w: ack body of %d bytes", errMalformed, len(body))
	}
	return binary.BigEndian.Uint16(body), nil
}

// parseSuback returns the packet id and the granted QoS codes of a SUBACK
// (0x80 = failure).
func parseSuback(body []byte) (uint16, []byte, error) {
	if len(body) < 3 {
		return 0, nil, fmt.Errorf("%w: SUBACK body of %d bytes", errMalformed, len(body))
	}
	return binary.BigEndian.Uint16(body), body[2:], nil
}
