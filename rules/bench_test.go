package rules

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"

	"github.com/fieldgate/fieldgate/bus"
)

// BenchmarkFilterRules publishes on a memory bus with 100 filter rules and
// waits until every rule has evaluated every message: ns/op is the whole
// CPU cost of one message through 100 rules (on the machine's cores).
func BenchmarkFilterRules(b *testing.B) {
	var cfg Config
	for i := range 100 {
		cfg = append(cfg, Rule{ID: "f" + strconv.Itoa(i), Enabled: true,
			SQL:     fmt.Sprintf(`SELECT payload.v as v, topic FROM "bench/+/v" WHERE payload.v > %d AND clientid != 'x'`, 990+i%10),
			Actions: []Action{{Log: &LogAction{}}}})
	}
	mb := bus.NewMemory(nil)
	e, err := New(cfg, Options{Bus: mb, StatsInterval: -1, QueueSize: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testwait.Until(time.Minute, func() bool { return len(e.Stats().Rules) > 0 && e.Stats().Rules[99].Running })
	payload := []byte(`{"v":500,"t":1733450000000000000}`)
	b.ResetTimer()
	for i := range b.N {
		_ = mb.Publish(ctx, bus.Message{Topic: "bench/d" + strconv.Itoa(i%10) + "/v", Payload: payload, Origin: "$southbound"})
	}
	testwait.Until(time.Minute, func() bool {
		var n uint64
		for _, r := range e.Stats().Rules {
			n += r.Matched + r.Dropped
		}
		return n >= uint64(100*b.N)
	})
}
