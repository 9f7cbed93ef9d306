package mqtt

// Packet ids of outgoing messages across a broker restart (issue 18
// follow-up): a message that was sent and not acknowledged is resent under
// the same packet id with DUP=1 [MQTT-3.3.1-1] [MQTT-4.4.0-1], an outgoing
// QoS 2 flow that reached PUBREL resumes with the PUBREL [MQTT-4.3.3], and
// messages never sent follow with fresh ids. Raw MQTT 3.1.1 clients on
// loopback, real bbolt files; the restart is either graceful (the broker
// stopped, a new one opened on the same file) or a crash (the file copied
// while the broker runs, after its last commit, as a kill -9 leaves it).

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/testwait"
	"github.com/fieldgate/fieldgate/store"
)

// pidWait bounds each packet read in these tests (generous: -race, a
// shared machine).
const pidWait = 20 * time.Second

// pidRead reads the next packet, failing the test after pidWait.
func pidRead(t *testing.T, rc *qClient, r *bufio.Reader) qPacket {
	t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(pidWait))
	defer func() { _ = rc.c.SetReadDeadline(time.Time{}) }()
	pk, err := qRead(r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return pk
}

// pidPublish reads the next packet, which must be a PUBLISH at qos.
func pidPublish(t *testing.T, rc *qClient, r *bufio.Reader, qos byte) qPublish {
	t.Helper()
	pk := pidRead(t, rc, r)
	p, ok := parsePublish(pk)
	if !ok {
		t.Fatalf("got packet type %d (first byte %#x), want a PUBLISH", pk.first>>4, pk.first)
	}
	if got := (pk.first >> 1) & 3; got != qos {
		t.Fatalf("PUBLISH %q at QoS %d, want %d", p.payload, got, qos)
	}
	return p
}

// pidAck sends an acknowledgement (PUBACK 0x40, PUBREC 0x50, PUBCOMP 0x70)
// for packet id.
func pidAck(t *testing.T, rc *qClient, first byte, id uint16) {
	rc.write(t, first, binary.BigEndian.AppendUint16(nil, id), true)
}

// pidRestart ends tb's run and returns a broker started on its store, and
// that store's path: graceful, or on a copy of the file taken while tb
// still runs, after its last commit (what a kill -9 leaves).
func pidRestart(t *testing.T, tb *testBroker, path string, crash bool) (*testBroker, string) {
	t.Helper()
	if !crash {
		tb.stop()
		return startBroker(t, path, nil), path
	}
	ctx, cancel := context.WithTimeout(context.Background(), pidWait)
	defer cancel()
	must(t, tb.db.Sync(ctx))
	data, err := os.ReadFile(path)
	must(t, err)
	crashed := filepath.Join(filepath.Dir(path), "crashed.db")
	must(t, os.WriteFile(crashed, data, 0o600))
	tb.stop() // the copy is what the crash left
	return startBroker(t, crashed, nil), crashed
}

func pidPublishMsg(t *testing.T, tb *testBroker, qos byte, payload string) {
	t.Helper()
	if err := tb.Publish(context.Background(), bus.Message{Topic: "q/a", QoS: qos, Payload: []byte(payload)}); err != nil {
		t.Fatal(err)
	}
}

