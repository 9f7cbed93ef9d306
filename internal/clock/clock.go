// Package clock is the wall clock the gateway's parts stamp and expire
// with: one Clock, built by the composition root and handed to every part
// that reads wall time for a payload's "ts", an outbox record's appended
// and expiry times, or the uplink's status times, instead of each calling
// time.Now itself.
//
// A shipped build uses Real. A build with the tag faultinject lets
// ForProcess return a FileOffset clock instead, a stand-in for the host's
// clock jumping: the fault-injection suite (gateway/fault_e2e_test.go)
// shifts the gateway's wall time by an hour back and forth through a file,
// because changing the host clock would disturb every other test running
// on the machine (docs/reliability.md).
//
// Intervals, deadlines and liveness (poll scheduling, timeouts, a part's
// progress) are measured on the monotonic clock (time.Since, timers) and
// are not this package's business.
package clock

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// Clock tells the wall time.
type Clock interface {
	// Now is the current wall time.
	Now() time.Time
}

// Real is the host's clock: time.Now.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// OffsetFileEnv names the environment variable that, in a build with the
// tag faultinject, makes ForProcess return a FileOffset clock on the file
// it names. Other builds ignore it.
const OffsetFileEnv = "FIELDGATE_FAULT_CLOCK_FILE"

// offsetRecheck is how often a FileOffset clock reads its file again.
const offsetRecheck = 20 * time.Millisecond

// FileOffset is the host's clock shifted by an offset read from a file
// (a Go duration such as "1h", "-1h" or "0s"; a missing or empty file is
// 0). The file is read again at most every 20 ms, so a test changes the
// offset of a running process by rewriting it (atomically: temp file and
// rename). An unreadable or malformed file keeps the last offset.
//
// The times it returns carry no monotonic reading (time.Time.Round(0)):
// comparing two of them compares wall times, as the gateway does with
// times read back from disk, so a jump is seen the way a real clock step
// would be seen by stored data.
type FileOffset struct {
	path string

	mu      sync.Mutex
	checked time.Time // monotonic: when the file was last read
	offset  time.Duration
	err     error // the last read's error, if any
}

// NewFileOffset returns a clock shifted by the offset in the file at path.
func NewFileOffset(path string) *FileOffset {
	return &FileOffset{path: path}
}

// Now returns the host's wall time plus the file's offset.
func (c *FileOffset) Now() time.Time {
	now := time.Now()
	c.mu.Lock()
	if c.checked.IsZero() || now.Sub(c.checked) >= offsetRecheck {
		c.checked = now
		if off, err := ReadOffset(c.path); err != nil {
			c.err = err
		} else {
			c.offset, c.err = off, nil
		}
	}
	off := c.offset
	c.mu.Unlock()
	return now.Round(0).Add(off)
}

// Offset is the offset in use and the error of the last read of the file
// (nil when it was read, or is missing).
func (c *FileOffset) Offset() (time.Duration, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offset, c.err
}

// ReadOffset reads an offset file: a Go duration, surrounding blanks
// ignored. A missing or empty file is an offset of 0.
func ReadOffset(path string) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("clock: read offset file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("clock: offset file %s: %w", path, err)
	}
	return d, nil
}
