package mqtt

// Session queues without packet ids, O(1) queue limits, the drop policy and
// flow control towards publishers (issue 18, items 1 and 2). The clients
// here speak raw MQTT 3.1.1 over TCP: 100,000 messages through a client
// library take minutes under -race.

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
	"github.com/fieldgate/fieldgate/store"
)

// qClient is a minimal MQTT 3.1.1 client: it writes what it is told and
// hands every PUBLISH it receives to its handler (which answers PUBACK
// itself, or not).
type qClient struct {
	c  net.Conn
	mu sync.Mutex // serialises writes
	w  *bufio.Writer
}

// qPacket is one packet read: its first byte and body.
type qPacket struct {
	first byte
	body  []byte
}

// qDial connects id to tb (clean: a clean session) and waits for CONNACK.
func qDial(t testing.TB, tb *testBroker, id string, clean bool) (*qClient, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", tb.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	rc := &qClient{c: c, w: bufio.NewWriterSize(c, 64<<10)}
	flags := byte(0)
	if clean {
		flags = 0x02
	}
	body := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, flags, 0, 0}, qString(id)...)
	rc.write(t, 0x10, body, true)
	r := bufio.NewReaderSize(c, 64<<10)
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	pk, err := qRead(r)
	if err != nil || pk.first != 0x20 || len(pk.body) != 2 || pk.body[1] != 0 {
		t.Fatalf("connect %s: %v %x %x", id, err, pk.first, pk.body)
	}
	_ = c.SetReadDeadline(time.Time{})
	return rc, r
}

func qString(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

// write sends one packet; flush sends what is buffered.
func (rc *qClient) write(t testing.TB, first byte, body []byte, flush bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	hdr := []byte{first}
	n := len(body)
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		hdr = append(hdr, b)
		if n == 0 {
			break
		}
	}
	_, _ = rc.w.Write(hdr)
	_, _ = rc.w.Write(body)
	if flush {
		if err := rc.w.Flush(); err != nil {
			t.Errorf("write: %v", err)
		}
	}
}

func (rc *qClient) subscribe(t testing.TB, r *bufio.Reader, filter string, qos byte) {
	t.Helper()
	rc.write(t, 0x82, append(append([]byte{0, 1}, qString(filter)...), qos), true)
	_ = rc.c.SetReadDeadline(time.Now().Add(waitFor))
	pk, err := qRead(r)
	if err != nil || pk.first != 0x90 {
		t.Fatalf("suback: %v %x", err, pk.first)
	}
	_ = rc.c.SetReadDeadline(time.Time{})
}

// publish1 sends a QoS 1 PUBLISH with packet id id.
func (rc *qClient) publish1(t testing.TB, topic string, id uint16, payload []byte, flush bool) {
	body := binary.BigEndian.AppendUint16(qString(topic), id)
	rc.write(t, 0x32, append(body, payload...), flush)
}

func (rc *qClient) puback(t testing.TB, id uint16, flush bool) {
	rc.write(t, 0x40, binary.BigEndian.AppendUint16(nil, id), flush)
}

func (rc *qClient) flush() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	_ = rc.w.Flush()
}

func qRead(r *bufio.Reader) (qPacket, error) {
	first, err := r.ReadByte()
	if err != nil {
		return qPacket{}, err
	}
	n, mul := 0, 1
	for range 4 {
		b, err := r.ReadByte()
		if err != nil {
			return qPacket{}, err
		}
		n += int(b&0x7f) * mul
		mul *= 128
		if b&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return qPacket{}, err
	}
	return qPacket{first: first, body: body}, nil
}

// qPublish is a PUBLISH read: packet id (QoS>0), payload, DUP.
type qPublish struct {
	id      uint16
	payload string
	dup     bool
}

func parsePublish(pk qPacket) (qPublish, bool) {
	if pk.first>>4 != 3 || len(pk.body) < 2 {
		return qPublish{}, false
	}
	tl := int(binary.BigEndian.Uint16(pk.body))
	rest := pk.body[2+tl:]
	var p qPublish
	p.dup = pk.first&0x08 != 0
	if (pk.first>>1)&3 > 0 {
		p.id = binary.BigEndian.Uint16(rest)
		rest = rest[2:]
	}
	p.payload = string(rest)
	return p, true
}

