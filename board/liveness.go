package board

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Liveness records when each part of the gateway last made progress, so
// that the health check passed to Run can tell a deadlocked part from a
// working one without blocking. Parts call Beat from their loops; the
// health check calls Stale.
type Liveness struct {
	now func() time.Time

	mu   sync.Mutex
	last map[string]time.Time
}

// NewLiveness returns an empty Liveness; now is the clock (nil = time.Now).
func NewLiveness(now func() time.Time) *Liveness {
	if now == nil {
		now = time.Now
	}
	return &Liveness{now: now, last: make(map[string]time.Time)}
}

// Beat records that part made progress now. The first Beat registers it.
func (l *Liveness) Beat(part string) {
	t := l.now()
	l.mu.Lock()
	l.last[part] = t
	l.mu.Unlock()
}

// Forget stops watching part (it was stopped on purpose, e.g. by a reload).
func (l *Liveness) Forget(part string) {
	l.mu.Lock()
	delete(l.last, part)
	l.mu.Unlock()
}

// Stale returns an error naming every registered part whose last Beat is
// older than maxAge, or nil when all made progress recently.
func (l *Liveness) Stale(maxAge time.Duration) error {
	now := l.now()
	var stale []string
	l.mu.Lock()
	for part, t := range l.last {
		if age := now.Sub(t); age > maxAge {
			stale = append(stale, fmt.Sprintf("%s (%s ago)", part, age.Round(time.Millisecond)))
		}
	}
	l.mu.Unlock()
	if len(stale) == 0 {
		return nil
	}
	slices.Sort(stale)
	return fmt.Errorf("no progress within %s: %s", maxAge, strings.Join(stale, ", "))
}

// StatusLine is the one-line summary sent as systemd STATUS=.
type StatusLine struct {
	// Uplink is the uplink's state ("connected quic", "down", "disabled").
	Uplink string
	// Outbox is the number of messages waiting for the cloud.
	Outbox int
	// DevicesOK of Devices southbound devices answered their last poll.
	DevicesOK, Devices int
	// Fault, when not empty, is appended (a failing health check, the data
	// reserve reached).
	Fault string
}

// String formats the line, e.g. "uplink connected quic, outbox 12, devices
// 3/4 ok".
func (s StatusLine) String() string {
	uplink := s.Uplink
	if uplink == "" {
		uplink = "unknown"
	}
	line := fmt.Sprintf("uplink %s, outbox %d, devices %d/%d ok", uplink, s.Outbox, s.DevicesOK, s.Devices)
	if s.Fault != "" {
		line += ", fault: " + s.Fault
	}
	return line
}
