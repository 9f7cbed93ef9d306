package update

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestInstallThroughTheStandIn: an installation runs to 100 % with RAUC's
// steps; a second one is refused while it runs; a bad bundle ends with
// RAUC's LastError. (StandIn is a stand-in for RAUC's D-Bus service.)
func TestInstallThroughTheStandIn(t *testing.T) {
	ctx := context.Background()
	rauc := &StandIn{Verify: func(src string) error {
		if strings.Contains(src, "bad") {
			return errors.New("signature verification failed")
		}
		return nil
	}}
	m := NewManager(rauc, nil, nil)
	if err := m.Install(ctx, "/data/update/good.raucb"); err != nil {
		t.Fatal(err)
	}
	if err := m.Install(ctx, "/data/update/good.raucb"); !errors.Is(err, ErrBusy) {
		t.Fatalf("second install: %v", err)
	}
	var seen []int
	for {
		s, err := m.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, s.Progress.Percent)
		if !rauc.Step() {
			break
		}
	}
	if s, _ := m.Status(ctx); s.Operation != "idle" || s.LastError != "" || s.Progress.Percent != 100 || !slices.IsSorted(seen) {
		t.Fatalf("after install: %+v, progress %v", s, seen)
	}
	if err := m.Install(ctx, "https://updates.example/bad.raucb"); err != nil {
		t.Fatal(err)
	}
	for rauc.Step() {
	}
	if s, _ := m.Status(ctx); !strings.Contains(s.LastError, "signature verification failed") {
		t.Fatalf("bad bundle: %+v", s)
	}
}

// TestMarkGoodOnlyAfterHealthyTime: the booted slot is marked good only
// after `after` of unbroken health; an unhealthy check restarts the wait.
func TestMarkGoodOnlyAfterHealthyTime(t *testing.T) {
	rauc := &StandIn{Booted: "B"}
	var now atomic.Int64 // fake clock, seconds
	m := NewManager(rauc, nil, func() time.Time { return time.Unix(now.Load(), 0) })
	var checks atomic.Int64
	healthy := func() bool {
		n := checks.Add(1)
		now.Add(10)   // each check is 10 s later
		return n != 5 // the fifth check fails
	}
	if err := m.RunMarkGood(context.Background(), healthy, time.Minute, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Checks 1-4 healthy (30 s), 5 unhealthy, then 6..12: healthy since
	// check 6, 60 s reached at check 12.
	if n := checks.Load(); n != 12 {
		t.Errorf("marked after %d checks, want 12", n)
	}
	if got := rauc.Marks(); len(got) != 1 || got[0] != [2]string{"good", "booted"} {
		t.Fatalf("marks %v", got)
	}
	if s, _ := m.Status(context.Background()); s.MarkedGood.IsZero() || s.BootSlot != "B" {
		t.Fatalf("status %+v", s)
	}
	// Never healthy: never marked, and the run ends with its context.
	rauc2 := &StandIn{}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := NewManager(rauc2, nil, nil).RunMarkGood(ctx, func() bool { return false }, time.Nanosecond, time.Millisecond); !errors.Is(err, context.DeadlineExceeded) || len(rauc2.Marks()) != 0 {
		t.Fatalf("never healthy: %v, marks %v", err, rauc2.Marks())
	}
}

// TestBusctlAnswers decodes busctl's JSON answers as RAUC gives them, and
// refuses others.
func TestBusctlAnswers(t *testing.T) {
	answers := map[string]string{
		"Operation": `{"type":"s","data":"installing"}`,
		"LastError": `{"type":"s","data":""}`,
		"BootSlot":  `{"type":"s","data":"A"}`,
		"Progress":  `{"type":"(isi)","data":[40,"Checking bundle done.",2]}`,
		"Mark":      `{"type":"ss","data":["rootfs.0","marked slot rootfs.0 as good"]}`,
	}
	var calls [][]string
	b := Busctl{Run: func(_ context.Context, args ...string) ([]byte, error) {
		calls = append(calls, args)
		switch args[0] {
		case "get-property":
			return []byte(answers[args[4]]), nil
		case "call":
			if args[4] == "Mark" {
				return []byte(answers["Mark"]), nil
			}
			return []byte(`{"type":"","data":[]}`), nil
		}
		return nil, errors.New("unexpected")
	}}
	ctx := context.Background()
	if op, err := b.Operation(ctx); op != "installing" || err != nil {
		t.Errorf("Operation %q %v", op, err)
	}
	if p, err := b.Progress(ctx); p != (Progress{40, "Checking bundle done.", 2}) || err != nil {
		t.Errorf("Progress %+v %v", p, err)
	}
	if slot, msg, err := b.Mark(ctx, "good", "booted"); slot != "rootfs.0" || !strings.Contains(msg, "good") || err != nil {
		t.Errorf("Mark %q %q %v", slot, msg, err)
	}
	if err := b.InstallBundle(ctx, "/data/u.raucb"); err != nil {
		t.Fatal(err)
	}
	last := calls[len(calls)-1]
	if want := []string{"call", raucService, raucPath, raucInterface, "InstallBundle", "sa{sv}", "/data/u.raucb", "0"}; !slices.Equal(last, want) {
		t.Errorf("InstallBundle call %q, want %q", last, want)
	}
	answers["Progress"] = `{"type":"s","data":"x"}`
	if _, err := b.Progress(ctx); err == nil {
		t.Error("a Progress of the wrong type was accepted")
	}
}
