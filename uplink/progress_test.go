package uplink

import (
	"context"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
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
	var first time.Time
	testwait.For(t, 10*time.Second, "progress", func() bool { first = b.Progress(); return !first.IsZero() })
	testwait.For(t, 10*time.Second, "progress to advance while the bridge retries", func() bool { return b.Progress().After(first) })
}
