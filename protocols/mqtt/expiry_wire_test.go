package mqtt

import (
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// A message published without a Message Expiry Interval is delivered
// without one (the broker's max_message_expiry bound is its own and is not
// sent); a message published with one is delivered with the time left, live
// and retained, and never with more than max_message_expiry.
func TestMessageExpiryOnDelivery(t *testing.T) {
	tb := startBroker(t, "-", func(c *Config) { c.Limits.MaxMessageExpiry = time.Hour })
	sub, _ := v5Dial(t, tb, "exp-sub", true, packets.Properties{})
	sub.subscribe("exp/#", 1)
	pub, _ := v5Dial(t, tb, "exp-pub", true, packets.Properties{})

	cases := []struct {
		name     string
		interval uint32 // published
		min, max uint32 // delivered
	}{
		{"none", 0, 0, 0},
		{"set", 100, 98, 100},
		{"above the bound", 7200, 3598, 3600},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			topic := "exp/" + c.name
			for _, retain := range []bool{false, true} {
				pk := packets.Packet{
					FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: retain},
					TopicName:   topic,
					Payload:     []byte("x"),
					Properties:  packets.Properties{MessageExpiryInterval: c.interval},
				}
				pub.id++
				pk.PacketID = pub.id
				pub.write(pk)
				if ack := pub.read(); ack.FixedHeader.Type != packets.Puback || ack.ReasonCode != 0 {
					t.Fatalf("PUBACK: type %d reason %#x", ack.FixedHeader.Type, ack.ReasonCode)
				}
				m := sub.readPublish()
				sub.puback(m.PacketID)
				if got := m.Properties.MessageExpiryInterval; got < c.min || got > c.max {
					t.Fatalf("retain %v: delivered with Message Expiry Interval %d, want %d..%d", retain, got, c.min, c.max)
				}
			}

			// The retained copy, sent to a new subscriber.
			late, _ := v5Dial(t, tb, "exp-late-"+c.name, true, packets.Properties{})
			late.subscribe(topic, 1)
			m := late.readPublish()
			if !m.FixedHeader.Retain {
				t.Fatalf("late subscriber got a non-retained message")
			}
			if got := m.Properties.MessageExpiryInterval; got < c.min || got > c.max {
				t.Fatalf("retained: delivered with Message Expiry Interval %d, want %d..%d", got, c.min, c.max)
			}
		})
	}
}
