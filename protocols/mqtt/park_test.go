//go:build linux

package mqtt

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
)

// Idle TCP connections park (park.go, internal/rawio.Poller): their reader
// goroutine ends after parkAfter without input, and a new one starts when
// input arrives, the connection closes or keep alive runs out. These tests
// drive real clients over loopback through each of those wake-ups.

// parkWait bounds every wait for parking or waking; parking itself takes
// parkAfter.
const parkWait = 15 * time.Second

// waitParked waits until at least n of tb's connections are parked.
func waitParked(t *testing.T, tb *testBroker, n int64) {
	t.Helper()
	testwait.For(t, parkWait, "connections parked", func() bool {
		return tb.Stats().ParkedConnections.Load() >= n
	})
}

// parkClient connects an MQTT 3.1.1 client with the given keep alive.
func parkClient(t *testing.T, tb *testBroker, id string, keepalive uint16) *secRaw {
	t.Helper()
	c := secDialRaw(t, tb.Addr("tcp"))
	if _, err := c.Write(secConnectPktKeepalive(4, id, keepalive, "", "")); err != nil {
		t.Fatal(err)
	}
	h, body, err := c.read(secWait)
	if err != nil || h != 0x20 || len(body) < 2 || body[1] != 0 {
		t.Fatalf("CONNACK %#x % x %v", h, body, err)
	}
	return c
}

// expect reads one packet and fails unless its first byte is want.
func (c *secRaw) expect(t *testing.T, want byte) []byte {
	t.Helper()
	h, body, err := c.read(secWait)
	if err != nil || h != want {
		t.Fatalf("read %#x % x %v, want a packet %#x", h, body, err, want)
	}
	return body
}

func TestParkedClientsPublishAndReceive(t *testing.T) {
	tb := startBroker(t, "-", nil)
	sub := parkClient(t, tb, "park-sub", 60)
	if _, err := sub.Write(secSubscribePkt(4, 1, "park/t", 1)); err != nil {
		t.Fatal(err)
	}
	sub.expect(t, 0x90)
	pub := parkClient(t, tb, "park-pub", 60)
	for round := uint16(1); round <= 3; round++ {
		// Both readers have ended; the publisher's PUBLISH wakes its
		// connection, and the message is written to the parked subscriber.
		waitParked(t, tb, 2)
		if _, err := pub.Write(secPublishPkt(4, "park/t", 1, round, []byte("reading"))); err != nil {
			t.Fatal(err)
		}
		if ack := pub.expect(t, 0x40); binary.BigEndian.Uint16(ack) != round {
			t.Fatalf("round %d: PUBACK for id %d", round, binary.BigEndian.Uint16(ack))
		}
		body := sub.expect(t, 0x32)
		id := binary.BigEndian.Uint16(body[2+len("park/t"):])
		if string(body[2+len("park/t")+2:]) != "reading" {
			t.Fatalf("round %d: payload %q", round, body[2+len("park/t")+2:])
		}
		// The subscriber's PUBACK wakes its connection in turn.
		if _, err := sub.Write(secPacket(0x40, binary.BigEndian.AppendUint16(nil, id))); err != nil {
			t.Fatal(err)
		}
	}
	waitParked(t, tb, 2)
}

func TestParkedKeepaliveStillEnforced(t *testing.T) {
	tb := startBroker(t, "-", nil)
	// Keep alive 2 s: the broker closes a silent client after 3 s. It
	// parks after parkAfter and is woken by its keep alive deadline.
	silent := parkClient(t, tb, "park-silent", 2)
	waitParked(t, tb, 1)
	start := time.Now()
	secClosedWithin(t, silent, 10*time.Second)
	if el := time.Since(start); el < time.Second {
		t.Fatalf("closed %v after parking: before its keep alive ran out", el)
	}

	// A client that pings within its keep alive stays: each PINGREQ wakes
	// its parked connection and moves the deadline on.
	pinger := parkClient(t, tb, "park-pinger", 2)
	for i := 0; i < 4; i++ {
		waitParked(t, tb, 1)
		if _, err := pinger.Write([]byte{0xC0, 0}); err != nil {
			t.Fatal(err)
		}
		pinger.expect(t, 0xD0)
	}
}

func TestParkedSlowPacketCompletes(t *testing.T) {
	tb := startBroker(t, "-", nil)
	c := parkClient(t, tb, "park-slow", 60)
	waitParked(t, tb, 1)
	// The first bytes of a PUBLISH wake the connection; the rest comes
	// after longer than parkAfter. The short wait before parking applies
	// between packets only: the packet is read whole, not timed out.
	pkt := secPublishPkt(4, "park/slow", 1, 7, []byte("late half"))
	if _, err := c.Write(pkt[:3]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(parkAfter + parkAfter/2)
	if _, err := c.Write(pkt[3:]); err != nil {
		t.Fatal(err)
	}
	if ack := c.expect(t, 0x40); binary.BigEndian.Uint16(ack) != 7 {
		t.Fatalf("PUBACK for id %d, want 7", binary.BigEndian.Uint16(ack))
	}
}

func TestParkedSessionTakenOver(t *testing.T) {
	tb := startBroker(t, "-", nil)
	first := parkClient(t, tb, "park-twice", 60)
	waitParked(t, tb, 1)
	second := parkClient(t, tb, "park-twice", 60)
	secClosedWithin(t, first, parkWait) // woken by the close, its reader ends
	testwait.For(t, parkWait, "one client connected", func() bool { return tb.Info().ClientsConnected == 1 })
	if _, err := second.Write([]byte{0xC0, 0}); err != nil {
		t.Fatal(err)
	}
	second.expect(t, 0xD0)
}

func TestParkedWillOnLostConnection(t *testing.T) {
	tb := startBroker(t, "-", nil)
	sub := parkClient(t, tb, "park-will-sub", 60)
	if _, err := sub.Write(secSubscribePkt(4, 1, "park/will", 0)); err != nil {
		t.Fatal(err)
	}
	sub.expect(t, 0x90)

	dev := secDialRaw(t, tb.Addr("tcp"))
	// CONNECT 3.1.1, clean session, will QoS 0 on park/will.
	body := append(secStr("MQTT"), 4, 0x02|0x04, 0, 60)
	body = append(body, secStr("park-will-dev")...)
	body = append(body, secStr("park/will")...)
	body = append(body, secStr("gone")...)
	if _, err := dev.Write(secPacket(0x10, body)); err != nil {
		t.Fatal(err)
	}
	dev.expect(t, 0x20)
	waitParked(t, tb, 2)
	_ = dev.Close() // no DISCONNECT: the will is due
	got := sub.expect(t, 0x30)
	if string(got[2+len("park/will"):]) != "gone" {
		t.Fatalf("will payload %q", got[2+len("park/will"):])
	}
}

func TestParkedConnectionsEndWithBroker(t *testing.T) {
	tb := startBroker(t, "-", nil)
	var conns []*secRaw
	for i := 0; i < 50; i++ {
		conns = append(conns, parkClient(t, tb, "park-stop-"+string(rune('a'+i%26))+string(rune('a'+i/26)), 0))
	}
	waitParked(t, tb, 50)
	tb.stop() // returns once every client has ended
	for _, c := range conns {
		secClosedWithin(t, c, secWait)
	}
	if n := tb.Info().ClientsConnected; n != 0 {
		t.Fatalf("%d clients still counted as connected", n)
	}
}
