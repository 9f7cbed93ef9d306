package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Memory is an in-process Bus for tests of parts that only need a bus. It
// follows the broker's rules that matter to those parts: taps run first, in
// the order they were added, and the first error refuses the publish; then
// every matching subscriber is called in the publisher's goroutine, in the
// order they subscribed. It keeps no retained messages and no sessions.
//
// The zero value is not usable; call NewMemory.
type Memory struct {
	now func() time.Time

	mu     sync.Mutex
	nextID uint64
	subs   []memoryEntry[Handler]
	taps   []memoryEntry[TapFunc]
}

// memoryEntry is one subscription or tap.
type memoryEntry[F any] struct {
	id     uint64
	filter string
	fn     F
}

var _ Bus = (*Memory)(nil)

// NewMemory returns an empty in-memory bus. now stamps Message.Time when a
// publish leaves it zero; nil means time.Now.
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{now: now}
}

// Publish runs the taps whose filter matches m.Topic, then, unless one
// refused it (its error is returned, wrapped), calls the matching
// subscribers. Everything runs in the caller's goroutine; handlers may
// subscribe, unsubscribe or publish.
func (b *Memory) Publish(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bus: publish to %q: %w", m.Topic, err)
	}
	if err := validTopic(m.Topic); err != nil {
		return fmt.Errorf("bus: publish: %w", err)
	}
	if m.QoS > 2 {
		return fmt.Errorf("bus: publish to %q: QoS %d is not 0, 1 or 2", m.Topic, m.QoS)
	}
	if m.Time.IsZero() {
		m.Time = b.now()
	}

	b.mu.Lock()
	taps := slices.Clone(b.taps)
	subs := slices.Clone(b.subs)
	b.mu.Unlock()

	for _, t := range taps {
		if !Match(t.filter, m.Topic) {
			continue
		}
		if err := t.fn(m); err != nil {
			return fmt.Errorf("bus: publish to %q refused: %w", m.Topic, err)
		}
	}
	for _, s := range subs {
		if Match(s.filter, m.Topic) {
			s.fn(m)
		}
	}
	return nil
}

// Subscribe calls h for every accepted message whose topic matches filter.
func (b *Memory) Subscribe(filter string, h Handler) (unsubscribe func(), err error) {
	if !ValidFilter(filter) {
		return nil, fmt.Errorf("bus: subscribe: invalid topic filter %q", filter)
	}
	if h == nil {
		return nil, errors.New("bus: subscribe: nil handler")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nextID++
	id := b.nextID
	b.subs = append(b.subs, memoryEntry[Handler]{id: id, filter: filter, fn: h})
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.subs = slices.DeleteFunc(b.subs, func(e memoryEntry[Handler]) bool { return e.id == id })
	}, nil
}

// Tap calls fn for every publish whose topic matches filter before any
// subscriber sees it; an error from fn refuses the publish.
func (b *Memory) Tap(filter string, fn TapFunc) (remove func(), err error) {
	if !ValidFilter(filter) {
		return nil, fmt.Errorf("bus: tap: invalid topic filter %q", filter)
	}
	if fn == nil {
		return nil, errors.New("bus: tap: nil function")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nextID++
	id := b.nextID
	b.taps = append(b.taps, memoryEntry[TapFunc]{id: id, filter: filter, fn: fn})
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.taps = slices.DeleteFunc(b.taps, func(e memoryEntry[TapFunc]) bool { return e.id == id })
	}, nil
}

// validTopic checks a topic name: not empty, no wildcards, no NUL.
func validTopic(topic string) error {
	switch {
	case topic == "":
		return errors.New("empty topic")
	case strings.ContainsAny(topic, "+#\x00"):
		return fmt.Errorf("topic %q holds a wildcard or NUL character", topic)
	}
	return nil
}
