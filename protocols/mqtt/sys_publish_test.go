package mqtt

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/bus"
)

// Issue 17, item 10: a QoS 1 PUBLISH to $SYS/x was never acknowledged (the
// engine drops publishes to $SYS without a word), so the publisher waited
// for ever. MQTT 5 now gets PUBACK / PUBREC 0x87; MQTT 3 a plain PUBACK /
// PUBREC (the message dropped); nobody receives the message.

// TestSysPublishRawPackets sends the attacking PUBLISH as raw bytes, for
// both protocol versions and QoS 0, 1 and 2, and checks the exact answer.
func TestSysPublishRawPackets(t *testing.T) {
	t.Parallel()
	tb := secStart(t, "-", nil)
	watcher := secMustV5(t, tb.Addr("tcp"), secID("watch"), "", "")
	if rc := watcher.sub(t, "$SYS/#", 1); rc >= 0x80 {
		t.Fatalf("subscribe $SYS/#: %#x", rc)
	}
	for _, tc := range []struct {
		name  string
		level byte
		topic string
		qos   byte
		// want is the answer's first byte and reason code (v5); 0 = none.
		want, code byte
	}{
		{"v5 qos1", 5, "$SYS/x", 1, 0x40, 0x87},
		{"v5 qos2", 5, "$SYS/x", 2, 0x50, 0x87},
		{"v5 qos1 lower case", 5, "$sys/broker/uptime", 1, 0x40, 0x87},
		{"v5 qos1 no separator", 5, "$SYSx", 1, 0x40, 0x87},
		{"v5 qos0", 5, "$SYS/x", 0, 0, 0},
		{"v3.1.1 qos1", 4, "$SYS/x", 1, 0x40, 0},
		{"v3.1.1 qos2", 4, "$SYS/x", 2, 0x50, 0},
		{"v3.1 qos1", 3, "$SYS/x", 1, 0x40, 0},
		{"v3.1.1 qos0", 4, "$SYS/x", 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := secDialRaw(t, tb.Addr("tcp"))
			if rc, _ := c.connect(t, tc.level, secID("sys"), "", ""); rc != 0 {
				t.Fatalf("CONNACK %#x", rc)
			}
			const id = 0x1234
			if _, err := c.Write(secPublishPkt(tc.level, tc.topic, tc.qos, id, []byte("forged"))); err != nil {
				t.Fatal(err)
			}
			if tc.want != 0 {
				h, body, err := c.read(secWait)
				if err != nil {
					t.Fatalf("no answer to a QoS %d publish to %s within %s: %v", tc.qos, tc.topic, secWait, err)
				}
				if h != tc.want || len(body) < 2 || binary.BigEndian.Uint16(body) != id {
					t.Fatalf("answer %#x % x, want %#x for packet id %#x", h, body, tc.want, id)
				}
				var code byte
				if len(body) > 2 {
					code = body[2]
				}
				if code != tc.code {
					t.Fatalf("reason code %#x, want %#x (answer % x)", code, tc.code, body)
				}
				if tc.qos == 2 && tc.level < 5 {
					// MQTT 3 goes on with PUBREL and expects PUBCOMP.
					if _, err := c.Write([]byte{0x62, 2, id >> 8, id & 0xff}); err != nil {
						t.Fatal(err)
					}
					h, body, err := c.read(secWait)
					if err != nil || h != 0x70 || binary.BigEndian.Uint16(body) != id {
						t.Fatalf("PUBREL: answer %#x % x err %v, want PUBCOMP", h, body, err)
					}
				}
			}
			// The connection is still usable: PINGREQ gets PINGRESP.
			if _, err := c.Write([]byte{0xC0, 0}); err != nil {
				t.Fatal(err)
			}
			if h, body, err := c.read(secWait); err != nil || h != 0xD0 {
				t.Fatalf("PINGREQ after the refused publish: %#x % x %v, want PINGRESP", h, body, err)
			}
		})
	}
	for {
		select {
		case m := <-watcher.msgs:
			if string(m.Payload) == "forged" {
				t.Fatalf("a subscriber of $SYS/# received the client's publish to %s", m.Topic)
			}
			continue
		case <-time.After(200 * time.Millisecond):
		}
		break
	}
}

// TestSysPublishClientLibraries publishes to $SYS/x with paho.golang (MQTT 5)
// and paho.mqtt.golang (MQTT 3.1.1), the libraries of the other tests: every
// QoS 1/2 publish completes within secWait instead of hanging.
func TestSysPublishClientLibraries(t *testing.T) {
	t.Parallel()
	tb := secStart(t, "-", nil)
	v5 := secMustV5(t, tb.Addr("tcp"), secID("sys5"), "", "")
	for _, qos := range []byte{1, 2} {
		start := time.Now()
		if rc := v5.pub(t, "$SYS/x", qos, "forged"); rc != 0x87 {
			t.Errorf("v5 QoS %d publish to $SYS/x: reason %#x, want 0x87", qos, rc)
		}
		t.Logf("v5 QoS %d refused in %s", qos, time.Since(start).Round(time.Microsecond))
		// The client goes on: an ordinary publish is acknowledged.
		if rc := v5.pub(t, "ordinary", qos, "x"); rc != 0 {
			t.Errorf("v5 QoS %d publish after the refusal: %#x", qos, rc)
		}
	}

	v3 := secMustV3(t, secV3Opts(tb.tcpURL(), secID("sys3")))
	for _, qos := range []byte{1, 2} {
		start := time.Now()
		tok := v3.Publish("$SYS/x", qos, false, "forged")
		if !tok.WaitTimeout(secWait) {
			t.Fatalf("v3 QoS %d publish to $SYS/x: not acknowledged within %s", qos, secWait)
		}
		if err := tok.Error(); err != nil {
			t.Errorf("v3 QoS %d publish to $SYS/x: %v", qos, err)
		}
		t.Logf("v3 QoS %d acknowledged (dropped) in %s", qos, time.Since(start).Round(time.Microsecond))
	}
	if !v3.IsConnectionOpen() {
		t.Error("v3 client disconnected")
	}
	select {
	case err := <-v3.lost:
		t.Errorf("v3 connection lost: %v", err)
	default:
	}
}

// TestSysPublishSession: the in-process sessions of the CoAP and MQTT-SN
// gateways (MQTT 5) get the refusal as a *bus.Refusal with 0x87, at once.
func TestSysPublishSession(t *testing.T) {
	t.Parallel()
	tb := secStart(t, "-", nil)
	ctx, cancel := context.WithTimeout(context.Background(), secWait)
	defer cancel()
	s, err := tb.Connect(ctx, SessionOptions{
		Listener: "coap-test", Remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5683},
		ClientID: secID("coap"), CleanStart: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, qos := range []byte{1, 2} {
		err := s.Publish(ctx, bus.Message{Topic: "$SYS/x", QoS: qos, Payload: []byte("forged")})
		if r := bus.RefusalOf(err); err == nil || r.Code != 0x87 {
			t.Errorf("session QoS %d publish to $SYS/x: %v, want a 0x87 refusal", qos, err)
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("took longer than %s", secWait)
	}
}
