package update

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// noRAUC is an Installer whose every call finds no RAUC service, as Busctl
// does on a system without it.
type noRAUC struct{}

var errNoRAUC = fmt.Errorf("%w: busctl get-property: Failed to connect to bus: No such file or directory", ErrUnavailable)

func (noRAUC) InstallBundle(context.Context, string) error { return errNoRAUC }
func (noRAUC) Operation(context.Context) (string, error)   { return "", errNoRAUC }
func (noRAUC) Progress(context.Context) (Progress, error)  { return Progress{}, errNoRAUC }
func (noRAUC) LastError(context.Context) (string, error)   { return "", errNoRAUC }
func (noRAUC) BootSlot(context.Context) (string, error)    { return "", errNoRAUC }
func (noRAUC) Mark(context.Context, string, string) (string, string, error) {
	return "", "", errNoRAUC
}

// TestWithoutRAUC: without RAUC's service, Status and Install answer
// ErrUnavailable (once, not once per property), and the mark-good loop
// says so once at its start, logs the failing Mark once however often it
// retries, and ends with its context.
func TestWithoutRAUC(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	m := NewManager(noRAUC{}, log, nil)
	ctx := context.Background()
	_, err := m.Status(ctx)
	if !errors.Is(err, ErrUnavailable) || strings.Count(err.Error(), "not available") != 1 {
		t.Fatalf("Status: %v", err)
	}
	if err := m.Install(ctx, "/data/u.raucb"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Install: %v", err)
	}
	var checks atomic.Int64
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	err = m.RunMarkGood(runCtx, func() bool {
		if checks.Add(1) == 20 {
			cancel()
		}
		return true
	}, time.Nanosecond, time.Millisecond)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("RunMarkGood: %v", err)
	}
	out := logs.String()
	if n := strings.Count(out, "RAUC is not available: updates cannot be installed"); n != 1 {
		t.Errorf("the start warning logged %d times:\n%s", n, out)
	}
	if n := strings.Count(out, "marking the booted slot good failed"); n != 1 {
		t.Errorf("the failed Mark logged %d times in %d checks, want once:\n%s", n, checks.Load(), out)
	}
}

// TestServiceMissing tells busctl's "no RAUC here" messages from a call
// RAUC refused.
func TestServiceMissing(t *testing.T) {
	for msg, want := range map[string]bool{
		"Failed to get property Operation on interface de.pengutronix.rauc.Installer: The name de.pengutronix.rauc was not provided by any .service files": true,
		"Failed to connect to bus: No such file or directory":                                          true,
		"Call failed: Could not activate remote peer 'de.pengutronix.rauc': activation request failed": true,
		"Call failed: Already processing a different method":                                           false,
		"Call failed: Access denied":                                                                   false,
	} {
		if got := serviceMissing(msg); got != want {
			t.Errorf("serviceMissing(%q) = %v, want %v", msg, got, want)
		}
	}
}
