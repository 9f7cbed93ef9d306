package mqtt

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/bus"
)

// BenchmarkQoS1Delivery is the cost of one QoS 1 message delivered to a
// connected subscriber that acknowledges it at once, with the store on: the
// path whose records the packet id persistence (pid) adds a write to. The
// message is queued (a store put), gets its packet id when it is sent (for a
// persistent session, an update of the same record, coalesced with it in
// the store's batch), and is deleted on PUBACK. A clean session writes
// nothing.
func BenchmarkQoS1Delivery(b *testing.B) {
	for _, clean := range []bool{true, false} {
		name := "session=persistent"
		if clean {
			name = "session=clean"
		}
		b.Run(name, func(b *testing.B) {
			tb := startBroker(b, "", nil)
			rc, r := qDial(b, tb, "sub", clean)
			rc.subscribe(b, r, "q/#", 1)
			got := make(chan int, 1)
			go func() { // the subscriber: acknowledges every PUBLISH
				n := 0
				for {
					_ = rc.c.SetReadDeadline(time.Now().Add(time.Minute))
					pk, err := qRead(r)
					if err != nil {
						got <- n
						return
					}
					if p, ok := parsePublish(pk); ok {
						n++
						rc.puback(b, p.id, r.Buffered() == 0)
					}
				}
			}()
			ctx := context.Background()
			payload := []byte("0123456789abcdef")
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if err := tb.Publish(ctx, bus.Message{Topic: "q/" + strconv.Itoa(i&7), QoS: 1, Payload: payload}); err != nil {
					b.Fatal(err)
				}
			}
			deadline := time.Now().Add(time.Minute)
			for heldCount(tb, "sub") > 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			if n := heldCount(tb, "sub"); n > 0 {
				b.Fatalf("%d messages still held after a minute", n)
			}
			_ = rc.c.Close()
			if n := <-got; n < b.N {
				b.Fatalf("subscriber received %d of %d", n, b.N)
			}
		})
	}
}