// TestPIDQoS1ResentWithSameID: three QoS 1 messages reach a persistent
// session, which acknowledges none and goes offline; three more are queued.
// After a restart the client gets the three again first, in order, under
// the same packet ids with DUP=1, then the three others with DUP=0 and ids
// not in use.
func TestPIDQoS1ResentWithSameID(t *testing.T) {
	for _, crash := range []bool{false, true} {
		name := "graceful"
		if crash {
			name = "crash"
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "broker.db")
			tb := startBroker(t, path, nil)
			rc, r := qDial(t, tb, "sub", false)
			rc.subscribe(t, r, "q/#", 1)
			// Five messages acknowledged first: the ids of the next ones
			// are not those a restarted broker would give first.
			for range 5 {
				pidPublishMsg(t, tb, 1, "acked")
				pidAck(t, rc, 0x40, pidPublish(t, rc, r, 1).id)
			}
			sent := make(map[string]uint16)
			for _, m := range []string{"m0", "m1", "m2"} {
				pidPublishMsg(t, tb, 1, m)
				p := pidPublish(t, rc, r, 1)
				if p.payload != m || p.dup {
					t.Fatalf("first delivery: got %q dup=%v, want %q dup=false", p.payload, p.dup, m)
				}
				sent[m] = p.id
			}
			_ = rc.c.Close() // no PUBACK
			waitOffline(t, tb, "sub")
			for _, m := range []string{"m3", "m4", "m5"} {
				pidPublishMsg(t, tb, 1, m)
			}

			tb, path = pidRestart(t, tb, path, crash)
			rc, r = qDial(t, tb, "sub", false)
			inUse := make(map[uint16]string)
			for _, m := range []string{"m0", "m1", "m2"} {
				p := pidPublish(t, rc, r, 1)
				if p.payload != m || p.id != sent[m] || !p.dup {
					t.Fatalf("after restart: got %q id %d dup=%v, want %q id %d dup=true (resent first, same id [MQTT-4.4.0-1])", p.payload, p.id, p.dup, m, sent[m])
				}
				inUse[p.id] = m
			}
			for _, m := range []string{"m3", "m4", "m5"} {
				p := pidPublish(t, rc, r, 1)
				if p.payload != m || p.dup {
					t.Fatalf("after restart: got %q dup=%v, want %q dup=false (never sent before)", p.payload, p.dup, m)
				}
				if other, ok := inUse[p.id]; ok {
					t.Fatalf("%q got packet id %d, still in use by %q", m, p.id, other)
				}
				inUse[p.id] = m
			}
			for id := range inUse {
				pidAck(t, rc, 0x40, id)
			}
			testwait.For(t, pidWait, "every message acknowledged", func() bool { return heldCount(tb, "sub") == 0 })
			_ = rc.c.Close()
			tb.stop()
			checkNoRecords(t, path)
		})
	}
}

// checkNoRecords checks that the store at path (closed) holds no inflight
// record.
func checkNoRecords(t *testing.T, path string) {
	t.Helper()
	db, err := store.Open(path, store.Options{})
	must(t, err)
	defer db.Close()
	if n := countBucket(t, db, inflightBucket); n != 0 {
		t.Errorf("%d inflight records left after every flow completed", n)
	}
}

// TestPIDQoS2ResumesWithPubrel: a QoS 2 message whose PUBREC the broker
// took (it sent PUBREL) is resumed after a restart with the PUBREL under
// the same id, and the PUBLISH never comes again; one whose PUBREC never
// came is resent under the same id with DUP=1.
func TestPIDQoS2ResumesWithPubrel(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pubrec bool
		crash  bool
	}{
		{name: "pubrec-sent/graceful", pubrec: true},
		{name: "pubrec-sent/crash", pubrec: true, crash: true},
		{name: "no-pubrec/graceful"},
		{name: "no-pubrec/crash", crash: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "broker.db")
			tb := startBroker(t, path, nil)
			rc, r := qDial(t, tb, "sub2", false)
			rc.subscribe(t, r, "q/#", 2)
			// One flow completed first: "x" does not get the id a
			// restarted broker would give first.
			pidPublishMsg(t, tb, 2, "done")
			done := pidPublish(t, rc, r, 2).id
			pidAck(t, rc, 0x50, done)
			if pk := pidRead(t, rc, r); pk.first != 0x62 {
				t.Fatalf("got first byte %#x, want PUBREL", pk.first)
			}
			pidAck(t, rc, 0x70, done)
			pidPublishMsg(t, tb, 2, "x")
			p := pidPublish(t, rc, r, 2)
			if p.payload != "x" || p.dup {
				t.Fatalf("first delivery: got %q dup=%v", p.payload, p.dup)
			}
			id := p.id
			if tc.pubrec {
				pidAck(t, rc, 0x50, id)
				pk := pidRead(t, rc, r)
				if pk.first != 0x62 || binary.BigEndian.Uint16(pk.body) != id {
					t.Fatalf("after PUBREC %d: got first byte %#x body %x, want PUBREL %d", id, pk.first, pk.body, id)
				}
			}
			_ = rc.c.Close()
			waitOffline(t, tb, "sub2")

			tb, path = pidRestart(t, tb, path, tc.crash)
			rc, r = qDial(t, tb, "sub2", false)
			if tc.pubrec {
				pk := pidRead(t, rc, r)
				if pk.first != 0x62 || binary.BigEndian.Uint16(pk.body) != id {
					t.Fatalf("after restart: got first byte %#x body %x, want PUBREL %d (the flow resumes at PUBREL [MQTT-4.3.3], the PUBLISH is not sent again)", pk.first, pk.body, id)
				}
			} else {
				p := pidPublish(t, rc, r, 2)
				if p.payload != "x" || p.id != id || !p.dup {
					t.Fatalf("after restart: got %q id %d dup=%v, want %q id %d dup=true", p.payload, p.id, p.dup, "x", id)
				}
				pidAck(t, rc, 0x50, id)
				pk := pidRead(t, rc, r)
				if pk.first != 0x62 || binary.BigEndian.Uint16(pk.body) != id {
					t.Fatalf("after PUBREC %d: got first byte %#x, want PUBREL", id, pk.first)
				}
			}
			pidAck(t, rc, 0x70, id) // PUBCOMP

			// The next packet is a new message, not "x" again.
			pidPublishMsg(t, tb, 2, "y")
			p = pidPublish(t, rc, r, 2)
			if p.payload != "y" || p.dup {
				t.Fatalf("after the completed flow: got %q dup=%v, want the new message %q (x delivered twice breaks exactly once)", p.payload, p.dup, "y")
			}
			pidAck(t, rc, 0x50, p.id)
			if pk := pidRead(t, rc, r); pk.first != 0x62 {
				t.Fatalf("got first byte %#x, want PUBREL", pk.first)
			}
			pidAck(t, rc, 0x70, p.id)
			testwait.For(t, pidWait, "both flows complete", func() bool { return heldCount(tb, "sub2") == 0 })
			_ = rc.c.Close()
			tb.stop()
			checkNoRecords(t, path)
		})
	}
}

