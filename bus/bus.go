// Package bus is the small, standard-library-only interface through which the
// parts of fieldgate talk to each other: every part publishes and subscribes
// to topics of the local broker and to nothing else.
//
// The real implementation is the MQTT broker (protocols/mqtt); Memory is an
// in-process implementation with the same semantics for tests of the parts
// that only need a bus.
//
// Two kinds of observers exist:
//
//   - Subscribe delivers messages after the broker accepted them. Handlers run
//     in the publisher's goroutine and must only enqueue (never block, never
//     publish back synchronously in a way that could wait on themselves).
//   - Tap sees a publish synchronously before the publisher is acknowledged
//     (PUBACK/PUBREC) and may refuse it. It exists so that the uplink can make
//     a message durable in its outbox before the local publisher is told that
//     the gateway has it.
package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Message is one publish on the bus.
type Message struct {
	// Topic is the topic name (never a filter).
	Topic string
	// Payload is the message body. Receivers must not modify it.
	Payload []byte
	// QoS is 0, 1 or 2.
	QoS byte
	// Retain asks the broker to keep the message as the topic's retained one.
	Retain bool
	// Origin names who published it: an MQTT client id, or a part of the
	// gateway such as "uplink" or "southbound". The uplink uses it so that a
	// message that came down from the cloud is never sent back up.
	Origin string
	// Time is when the broker accepted the message.
	Time time.Time
	// Expiry, when not zero, is how long the message stays valid (MQTT 5
	// message expiry interval).
	Expiry time.Duration
	// ContentType, ResponseTopic and CorrelationData are the MQTT 5
	// request/response properties.
	ContentType     string
	ResponseTopic   string
	CorrelationData []byte
	// UserProperties are the MQTT 5 user properties, in order.
	UserProperties []UserProperty
}

// UserProperty is one MQTT 5 user property.
type UserProperty struct {
	Key, Value string
}

// Handler receives a message. It runs in the publisher's goroutine: it must
// return quickly and must not block.
type Handler func(Message)

// TapFunc sees a QoS 1 or 2 publish before the publisher is acknowledged (and
// a QoS 0 publish before it is delivered). Returning nil accepts the message;
// returning an error refuses it: an MQTT 5 publisher gets the reason code of a
// *Refusal (ErrQuotaExceeded, for example), others have the message dropped.
type TapFunc func(Message) error

// Bus is what parts of the gateway use to exchange messages.
type Bus interface {
	// Publish injects a message as if a client had published it. It bypasses
	// authentication and ACL: the parts of the gateway are trusted.
	Publish(ctx context.Context, m Message) error
	// Subscribe calls h for every accepted message whose topic matches filter
	// (MQTT wildcards + and #). The returned function removes the
	// subscription.
	Subscribe(filter string, h Handler) (unsubscribe func(), err error)
	// Tap calls fn for every publish whose topic matches filter before the
	// publisher is acknowledged. The returned function removes the tap.
	Tap(filter string, fn TapFunc) (remove func(), err error)
}

// Refusal is a tap's reason for refusing a publish, carrying the MQTT 5
// reason code the publisher gets.
type Refusal struct {
	Code   byte
	Reason string
}

func (r *Refusal) Error() string { return fmt.Sprintf("refused: %s (0x%02x)", r.Reason, r.Code) }

// Refusals a tap commonly returns.
var (
	// ErrQuotaExceeded (0x97) says the gateway cannot take the message now,
	// for example because the outbox is full and refuses new messages.
	ErrQuotaExceeded = &Refusal{Code: 0x97, Reason: "quota exceeded"}
	// ErrUnavailable (0x80, unspecified error) says the message could not be
	// stored, for example because the disk failed.
	ErrUnavailable = &Refusal{Code: 0x80, Reason: "unspecified error"}
)

// RefusalOf returns the Refusal an error carries, or ErrUnavailable for any
// other non-nil error.
func RefusalOf(err error) *Refusal {
	if err == nil {
		return nil
	}
	var r *Refusal
	if errors.As(err, &r) {
		return r
	}
	return ErrUnavailable
}

// ValidFilter reports whether filter is a valid MQTT topic filter.
func ValidFilter(filter string) bool {
	if filter == "" {
		return false
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
	}
	return true
}

// Match reports whether the topic name matches the topic filter, following
// MQTT's rules: + matches one level, # the rest (including the parent), and
// wildcards at the first level never match topics starting with $.
func Match(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		tl, trest, tmore := strings.Cut(topic, "/")
		switch {
		case fl == "#":
			return true
		case fl != "+" && fl != tl:
			return false
		}
		if !fmore || !tmore {
			if fmore && !tmore { // topic a, filter a/#
				return frest == "#"
			}
			return fmore == tmore
		}
		filter, topic = frest, trest
	}
}
