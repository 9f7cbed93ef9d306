// fieldgate patch: tests of the retained memory and retained flow control
// patch in PATCHES.md.

package mqtt

import (
	"bufio"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// retainedCount is the number of retained messages of issue 18's scenario.
const retainedCount = 100_000

// retainedPacket is the retained PUBLISH stored for topic i, as
// retainMessage stores one from a client (a copy, with Created set).
func retainedPacket(i int, qos byte) packets.Packet {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true, Qos: qos},
		TopicName:   fmt.Sprintf("retained/%06d", i),
		Payload:     []byte(fmt.Sprintf("value %06d", i)),
		Origin:      "publisher",
		Created:     time.Now().Unix(),
	}
	return pk.Copy(false)
}

// retainedServer starts a broker on 127.0.0.1:0 holding n retained QoS 1
// messages and returns it with its TCP address and a function that closes
// it (once; also called at test end).
func retainedServer(t *testing.T, n int) (*Server, string, func() error) {
	t.Helper()
	s := New(&Options{InlineClient: false})
	require.NoError(t, s.AddHook(new(AllowHook), nil))
	l := listeners.NewTCP(listeners.Config{ID: "t1", Address: "127.0.0.1:0"})
	require.NoError(t, s.AddListener(l))
	for i := 0; i < n; i++ {
		s.Topics.RetainMessage(retainedPacket(i, 1))
	}
	require.NoError(t, s.Serve())
	closeServer := sync.OnceValue(s.Close)
	t.Cleanup(func() { _ = closeServer() })
	return s, l.Address(), closeServer
}

// retainedSubscriber connects an MQTT 3.1.1 client and subscribes to # at
// qos; it returns the connection and its reader, the SUBACK read.
func retainedSubscriber(t *testing.T, addr string, id string, qos byte) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	r := bufio.NewReaderSize(c, 64<<10)
	body := append(orderString("MQTT"), 4, 0x02, 0, 0) // 3.1.1, clean session, no keep alive
	_, err = c.Write(orderPacket(0x10, append(body, orderString(id)...)...))
	require.NoError(t, err)
	h, ack := orderRead(t, c, r, 5*time.Second)
	require.Equal(t, []byte{0x20, 0, 0}, append([]byte{h}, ack...), "CONNACK")
	_, err = c.Write(orderPacket(0x82, append(append([]byte{0, 1}, orderString("#")...), qos)...))
	require.NoError(t, err)
	h, ack = orderRead(t, c, r, 5*time.Second)
	require.Equal(t, []byte{0x90, 0, 1, qos}, append([]byte{h}, ack...), "SUBACK")
	return c, r
}

// receiveRetained reads PUBLISH packets until every one of n retained
// topics has arrived (acknowledging each QoS 1 one) and returns how many
// arrived, and the duplicates among them.
func receiveRetained(t *testing.T, c net.Conn, r *bufio.Reader, n int, d time.Duration) (got, dups int) {
	t.Helper()
	seen := make([]bool, n)
	w := bufio.NewWriter(c)
	for got < n {
		if r.Buffered() == 0 {
			require.NoError(t, w.Flush())
		}
		h, body := orderRead(t, c, r, d)
		require.Equal(t, byte(0x30), h&0xF0, "PUBLISH expected, got %#x", h)
		tl := int(body[0])<<8 | int(body[1])
		topic := string(body[2 : 2+tl])
		var i int
		_, err := fmt.Sscanf(topic, "retained/%d", &i)
		require.NoError(t, err, topic)
		if qos := h >> 1 & 3; qos > 0 {
			_, err = w.Write(orderPacket(0x40, body[2+tl], body[3+tl])) // PUBACK
			require.NoError(t, err)
		}
		if seen[i] {
			dups++
			continue
		}
		seen[i] = true
		got++
	}
	require.NoError(t, w.Flush())
	return got, dups
}

// TestRetained100kQoS0: a QoS 0 subscriber to # gets every one of 100,000
// retained messages (upstream dropped those beyond the outbound queue).
func TestRetained100kQoS0(t *testing.T) {
	s, addr, _ := retainedServer(t, retainedCount)
	start := time.Now()
	c, r := retainedSubscriber(t, addr, "sub-qos0", 0)
	got, dups := receiveRetained(t, c, r, retainedCount, 30*time.Second)
	t.Logf("%d retained messages at QoS 0 in %s", got, time.Since(start))
	require.Equal(t, retainedCount, got)
	require.Zero(t, dups)
	require.Zero(t, s.Info.MessagesDropped)
}

