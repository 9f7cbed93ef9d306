package modbus

import (
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// TestProgress checks that Progress is zero before the lines run and then
// advances with every round of polls, whether or not the device answers.
func TestProgress(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Devices = []Device{tcpDevice("gone", freePort(t), Point{Name: "x", Register: RegHolding, Address: 0, Type: TypeInt16})}
	cfg.Devices[0].Timeout = 100 * time.Millisecond
	cfg.Devices[0].PollGroups = []PollGroup{{Name: "default", Interval: 50 * time.Millisecond}}
	s := newService(t, cfg, bus.NewMemory(nil), Options{})
	if p := s.Progress(); !p.IsZero() {
		t.Fatalf("Progress before Run = %v", p)
	}
	runService(t, s)
	var first time.Time
	testwait.For(t, 5*time.Second, "progress", func() bool { first = s.Progress(); return !first.IsZero() })
	testwait.For(t, 5*time.Second, "progress to advance while the device does not answer", func() bool { return s.Progress().After(first) })
}