// receiveN reads PUBLISH packets until n distinct payloads "0".."n-1"
// arrived, acknowledging each (after delay, when set), and returns them in
// arrival order (first deliveries only).
func receiveN(t testing.TB, rc *qClient, r *bufio.Reader, n int, delay time.Duration, limit time.Duration) []int {
	t.Helper()
	seen := make(map[string]bool, n)
	var order []int
	deadline := time.Now().Add(limit)
	for len(seen) < n {
		_ = rc.c.SetReadDeadline(deadline)
		pk, err := qRead(r)
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(seen), n, err)
		}
		p, ok := parsePublish(pk)
		if !ok {
			continue
		}
		if !seen[p.payload] {
			seen[p.payload] = true
			i, err := strconv.Atoi(p.payload)
			if err != nil {
				t.Fatalf("payload %q", p.payload)
			}
			order = append(order, i)
		}
		if delay > 0 {
			time.Sleep(delay)
		}
		if p.id != 0 {
			rc.puback(t, p.id, r.Buffered() == 0)
		}
	}
	rc.flush()
	_ = rc.c.SetReadDeadline(time.Time{})
	return order
}

// publishAll publishes payloads from..to-1 (as decimal) at QoS 1 on topic,
// at most window unacknowledged, and waits for every PUBACK.
func publishAll(t testing.TB, tb *testBroker, id, topic string, from, to, window int) {
	t.Helper()
	rc, r := qDial(t, tb, id, true)
	acks := make(chan error, 1)
	sem := make(chan struct{}, window)
	go func() {
		for range to - from {
			_ = rc.c.SetReadDeadline(time.Now().Add(time.Minute))
			pk, err := qRead(r)
			if err != nil {
				acks <- err
				return
			}
			if pk.first>>4 == 4 {
				<-sem
			}
		}
		acks <- nil
	}()
	for i := from; i < to; i++ {
		select {
		case sem <- struct{}{}:
		case err := <-acks:
			t.Errorf("%s: waiting for PUBACKs after %d publishes: %v", id, i-from, err)
			return
		}
		rc.publish1(t, topic, uint16(i%65535)+1, []byte(strconv.Itoa(i)), len(sem) == cap(sem) || i == to-1)
	}
	rc.flush()
	if err := <-acks; err != nil {
		t.Fatalf("%s: waiting for PUBACKs: %v", id, err)
	}
	_ = rc.c.Close()
}

// offlineRawSession leaves persistent session id subscribed to q/# at QoS 1,
// disconnected.
func offlineRawSession(t testing.TB, tb *testBroker, id string) {
	t.Helper()
	rc, r := qDial(t, tb, id, false)
	rc.subscribe(t, r, "q/#", 1)
	_ = rc.c.Close()
	waitOffline(t, tb, id)
}

func heldCount(tb *testBroker, id string) int {
	cl, ok := tb.srv.Clients.Get(id)
	if !ok {
		return 0
	}
	return cl.State.Inflight.Len()
}

// TestQueueOfflineBeyondPacketIDs: an offline session keeps 100,000 queued
// QoS 1 messages (more than there are packet ids), drops none, and gets
// them all on reconnect, in order, each once.
func TestQueueOfflineBeyondPacketIDs(t *testing.T) {
	const n = 100_000
	tb := startBroker(t, "", func(c *Config) {
		c.Limits.MaxQueued = n
		c.Limits.MaxQueuedBytes = 0
	})
	offlineRawSession(t, tb, "big")
	publishAll(t, tb, "pub", "q/a", 0, n, 1000)
	testwait.For(t, time.Minute, "all messages queued", func() bool { return heldCount(tb, "big") == n })

	rc, r := qDial(t, tb, "big", false)
	order := receiveN(t, rc, r, n, 0, 5*time.Minute)
	checkInOrder(t, order, 0, n)
	if d := tb.Stats().QueuedDropped.Load(); d != 0 {
		t.Errorf("QueuedDropped = %d, want 0", d)
	}
	testwait.For(t, time.Minute, "queue emptied by the acknowledgements", func() bool { return heldCount(tb, "big") == 0 })
}

// checkInOrder fails unless order is from, from+1, ..., to-1.
func checkInOrder(t testing.TB, order []int, from, to int) {
	t.Helper()
	if len(order) != to-from {
		t.Fatalf("received %d messages, want %d", len(order), to-from)
	}
	for i, v := range order {
		if v != from+i {
			t.Fatalf("message %d is %d, want %d (out of order)", i, v, from+i)
		}
	}
}

