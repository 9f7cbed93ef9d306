package modbus

import (
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/bus"
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
	deadline := time.Now().Add(5 * time.Second)
	var first time.Time
	for first = s.Progress(); first.IsZero(); first = s.Progress() {
		if time.Now().After(deadline) {
			t.Fatal("no progress")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for !s.Progress().After(first) {
		if time.Now().After(deadline) {
			t.Fatal("progress does not advance while the device does not answer")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
