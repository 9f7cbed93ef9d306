package mqttsn

import (
	"encoding/hex"
	"fmt"
	"net/netip"
)

// Forwarders (MQTT-SN v1.2, section 5.5): a device on a radio network that
// cannot reach the gateway itself talks through a forwarder, which wraps each
// message in an Encapsulated Message (type 0xFE) naming the device by its
// wireless node id and sends it from its own UDP address. The gateway keeps
// one session per (forwarder address, node id) and wraps every answer the
// same way, so the forwarder can hand it to the right node.

// TypeEncapsulated is the Encapsulated Message type.
const TypeEncapsulated MsgType = 0xFE

// maxNodeIDLength is the longest wireless node id a 1-octet length allows
// (255 - length, type and Ctrl octets).
const maxNodeIDLength = 252

// Encapsulation is the header a forwarder puts in front of a device's
// message.
type Encapsulation struct {
	// Ctrl carries the broadcast radius in its two low bits (meaningful
	// only towards the forwarder); the other bits are reserved.
	Ctrl byte
	// NodeID is the wireless node id of the device, 1 to 252 octets.
	NodeID []byte
}

// Unwrap splits an encapsulated datagram into its header and the device's
// message. It reports false, with no error, when b is not encapsulated.
func Unwrap(b []byte) (Encapsulation, []byte, bool, error) {
	if len(b) < 2 || b[0] == 0x01 || MsgType(b[1]) != TypeEncapsulated {
		return Encapsulation{}, nil, false, nil
	}
	n := int(b[0])
	switch {
	case n < 4:
		return Encapsulation{}, nil, true, decodeErr(DropMalformed, TypeEncapsulated, "header length %d leaves no wireless node id", n)
	case n > len(b):
		return Encapsulation{}, nil, true, decodeErr(DropLength, TypeEncapsulated, "header length %d, datagram has %d bytes", n, len(b))
	case n == len(b):
		return Encapsulation{}, nil, true, decodeErr(DropShort, TypeEncapsulated, "no message after the %d-byte header", n)
	}
	inner := b[n:]
	if len(inner) >= 2 && inner[0] != 0x01 && MsgType(inner[1]) == TypeEncapsulated {
		return Encapsulation{}, nil, true, decodeErr(DropMalformed, TypeEncapsulated, "an encapsulated message inside another")
	}
	return Encapsulation{Ctrl: b[2], NodeID: b[3:n]}, inner, true, nil
}

// Wrap appends msg to dst inside an encapsulation header.
func Wrap(dst []byte, e Encapsulation, msg []byte) ([]byte, error) {
	if len(e.NodeID) == 0 || len(e.NodeID) > maxNodeIDLength {
		return dst, fmt.Errorf("mqttsn: wireless node id of %d bytes, need 1 to %d", len(e.NodeID), maxNodeIDLength)
	}
	dst = append(dst, byte(3+len(e.NodeID)), byte(TypeEncapsulated), e.Ctrl)
	dst = append(dst, e.NodeID...)
	return append(dst, msg...), nil
}

// peer is where a device is: its UDP address and, behind a forwarder, its
// wireless node id ("" for a device that talks to the gateway directly).
type peer struct {
	addr netip.AddrPort
	node string
}

// String is the address, with the node id in hex after a slash behind a
// forwarder ("192.0.2.7:5000/0a1b").
func (p peer) String() string {
	if p.node == "" {
		return p.addr.String()
	}
	return p.addr.String() + "/" + hex.EncodeToString([]byte(p.node))
}
