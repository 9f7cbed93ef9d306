package mqtt

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// Issue 18 item 3: 100,000 retained messages, delivered to # subscribers at
// QoS 0 and QoS 1 completely, and the broker stops while a delivery is
// under way. Bounds are generous; the times are logged, not asserted.

// retainedFlowCount is the number of retained messages: issue 18's 100,000,
// or 20,000 under the race detector (raceBuild).
var retainedFlowCount = map[bool]int{false: 100_000, true: 20_000}[raceBuild]

// retainedFlowBroker starts a broker with a store and 100,000 retained
// QoS 1 messages on retained/NNNNNN. It logs the heap they take.
func retainedFlowBroker(t *testing.T) *testBroker {
	t.Helper()
	tb := startBroker(t, "", nil)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ctx := context.Background()
	pubStart := time.Now()
	for i := 0; i < retainedFlowCount; i++ {
		m := bus.Message{Topic: fmt.Sprintf("retained/%06d", i), Payload: []byte(fmt.Sprintf("value %06d", i)), QoS: 1, Retain: true}
		if err := tb.Publish(ctx, m); err != nil {
			t.Fatalf("publish %s: %v", m.Topic, err)
		}
	}
	t.Logf("published in %s, retained %d", time.Since(pubStart), tb.Info().Retained)
	testwait.For(t, time.Minute, "100k retained", func() bool { return tb.Info().Retained >= int64(retainedFlowCount) }) // and the $SYS topics
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("heap for %d retained messages: %.0f B each", retainedFlowCount, float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(retainedFlowCount))
	return tb
}

// retainedCounter counts the distinct retained topics a client receives.
type retainedCounter struct {
	mu   sync.Mutex
	seen map[string]bool
	dups int
}

func (c *retainedCounter) handler(_ pahov3.Client, m pahov3.Message) { c.add(m.Topic()) }

func (c *retainedCounter) add(topic string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[topic] {
		c.dups++
		return
	}
	c.seen[topic] = true
}

func (c *retainedCounter) count() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen), c.dups
}

func TestRetainedManyToWildcardSubscribers(t *testing.T) {
	tb := retainedFlowBroker(t)
	for _, qos := range []byte{0, 1} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			rc := &retainedCounter{seen: make(map[string]bool, retainedFlowCount)}
			c := connectV3(t, tb, fmt.Sprintf("retained-sub-%d", qos), 4, func(o *pahov3.ClientOptions) {
				o.SetDefaultPublishHandler(rc.handler)
			})
			start := time.Now()
			tok := c.Subscribe("#", qos, nil)
			if !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
				t.Fatalf("subscribe #: %v", tok.Error())
			}
			testwait.For(t, 2*time.Minute, "all retained messages", func() bool {
				n, _ := rc.count()
				return n >= retainedFlowCount
			})
			n, dups := rc.count()
			t.Logf("QoS %d: %d retained messages in %s", qos, n, time.Since(start))
			if n != retainedFlowCount || dups != 0 {
				t.Fatalf("got %d distinct, %d duplicates; want %d, 0", n, dups, retainedFlowCount)
			}
		})
	}
}

// TestRetainedToV5ReceiveMaximum: an MQTT 5 subscriber to # at QoS 1 with a
// receive maximum of 20 gets every retained message, and the broker never
// holds more than 20 of them for it (sampled on every 100th message).
func TestRetainedToV5ReceiveMaximum(t *testing.T) {
	tb := retainedFlowBroker(t)
	rc := &retainedCounter{seen: make(map[string]bool, retainedFlowCount)}
	rm := uint16(20)
	var received, held atomic.Int64
	c := connectV5(t, tb, "retained-v5", func(cp *paho.Connect, cfg *paho.ClientConfig) {
		cp.Properties = &paho.ConnectProperties{ReceiveMaximum: &rm}
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				rc.add(pr.Packet.Topic)
				if received.Add(1)%100 == 0 {
					if cl, ok := tb.srv.Clients.Get("retained-v5"); ok {
						held.Store(max(held.Load(), int64(cl.State.Inflight.Len())))
					}
				}
				return true, nil
			},
		}
	})
	start := time.Now()
	c.sub(t, "#", 1, nil)
	testwait.For(t, 2*time.Minute, "all retained messages", func() bool {
		n, _ := rc.count()
		return n >= retainedFlowCount
	})
	n, dups := rc.count()
	t.Logf("MQTT 5, receive maximum 20: %d retained messages in %s, at most %d held", n, time.Since(start), held.Load())
	if held.Load() > int64(rm) {
		t.Errorf("the broker held %d messages for a client with receive maximum %d", held.Load(), rm)
	}
	if n != retainedFlowCount || dups != 0 {
		t.Fatalf("got %d distinct, %d duplicates; want %d, 0", n, dups, retainedFlowCount)
	}
}

// TestRetainedStopMidDelivery: the broker stops within a bound while a
// QoS 1 subscriber to # that never acknowledges (and never reads) holds a
// delivery of the retained messages half-way.
func TestRetainedStopMidDelivery(t *testing.T) {
	tb := retainedFlowBroker(t)
	conn, err := net.DialTimeout("tcp", tb.Addr("tcp"), waitFor)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	connect := append(append(str("MQTT"), 4, 0x02, 0, 0), str("stuck")...)
	subscribe := append(append([]byte{0, 1}, str("#")...), 1)
	if _, err := conn.Write(append(append([]byte{0x10, byte(len(connect))}, connect...), append([]byte{0x82, byte(len(subscribe))}, subscribe...)...)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	for got := 0; got < 3; { // CONNACK, SUBACK, a first PUBLISH
		h, err := r.ReadByte()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		n, err := r.ReadByte()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if _, err := r.Discard(int(n)); err != nil {
			t.Fatalf("read: %v", err)
		}
		if h&0xF0 == 0x30 || got < 2 {
			got++
		}
	}
	stopped := make(chan struct{})
	start := time.Now()
	go func() {
		tb.stop()
		close(stopped)
	}()
	select {
	case <-stopped:
		t.Logf("stopped in %s", time.Since(start))
	case <-time.After(30 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("broker did not stop within 30 s:\n%s", buf[:runtime.Stack(buf, true)])
	}
}
