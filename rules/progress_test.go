package rules

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/bus"
)

// gatedBus blocks every publish on out/… until gate is closed: a wedged
// action, as a republish into a stuck broker would be.
type gatedBus struct {
	bus.Bus
	gate chan struct{}
}

func (g gatedBus) Publish(ctx context.Context, m bus.Message) error {
	if strings.HasPrefix(m.Topic, "out/") {
		<-g.gate
	}
	return g.Bus.Publish(ctx, m)
}

// TestProgress: an idle engine reports progress now; a worker wedged in an
// action while mail waits stops it; it moves again once the action returns.
func TestProgress(t *testing.T) {
	gate := make(chan struct{})
	rule := Rule{ID: "r", Enabled: true, SQL: `SELECT * FROM "in/#"`,
		Actions: []Action{{Republish: &RepublishAction{Topic: "out/x"}}}}
	h := newHarness(t, Config{rule}, func(o *Options) { o.Bus = gatedBus{Bus: o.Bus, gate: gate}; o.Workers = 1 })
	defer func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	}()
	if age := time.Since(h.engine.Progress()); age > time.Second {
		t.Fatalf("idle engine: progress %v old", age)
	}
	h.publish("in/1", `{"n":1}`) // taken by the worker, which blocks in the action
	h.publish("in/2", `{"n":2}`) // waits in the mailbox
	h.waitFor("the second message queued behind the wedged one", func() bool {
		return h.engine.Stats().Rules[0].Matched == 1 && time.Since(h.engine.Progress()) > 200*time.Millisecond
	})
	stuck := h.engine.Progress()
	close(gate)
	h.waitFor("progress after the action returned", func() bool { return h.engine.Progress().After(stuck) })
}
