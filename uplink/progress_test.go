package uplink

import (
	"context"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/store"
)

// TestProgress checks that the bridge's Progress advances while it retries
// an unreachable cloud (its state machine moves on every attempt).
func TestProgress(t *testing.T) {
	local := startBroker(t, nil, nil)
	q, err := store.OpenOutbox(store.OutboxOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	cfg := testConfig(Server{Host: "127.0.0.1", TCPPort: freePort(t)})
	cfg.Enabled, cfg.Transport = true, TransportTCP
	b, err := New(cfg, Options{Bus: local, Outbox: testOutbox{q}, GatewayID: "gw1"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if p := b.Progress(); !p.IsZero() {
		t.Fatalf("Progress before Run = %v", p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(10 * time.Second)
	var first time.Time
	for first = b.Progress(); first.IsZero(); first = b.Progress() {
		if time.Now().After(deadline) {
			t.Fatal("no progress")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for !b.Progress().After(first) {
		if time.Now().After(deadline) {
			t.Fatal("progress does not advance while the bridge retries")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
