package update

import (
	"context"
	"errors"
	"sync"
)

// StandIn is a stand-in for RAUC's D-Bus service, for where it cannot run
// (tests, development machines): it is not RAUC. An installation checks
// the bundle with Verify and then walks its progress one step per Step
// call; Mark records what it was asked.
type StandIn struct {
	// Verify checks a bundle (nil: every bundle is good); its error becomes
	// LastError.
	Verify func(source string) error
	// Booted is the BootSlot ("A" when empty).
	Booted string

	mu        sync.Mutex
	operation string
	progress  Progress
	lastError string
	steps     []Progress
	marks     [][2]string
	reboots   int
}

// Reboot counts the reboots asked for.
func (s *StandIn) Reboot(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reboots++
	return nil
}

// Reboots is how many reboots were asked for.
func (s *StandIn) Reboots() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reboots
}

// installSteps are the steps RAUC reports for an installation.
var installSteps = []Progress{
	{0, "Installing", 1}, {20, "Checking bundle", 2}, {40, "Checking bundle done.", 2},
	{60, "Copying image to rootfs.1", 2}, {80, "Copying image to rootfs.1 done.", 2}, {100, "Installing done.", 1},
}

// InstallBundle starts the stand-in installation.
func (s *StandIn) InstallBundle(ctx context.Context, source string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.operation == "installing" {
		return errors.New("stand-in: already installing")
	}
	s.operation, s.lastError = "installing", ""
	s.steps = append([]Progress(nil), installSteps...)
	if s.Verify != nil {
		if err := s.Verify(source); err != nil {
			s.steps = []Progress{{0, "Installing", 1}, {100, "Installing failed.", 1}}
			s.lastError = "Failed to check bundle: " + err.Error()
		}
	}
	s.progress = s.steps[0]
	s.steps = s.steps[1:]
	return nil
}

// Step advances the installation by one step; false once it is idle.
func (s *StandIn) Step() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.operation != "installing" {
		return false
	}
	if len(s.steps) == 0 {
		s.operation = "idle"
		return false
	}
	s.progress = s.steps[0]
	s.steps = s.steps[1:]
	return true
}

// Operation is "idle" or "installing".
func (s *StandIn) Operation(context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.operation == "" {
		return "idle", nil
	}
	return s.operation, nil
}

// Progress of the installation.
func (s *StandIn) Progress(context.Context) (Progress, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.progress, nil
}

// LastError of the last installation.
func (s *StandIn) LastError(context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastError, nil
}

// BootSlot is Booted, or "A".
func (s *StandIn) BootSlot(context.Context) (string, error) {
	if s.Booted == "" {
		return "A", nil
	}
	return s.Booted, nil
}

// Mark records the mark.
func (s *StandIn) Mark(_ context.Context, state, slot string) (string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.marks = append(s.marks, [2]string{state, slot})
	name, _ := s.BootSlot(context.Background())
	return "rootfs." + name, "marked slot rootfs." + name + " as " + state, nil
}

// Marks returns the marks asked for, as [state, slot].
func (s *StandIn) Marks() [][2]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][2]string(nil), s.marks...)
}
