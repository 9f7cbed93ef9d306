package uplink

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// record is what the outbox keeps for one message on its way up: the cloud
// topic (the forward rule's template already applied), the QoS towards the
// cloud, the retain flag and the payload.
//
// Encoding (version 1): 1 byte version, 1 byte flags (bits 0-1 QoS, bit 2
// retain), uvarint topic length, topic, payload (the rest). Records outlive
// the process and may come back from a damaged file, so decodeRecord trusts
// nothing.
type record struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
}

const recordVersion = 1

func (r record) encode() []byte {
	b := make([]byte, 0, 2+binary.MaxVarintLen32+len(r.Topic)+len(r.Payload))
	flags := r.QoS & 3
	if r.Retain {
		flags |= 4
	}
	b = append(b, recordVersion, flags)
	b = binary.AppendUvarint(b, uint64(len(r.Topic)))
	b = append(b, r.Topic...)
	return append(b, r.Payload...)
}

var errBadRecord = errors.New("bad outbox record")

// decodeRecord decodes b; the payload aliases b.
func decodeRecord(b []byte) (record, error) {
	if len(b) < 3 {
		return record{}, fmt.Errorf("%w: %d bytes", errBadRecord, len(b))
	}
	if b[0] != recordVersion {
		return record{}, fmt.Errorf("%w: version %d", errBadRecord, b[0])
	}
	flags := b[1]
	if flags&^7 != 0 || flags&3 > 1 {
		return record{}, fmt.Errorf("%w: flags %#x", errBadRecord, flags)
	}
	n, w := binary.Uvarint(b[2:])
	if w <= 0 || n == 0 || n > 65535 || n > uint64(len(b)-2-w) {
		return record{}, fmt.Errorf("%w: topic length", errBadRecord)
	}
	start := 2 + w
	topic := string(b[start : start+int(n)])
	if strings.ContainsAny(topic, "+#\x00") {
		return record{}, fmt.Errorf("%w: topic %q", errBadRecord, topic)
	}
	return record{
		Topic:   topic,
		Payload: b[start+int(n):],
		QoS:     flags & 3,
		Retain:  flags&4 != 0,
	}, nil
}
