// Package devnode is what the two serial parts (southbound/modbus's RTU
// lines and southbound/serial's sensors) share about device nodes that come
// and go: telling whether a port path now names another device than before
// (a USB adapter plugged in again, a by-id link that moved), and the
// jittered backoff between attempts to reopen one. They are leaves and may
// not import each other, so it lives here.
package devnode

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Identity identifies what path resolves to now (links followed, so a
// /dev/serial/by-id/… link is resolved again each time): the device node
// and its identity (a pty number reused by another pty, or a USB adapter
// plugged in again, has a new change time), or "" when it does not exist.
// It costs two stats, nothing that needs CPU while a port is gone.
func Identity(path string) string {
	dev, err := filepath.EvalSymlinks(path)
	if err != nil {
		return ""
	}
	fi, err := os.Stat(dev)
	if err != nil {
		return ""
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fmt.Sprintf("%s %d %d %d.%d", dev, st.Rdev, st.Ino, st.Ctim.Sec, st.Ctim.Nsec)
	}
	return dev
}

// Backoff is the wait between attempts to reopen a port: from Min,
// doubling up to Max, each wait jittered by ±20 %. The zero value of next
// starts at Min.
type Backoff struct {
	Min, Max time.Duration
	next     time.Duration
}

// Wait returns the next jittered wait and doubles the one after.
func (b *Backoff) Wait() time.Duration {
	if b.next < b.Min {
		b.next = b.Min
	}
	d := b.next
	b.next = min(2*b.next, b.Max)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// Reset starts again from Min, after a port that worked.
func (b *Backoff) Reset() { b.next = b.Min }