// TestRetained100kQoS1: a QoS 1 subscriber to # gets every one of 100,000
// retained messages through its send window (upstream put them all in
// flight at once, ran out of packet ids and spun for minutes).
func TestRetained100kQoS1(t *testing.T) {
	s, addr, _ := retainedServer(t, retainedCount)
	start := time.Now()
	c, r := retainedSubscriber(t, addr, "sub-qos1", 1)
	got, dups := receiveRetained(t, c, r, retainedCount, 30*time.Second)
	t.Logf("%d retained messages at QoS 1 in %s", got, time.Since(start))
	require.Equal(t, retainedCount, got)
	require.Zero(t, dups)
	require.Zero(t, s.Info.InflightDropped)
	cl, ok := s.Clients.Get("sub-qos1")
	require.True(t, ok)
	require.LessOrEqual(t, cl.State.Inflight.Len(), retainedDefaultWindow)
}

// TestRetainedCloseMidDelivery: the server closes within a bound while a
// QoS 1 subscriber that never acknowledges, and a QoS 0 one that never
// reads, hold deliveries of 100,000 retained messages half-way.
func TestRetainedCloseMidDelivery(t *testing.T) {
	_, addr, closeServer := retainedServer(t, retainedCount)
	c1, r1 := retainedSubscriber(t, addr, "stuck-qos1", 1)
	_, _ = retainedSubscriber(t, addr, "stuck-qos0", 0)
	h, _ := orderRead(t, c1, r1, 5*time.Second)
	require.Equal(t, byte(0x30), h&0xF0)

	done := make(chan error, 1)
	go func() { done <- closeServer() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("Close did not return within 20 s:\n%s", buf[:runtime.Stack(buf, true)])
	}
}

// TestRetainedReplacedNotResentStale: a retained message replaced while a
// subscriber's delivery is pending is not sent in its old version after the
// new one.
func TestRetainedReplacedNotResentStale(t *testing.T) {
	s, _, _ := retainedServer(t, 0)
	cl, r, w := newTestClient()
	cl.Properties.ProtocolVersion = 4
	defer cl.Stop(nil)
	go func() {
		buf := make([]byte, 1<<10)
		for {
			if _, err := r.Read(buf); err != nil {
				return
			}
		}
	}()
	defer w.Close()
	s.Topics.RetainMessage(retainedPacket(1, 0))
	old := s.Topics.retainedMatches("#")
	require.Len(t, old, 1)
	s.Topics.RetainMessage(retainedPacket(1, 0)) // a new record for the topic
	require.Equal(t, 1, s.sendRetained(cl, packets.Subscription{Filter: "#"}, old))
	require.Zero(t, cl.State.outbound.Len())
}

// TestRetainedRecordRoundTrip: the compact record gives back the packet it
// was made from, with and without properties and with unusual fields.
func TestRetainedRecordRoundTrip(t *testing.T) {
	plain := retainedPacket(7, 1)
	props := retainedPacket(8, 2)
	props.ProtocolVersion = 5
	props.Properties.ContentType = "text/plain"
	props.Properties.User = []packets.UserProperty{{Key: "k", Val: "v"}}
	props.Expiry = time.Now().Unix() + 60
	odd := retainedPacket(9, 0)
	odd.Mods.MaxSize = 1000
	for name, pk := range map[string]packets.Packet{"plain": plain, "props": props, "odd": odd} {
		m := newRetainedMessage(pk)
		require.Equal(t, pk, m.packet(), name)
	}
	require.Nil(t, newRetainedMessage(plain).props)
	require.Nil(t, newRetainedMessage(plain).full)
	require.NotNil(t, newRetainedMessage(odd).full)
}

// TestRetainedExpiryTrimsTree: an expired retained message leaves no
// particle behind, and a newer message on the topic is kept.
func TestRetainedExpiryTrimsTree(t *testing.T) {
	s := New(&Options{InlineClient: false})
	s.Options.Capabilities.MaximumMessageExpiryInterval = 10
	pk := retainedPacket(1, 0)
	pk.Created -= 100
	s.Topics.RetainMessage(pk)
	s.Topics.RetainMessage(func() packets.Packet { p := retainedPacket(2, 0); p.Created -= 100; return p }())
	stale := s.Topics.Retained.lookup(retainedPacket(2, 0).TopicName)
	s.Topics.RetainMessage(retainedPacket(2, 0)) // replaced by a fresh one
	s.clearExpiredRetainedMessages(time.Now().Unix())
	require.Equal(t, 1, s.Topics.Retained.Len())
	require.NotSame(t, stale, s.Topics.Retained.lookup(retainedPacket(2, 0).TopicName))
	require.Nil(t, s.Topics.seek(retainedPacket(1, 0).TopicName, 0))
}

// BenchmarkRetainedMemory reports the heap held per retained message with
// 100,000 of them stored (topic retained/NNNNNN, 12-byte payload).
func BenchmarkRetainedMemory(b *testing.B) {
	for n := 0; n < b.N; n++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		x := NewTopicsIndex()
		for i := 0; i < retainedCount; i++ {
			x.RetainMessage(retainedPacket(i, 1))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/retainedCount, "B/retained")
		runtime.KeepAlive(x)
	}
}