// TestPIDStalePutIgnored: the record of an outgoing message always follows
// the engine's latest state, whatever order the goroutines that report it
// run in: the publisher's put (no id) that comes after the id was given
// does not erase the id, and one that comes after the PUBACK does not bring
// an acknowledged message back.
func TestPIDStalePutIgnored(t *testing.T) {
	tb := startBroker(t, "", nil)
	h := tb.persist
	cl := tb.srv.NewClient(nil, "tcp", "stale", false)
	cl.Properties.ProtocolVersion = 4
	queued := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "q/a",
		Payload:     []byte("p"),
		Created:     time.Now().Unix(),
	}
	queued.QueueSeq = cl.State.Inflight.Enqueue(queued)
	key := queuedKey(cl.ID, queued.QueueSeq)
	record := func() (inflightRecord, bool) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), pidWait)
		defer cancel()
		must(t, tb.db.Sync(ctx))
		v, err := tb.db.Get(inflightBucket, key)
		if err != nil {
			return inflightRecord{}, false
		}
		var r inflightRecord
		must(t, json.Unmarshal(v, &r))
		return r, true
	}

	h.OnQosPublish(cl, queued, queued.Created, 0)
	if r, ok := record(); !ok || r.PacketID != 0 || r.FixedHeader.Dup {
		t.Fatalf("queued: record %+v present=%v, want one without a packet id", r.Message, ok)
	}
	sent, newID, ok := cl.State.Inflight.TakeNext()
	if !ok || !newID || sent.PacketID == 0 {
		t.Fatalf("TakeNext: %v %v %d", ok, newID, sent.PacketID)
	}
	h.OnQosPublish(cl, sent, sent.Created, 0)
	h.OnQosPublish(cl, queued, queued.Created, 0) // the publisher's put, late
	if r, ok := record(); !ok || r.PacketID != sent.PacketID || !r.FixedHeader.Dup {
		t.Fatalf("sent: record id %d dup=%v present=%v, want id %d dup=true", r.PacketID, r.FixedHeader.Dup, ok, sent.PacketID)
	}
	taken, ok := cl.State.Inflight.Take(sent.PacketID)
	if !ok {
		t.Fatal("Take")
	}
	h.OnQosComplete(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: sent.PacketID, QueueSeq: taken.QueueSeq})
	h.OnQosPublish(cl, queued, queued.Created, 0) // later still
	h.OnQosPublish(cl, sent, sent.Created, 0)
	if r, ok := record(); ok {
		t.Fatalf("acknowledged message's record back in the store: id %d", r.PacketID)
	}
}
