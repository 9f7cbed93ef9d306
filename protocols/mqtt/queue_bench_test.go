package mqtt

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// BenchmarkQueueFull is the cost of one more QoS 1 message for an offline
// session whose queue is full (max_inflight + max_queued messages held):
// queueing it and dropping the oldest. It must not grow with the queue
// length (issue 18: 37-56 ms per message at 11,024 queued, when the queue
// hook copied and sorted the whole queue). No store: the queue alone.
func BenchmarkQueueFull(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run("queued="+strconv.Itoa(n), func(b *testing.B) {
			tb := startBroker(b, "-", func(c *Config) {
				c.Limits.MaxInflight = 100
				c.Limits.MaxQueued = n - 100
				c.Limits.MaxQueuedBytes = 0
			})
			offlineRawSession(b, tb, "full")
			ctx := context.Background()
			payload := []byte("0123456789abcdef")
			for range n {
				if err := tb.Publish(ctx, bus.Message{Topic: "q/a", QoS: 1, Payload: payload}); err != nil {
					b.Fatal(err)
				}
			}
			testwait.For(b, time.Minute, "the queue full", func() bool { return heldCount(tb, "full") == n })
			dropped := tb.Stats().QueuedDropped.Load()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := tb.Publish(ctx, bus.Message{Topic: "q/a", QoS: 1, Payload: payload}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if got := tb.Stats().QueuedDropped.Load() - dropped; got != int64(b.N) {
				b.Fatalf("dropped %d, want %d (one per message)", got, b.N)
			}
			if got := heldCount(tb, "full"); got != n {
				b.Fatalf("holding %d, want %d", got, n)
			}
		})
	}
}
