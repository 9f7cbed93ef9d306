package supervise

import "sync"

// Configs keeps apart the two configs of a running gateway: the running
// one, which the parts run with, and the desired one, which the user saved
// (the config file). They differ while a saved change waits for a restart;
// the difference is what the page shows as pending.
//
// Both live behind Configs' lock and are only ever handed out as copies,
// so a goroutine that outlives a config change cannot read one half
// written: nothing outside the gateway's core holds the config itself.
type Configs[T any] struct {
	mu      sync.Mutex
	running T
	desired T
}

// NewConfigs returns Configs whose running and desired config are both c.
func NewConfigs[T any](c T) *Configs[T] {
	return &Configs[T]{running: c, desired: c}
}

// Running returns the config the parts run with.
func (c *Configs[T]) Running() T {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running
}

// Desired returns the config the user saved.
func (c *Configs[T]) Desired() T {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.desired
}

// Both returns the running and the desired config, read together.
func (c *Configs[T]) Both() (running, desired T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running, c.desired
}

// Set replaces both configs at once.
func (c *Configs[T]) Set(running, desired T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.running, c.desired = running, desired
}
