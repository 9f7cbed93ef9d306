//go:build unix

package appliance

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrLocked is returned by Lock when another process holds the data
// directory.
var ErrLocked = errors.New("another fieldgate holds the data directory")

// DirLock is a held lock on a data directory.
type DirLock struct{ f *os.File }

// Lock takes the data directory's lock (an flock on dataDir/fieldgate.lock,
// created if missing, holding the owner's pid) without waiting. When
// another process holds it, the error wraps ErrLocked and names its pid.
// The lock ends with Unlock or with the process.
func Lock(dataDir string) (*DirLock, error) {
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, fmt.Errorf("appliance: data dir: %w", err)
	}
	p := filepath.Join(dataDir, LockFile)
	// 0644: a lock file left by root (`fieldgate reset` before any start)
	// must still open for the service user, read-only (no pid written).
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if errors.Is(err, os.ErrPermission) {
		f, err = os.Open(p)
	}
	if err != nil {
		return nil, fmt.Errorf("appliance: lock %s: %w", p, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid := "unknown"
			if data, rerr := os.ReadFile(p); rerr == nil && len(strings.TrimSpace(string(data))) > 0 {
				pid = strings.TrimSpace(string(data))
			}
			return nil, fmt.Errorf("appliance: %s: %w (pid %s)", dataDir, ErrLocked, pid)
		}
		return nil, fmt.Errorf("appliance: lock %s: %w", p, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &DirLock{f: f}, nil
}

// Unlock releases the lock.
func (l *DirLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor releases the flock
	l.f = nil
	return err
}
