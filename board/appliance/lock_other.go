//go:build !unix

package appliance

import "errors"

// ErrLocked is returned by Lock when another process holds the data
// directory.
var ErrLocked = errors.New("another fieldgate holds the data directory")

// DirLock is a held lock on a data directory (none on this system).
type DirLock struct{}

// Lock does nothing where flock does not exist.
func Lock(dataDir string) (*DirLock, error) { return &DirLock{}, nil }

// Unlock releases the lock.
func (l *DirLock) Unlock() error { return nil }
