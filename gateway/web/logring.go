package web

import (
	"context"
	"log/slog"
	"slices"
	"sync"
)

// LogRing keeps the most recent log records in memory for the page's
// diagnostics. Handler returns a slog.Handler that records into the ring
// and passes every record on to another handler, so the gateway plugs it in
// front of its stderr handler:
//
//	ring := web.NewLogRing(1000)
//	log := slog.New(ring.Handler(slog.NewTextHandler(os.Stderr, nil)))
//
// The "part" attribute (log.With("part", "broker")) becomes LogEntry.Part.
type LogRing struct {
	mu      sync.Mutex
	entries []LogEntry
	next    int
	full    bool
}

// NewLogRing returns a ring holding the last size records (at least 1).
func NewLogRing(size int) *LogRing {
	return &LogRing{entries: make([]LogEntry, max(size, 1))}
}

func (r *LogRing) add(e LogEntry) {
	r.mu.Lock()
	r.entries[r.next] = e
	r.next++
	if r.next == len(r.entries) {
		r.next, r.full = 0, true
	}
	r.mu.Unlock()
}

// Logs returns up to limit entries at minLevel or above whose part is part
// (any part when empty), oldest first. It matches Backend.Logs.
func (r *LogRing) Logs(minLevel slog.Level, part string, limit int) []LogEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []LogEntry
	if r.full {
		all = append(all, r.entries[r.next:]...)
	}
	all = append(all, r.entries[:r.next]...)
	var out []LogEntry
	for i := len(all) - 1; i >= 0 && len(out) < limit; i-- {
		e := all[i]
		var lv slog.Level
		if err := lv.UnmarshalText([]byte(e.Level)); err != nil || lv < minLevel {
			continue
		}
		if part != "" && e.Part != part {
			continue
		}
		out = append(out, e)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// Handler returns a handler recording into r and then passing the record to
// next (nil: record only). Records below next's enabled level are not kept.
func (r *LogRing) Handler(next slog.Handler) slog.Handler {
	return &ringHandler{ring: r, next: next}
}

type ringHandler struct {
	ring   *LogRing
	next   slog.Handler
	attrs  []slog.Attr
	groups string
}

func (h *ringHandler) Enabled(ctx context.Context, l slog.Level) bool {
	if h.next == nil {
		return true
	}
	return h.next.Enabled(ctx, l)
}

func (h *ringHandler) Handle(ctx context.Context, rec slog.Record) error {
	e := LogEntry{Time: rec.Time, Level: rec.Level.String(), Message: rec.Message}
	add := func(prefix string, a slog.Attr) {
		key := prefix + a.Key
		if key == "part" {
			e.Part = a.Value.String()
			return
		}
		if e.Attrs == nil {
			e.Attrs = make(map[string]any)
		}
		e.Attrs[key] = a.Value.Resolve().String()
	}
	for _, a := range h.attrs {
		add("", a)
	}
	rec.Attrs(func(a slog.Attr) bool { add(h.groups, a); return true })
	h.ring.add(e)
	if h.next == nil {
		return nil
	}
	return h.next.Handle(ctx, rec)
}

func (h *ringHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = slices.Clip(c.attrs)
	for _, a := range attrs {
		c.attrs = append(c.attrs, slog.Attr{Key: h.groups + a.Key, Value: a.Value})
	}
	if h.next != nil {
		c.next = h.next.WithAttrs(attrs)
	}
	return &c
}

func (h *ringHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.groups = h.groups + name + "."
	if h.next != nil {
		c.next = h.next.WithGroup(name)
	}
	return &c
}
