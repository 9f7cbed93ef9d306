//go:build !linux

package rawio

import (
	"context"
	"syscall"
	"time"
)

type poller struct{}

// NewPoller returns ErrPollerUnsupported: there is no epoll here.
func NewPoller() (*Poller, error) { return nil, ErrPollerUnsupported }

// Park never parks here.
func (p *Poller) Park(w *Parking, rc syscall.RawConn, deadline time.Time, wk Waker) bool {
	return false
}

// Close marks the connection as closing.
func (p *Poller) Close(w *Parking) { w.closed = true }

// Parked returns 0.
func (p *Poller) Parked() int { return 0 }

// Run waits for ctx.
func (p *Poller) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
