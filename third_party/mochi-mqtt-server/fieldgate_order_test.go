// fieldgate patch: test for patch 22 (cross-connection order) in PATCHES.md.

package mqtt

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// orderPacket frames an MQTT 3.1.1 packet (bodies under 128 bytes).
func orderPacket(first byte, body ...byte) []byte {
	return append([]byte{first, byte(len(body))}, body...)
}

// orderString is an MQTT UTF-8 string.
func orderString(s string) []byte {
	return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...)
}

// orderRead reads one MQTT 3.1.1 packet (body under 128 bytes) within d.
func orderRead(t *testing.T, c net.Conn, r *bufio.Reader, d time.Duration) (byte, []byte) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(d)))
	h, err := r.ReadByte()
	require.NoError(t, err, "no packet within %s", d)
	n, err := r.ReadByte()
	require.NoError(t, err)
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	require.NoError(t, err)
	return h, body
}

// TestSubscribeBeforePublishOnAnotherConnection: client B sends SUBSCRIBE
// and does not wait for the SUBACK; client A then publishes to the topic on
// its own connection at once. B's SUBSCRIBE reached the server's socket
// first, so it should be handled first and B should get the message.
// Without the patch the Go scheduler ran A's reader first whenever both
// sockets were found readable together, and B lost the message nearly every
// time. Two readers woken on two threads still race (and the OS may stop
// either on a loaded host), so the test counts losses over 40 trials and
// fails when half or more are lost. A loss is seen without a timeout: after
// B's SUBACK, A publishes a marker, which B gets after the first message or
// without it.
func TestSubscribeBeforePublishOnAnotherConnection(t *testing.T) {
	s := New(&Options{InlineClient: false})
	require.NoError(t, s.AddHook(new(AllowHook), nil))
	l := listeners.NewTCP(listeners.Config{ID: "t1", Address: "127.0.0.1:0"})
	require.NoError(t, s.AddListener(l))
	require.NoError(t, s.Serve())
	t.Cleanup(func() { _ = s.Close() })

	dial := func(id string) (net.Conn, *bufio.Reader) {
		c, err := net.DialTimeout("tcp", l.Address(), 5*time.Second)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		r := bufio.NewReader(c)
		body := append(orderString("MQTT"), 4, 0x02, 0, 60) // 3.1.1, clean session, keep alive 60 s
		_, err = c.Write(orderPacket(0x10, append(body, orderString(id)...)...))
		require.NoError(t, err)
		h, ack := orderRead(t, c, r, 5*time.Second)
		require.Equal(t, []byte{0x20, 0, 0}, append([]byte{h}, ack...), "CONNACK")
		// A ping round trip: the connection's read loop is running.
		_, err = c.Write(orderPacket(0xC0))
		require.NoError(t, err)
		h, _ = orderRead(t, c, r, 5*time.Second)
		require.Equal(t, byte(0xD0), h, "PINGRESP")
		return c, r
	}
	a, _ := dial("order-a")
	b, br := dial("order-b")

	const trials = 40
	lost := 0
	for i := 0; i < trials; i++ {
		topic := fmt.Sprintf("order/%d", i)
		id := byte(i + 1)
		_, err := b.Write(orderPacket(0x82, append(append([]byte{0, id}, orderString(topic)...), 1)...))
		require.NoError(t, err)
		_, err = a.Write(orderPacket(0x30, append(orderString(topic), "msg"...)...))
		require.NoError(t, err)

		got := false
	read:
		for {
			h, body := orderRead(t, b, br, 5*time.Second)
			switch h & 0xF0 {
			case 0x90:
				require.Equal(t, []byte{0, id, 1}, body, "SUBACK")
				_, err = a.Write(orderPacket(0x30, append(orderString(topic), "marker"...)...))
				require.NoError(t, err)
			case 0x30:
				switch string(body[2+len(topic):]) {
				case "msg":
					got = true
				case "marker":
					break read
				default:
					t.Fatalf("unexpected message % x", body)
				}
			default:
				t.Fatalf("unexpected packet %#x % x", h, body)
			}
		}
		if !got {
			lost++
		}
	}
	t.Logf("lost %d of %d", lost, trials)
	require.Less(t, 2*lost, trials, "B lost the message published right after its SUBSCRIBE")
}
