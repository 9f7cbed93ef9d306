package gateway_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
)

// Issue 18: the broker must exit on SIGTERM whatever it is doing, here while
// it delivers 100,000 retained messages to a QoS 1 subscriber to #, and
// with an offline session queue of 100,000 QoS 1 messages.
const (
	// sigtermBacklog is the retained message count and the queue length.
	sigtermBacklog = 100000
	// sigtermExitMax is the generous bound on the exit after SIGTERM.
	sigtermExitMax = 15 * time.Second
	// sigtermPublishMax bounds the publishing of the backlog.
	sigtermPublishMax = 3 * time.Minute
	// sigtermWindow is how many QoS 1 publishes the test keeps unacknowledged.
	sigtermWindow = 100
)

// rawClient is a minimal MQTT 3.1.1 client over a raw connection.
type rawClient struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

// dialRaw connects with clientID and the clean session flag and waits for an
// accepting CONNACK.
func dialRaw(t *testing.T, addr, clientID string, clean bool) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	flags := byte(0)
	if clean {
		flags = 0x02
	}
	body := appendString(nil, "MQTT")
	body = append(body, 4, flags, 0, 0) // MQTT 3.1.1, no keep alive
	body = appendString(body, clientID)
	rc := &rawClient{c: c, r: bufio.NewReaderSize(c, 64<<10), w: bufio.NewWriterSize(c, 32<<10)}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(packet(0x10, body)); err != nil {
		t.Fatalf("client %s: write CONNECT: %v", clientID, err)
	}
	p, err := readPacket(rc.r)
	if err != nil || p[0] != 0x20 || len(p) < 3 || p[2] != 0 {
		t.Fatalf("client %s: CONNACK % x, %v", clientID, p, err)
	}
	_ = c.SetDeadline(time.Time{})
	return rc
}

// subscribe sends a SUBSCRIBE for filter at qos, without waiting for the
// SUBACK (retained messages may come first).
func (rc *rawClient) subscribe(t *testing.T, filter string, qos byte) {
	t.Helper()
	body := binary.BigEndian.AppendUint16(nil, 1)
	body = append(appendString(body, filter), qos)
	if _, err := rc.c.Write(packet(0x82, body)); err != nil {
		t.Fatalf("write SUBSCRIBE %s: %v", filter, err)
	}
}

// publishBacklog publishes n QoS 1 messages, message i on topic(i), with
// sigtermWindow unacknowledged at most, and waits for every PUBACK.
func (rc *rawClient) publishBacklog(t *testing.T, n int, topic func(i int) string, retain bool) {
	t.Helper()
	header := byte(0x32)
	if retain {
		header |= 0x01
	}
	payload := make([]byte, 64)
	var acked atomic.Int64
	readErr := make(chan error, 1)
	go func() { // ends at the last PUBACK or when the connection closes (Cleanup)
		for acked.Load() < int64(n) {
			p, err := readPacket(rc.r)
			if err != nil {
				readErr <- err
				return
			}
			if p[0] == 0x40 {
				acked.Add(1)
			}
		}
		readErr <- nil
	}()
	deadline := time.Now().Add(sigtermPublishMax)
	for i := range n {
		for int64(i)-acked.Load() >= sigtermWindow {
			if err := rc.w.Flush(); err != nil {
				t.Fatalf("publish: %v", err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d of %d QoS 1 messages acknowledged after %s", acked.Load(), n, sigtermPublishMax)
			}
			time.Sleep(100 * time.Microsecond) // kept sleep: a spin on the acknowledgement counter, not a wait for a condition of the system under test
		}
		body := appendString(nil, topic(i))
		body = binary.BigEndian.AppendUint16(body, uint16(i%65535)+1)
		if _, err := rc.w.Write(packet(header, append(body, payload...))); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	if err := rc.w.Flush(); err != nil {
		t.Fatalf("publish: %v", err)
	}
	select {
	case err := <-readErr:
		if err != nil {
			t.Fatalf("read PUBACKs: %v (%d of %d acknowledged)", err, acked.Load(), n)
		}
	case <-time.After(time.Until(deadline)):
		t.Fatalf("only %d of %d QoS 1 messages acknowledged after %s", acked.Load(), n, sigtermPublishMax)
	}
}

// stopWithin sends SIGTERM and fails unless the gateway exits with status 0
// within sigtermExitMax (it is killed then).
func (g *gateway) stopWithin(t *testing.T, what string) {
	t.Helper()
	start := time.Now()
	g.signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(sigtermExitMax):
		_ = g.cmd.Process.Kill()
		<-g.done
		t.Fatalf("%s: fieldgate did not exit within %s of SIGTERM; killed", what, sigtermExitMax)
	}
	took := time.Since(start)
	t.Logf("%s: exit %d after SIGTERM in %s", what, g.cmd.ProcessState.ExitCode(), took.Round(time.Millisecond))
	if code := g.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("%s: exit status %d after SIGTERM, want 0", what, code)
	}
}

// TestE2ESigtermRetainedDelivery: SIGTERM while 100,000 retained messages
// are being delivered to a QoS 1 subscriber to # (issue 18: the broker spun
// at one core and ignored SIGTERM).
func TestE2ESigtermRetainedDelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 100,000 messages")
	}
	g := startGateway(t, "")
	pub := dialRaw(t, g.addr, "sigterm-ret-pub", true)
	pub.publishBacklog(t, sigtermBacklog, func(i int) string { return "bench/ret/" + strconv.Itoa(i) }, true)

	sub := dialRaw(t, g.addr, "sigterm-ret-sub", true)
	sub.subscribe(t, "#", 1)
	var got atomic.Int64
	go func() { // acknowledges like a live client; ends when the gateway closes the connection
		for {
			p, err := readPacket(sub.r)
			if err != nil {
				return
			}
			if p[0]&0xf0 != 0x30 {
				continue
			}
			got.Add(1)
			if p[0]&0x06 == 0x02 { // QoS 1: PUBACK its packet id
				tl := int(binary.BigEndian.Uint16(p[1:3]))
				if _, err := sub.c.Write(packet(0x40, p[3+tl:5+tl])); err != nil {
					return
				}
			}
		}
	}()
	testwait.For(t, 30*time.Second, "the first retained messages delivered", func() bool { return got.Load() > 0 })
	g.stopWithin(t, fmt.Sprintf("retained delivery (%d of %d delivered)", got.Load(), sigtermBacklog))
}

// TestE2ESigtermFullQueue: SIGTERM with an offline persistent session that
// holds 100,000 QoS 1 messages.
func TestE2ESigtermFullQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 100,000 messages")
	}
	g := startGateway(t, "limits: {max_queued: 100000, max_queued_bytes: 0}\n")
	sub := dialRaw(t, g.addr, "sigterm-queue-sub", false)
	sub.subscribe(t, "bench/queue/#", 1)
	if p, err := readPacket(sub.r); err != nil || p[0] != 0x90 {
		t.Fatalf("SUBACK: % x, %v", p, err)
	}
	// DISCONNECT: the session stays. Messages published before the broker
	// has taken it offline are queued for it all the same.
	if _, err := sub.c.Write([]byte{0xe0, 0}); err != nil {
		t.Fatal(err)
	}
	sub.c.Close()

	pub := dialRaw(t, g.addr, "sigterm-queue-pub", true)
	pub.publishBacklog(t, sigtermBacklog, func(int) string { return "bench/queue/1" }, false)
	g.stopWithin(t, "full offline queue")
}