// TestQueueDropPolicy: a full queue of an offline session drops by the
// configured policy, and counts every drop.
func TestQueueDropPolicy(t *testing.T) {
	const maxInflight, maxQueued, n = 2, 8, 30
	for _, tc := range []struct {
		policy   string
		from, to int // the messages kept
	}{
		{"", n - maxInflight - maxQueued, n},
		{QueueDropOldest, n - maxInflight - maxQueued, n},
		{QueueDropNewest, 0, maxInflight + maxQueued},
	} {
		t.Run("policy="+tc.policy, func(t *testing.T) {
			tb := startBroker(t, "", func(c *Config) {
				c.Limits.MaxInflight = maxInflight
				c.Limits.MaxQueued = maxQueued
				c.Limits.QueueDrop = tc.policy
			})
			offlineRawSession(t, tb, "s")
			publishAll(t, tb, "pub", "q/a", 0, n, 1)
			if d := tb.Stats().QueuedDropped.Load(); d != int64(n-(tc.to-tc.from)) {
				t.Errorf("QueuedDropped = %d, want %d", d, n-(tc.to-tc.from))
			}
			rc, r := qDial(t, tb, "s", false)
			checkInOrder(t, receiveN(t, rc, r, tc.to-tc.from, 0, waitFor), tc.from, tc.to)
		})
	}
}

// TestQueueFanInSlowSubscriberLosesNothing: many QoS 1 publishers and one
// connected subscriber that acknowledges slowly, with a queue much smaller
// than what is published: publishers wait (their PUBACKs are delayed), no
// acknowledged message is dropped, and each publisher's messages arrive in
// its order.
func TestQueueFanInSlowSubscriberLosesNothing(t *testing.T) {
	const pubs, per = 8, 400
	tb := startBroker(t, "", func(c *Config) {
		c.Limits.MaxInflight = 10
		c.Limits.MaxQueued = 50
	})
	rc, r := qDial(t, tb, "slow", true)
	rc.subscribe(t, r, "q/#", 1)

	var wg sync.WaitGroup
	for p := range pubs {
		wg.Go(func() {
			publishAll(t, tb, fmt.Sprintf("pub%d", p), fmt.Sprintf("q/%d", p), p*per, (p+1)*per, 20)
		})
	}
	order := receiveN(t, rc, r, pubs*per, 200*time.Microsecond, 5*time.Minute)
	wg.Wait()
	last := make([]int, pubs)
	for i := range last {
		last[i] = -1
	}
	for _, v := range order {
		p := v / per
		if v <= last[p] {
			t.Fatalf("publisher %d: message %d after %d", p, v, last[p])
		}
		last[p] = v
	}
	if d := tb.Stats().QueuedDropped.Load(); d != 0 {
		t.Errorf("QueuedDropped = %d, want 0", d)
	}
	if d := tb.srv.Info.InflightDropped; d != 0 {
		t.Errorf("engine InflightDropped = %d, want 0", d)
	}
	t.Logf("publishes that waited for room: %d, timeouts: %d", tb.Stats().QueueWaits.Load(), tb.Stats().QueueWaitTimeouts.Load())
}

// TestQueueRestoreBeyondPacketIDs: a persisted queue of more than 65,535
// messages is restored whole at start, in order, and delivered.
func TestQueueRestoreBeyondPacketIDs(t *testing.T) {
	const n = 70_000
	path := filepath.Join(t.TempDir(), "broker.db")
	mutate := func(c *Config) {
		c.Limits.MaxQueued = n
		c.Limits.MaxQueuedBytes = 0
	}
	tb := startBroker(t, path, mutate)
	offlineRawSession(t, tb, "big")
	publishAll(t, tb, "pub", "q/a", 0, n, 1000)
	testwait.For(t, time.Minute, "all messages queued", func() bool { return heldCount(tb, "big") == n })
	tb.stop()
	{
		db, err := store.Open(path, store.Options{})
		must(t, err)
		t.Logf("records: inflight %d, clients %d", countBucket(t, db, inflightBucket), countBucket(t, db, clientsBucket))
		_ = db.Close()
	}

	tb = startBroker(t, path, mutate)
	testwait.For(t, time.Minute, "the queue restored", func() bool { return heldCount(tb, "big") == n })
	rc, r := qDial(t, tb, "big", false)
	checkInOrder(t, receiveN(t, rc, r, n, 0, 5*time.Minute), 0, n)
	testwait.For(t, time.Minute, "queue emptied by the acknowledgements", func() bool { return heldCount(tb, "big") == 0 })
	tb.stop()
	db, err := store.Open(path, store.Options{})
	must(t, err)
	defer db.Close()
	if got := countBucket(t, db, inflightBucket); got != 0 {
		t.Errorf("%d inflight records left in the store after delivery", got)
	}
}
