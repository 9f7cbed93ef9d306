package web

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Bounds of what the log ring keeps. A log line can carry what a peer sent
// (a client id, a topic, a formatted packet), so every string is clipped
// and copied before it is kept: a 1 MB attribute costs the ring at most
// logValueMax bytes, and never pins the 1 MB it was cut from.
const (
	// logValueMax is the longest attribute value kept, in bytes; a longer
	// one keeps its start and the marker "…(N bytes)".
	logValueMax = 256
	// logKeyMax is the longest attribute key kept (group prefix included).
	logKeyMax = 64
	// logMessageMax is the longest message kept.
	logMessageMax = 1024
	// logAttrsMax is how many attributes one entry keeps; the rest are
	// counted in the attribute "attrs_dropped".
	logAttrsMax = 32
	// logEntryMax bounds one entry's estimated size (message, keys,
	// values); attributes beyond it are dropped and counted too.
	logEntryMax = 4 << 10
	// logRingMaxBytes bounds the whole ring's estimated size: the oldest
	// entries go first when a new one would pass it.
	logRingMaxBytes = 2 << 20
	// logEntryOverhead and logAttrOverhead estimate the memory of an entry
	// and of one map slot beyond their strings.
	logEntryOverhead = 160
	logAttrOverhead  = 48
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
// Every string kept is clipped (see logValueMax), each entry is bounded,
// and the ring as a whole holds at most about 2 MiB, whatever is logged.
type LogRing struct {
	maxBytes int

	mu      sync.Mutex
	entries []LogEntry // circular, oldest at head
	sizes   []int      // estimated bytes of entries[i]
	head, n int
	bytes   int
}

// NewLogRing returns a ring holding the last size records (at least 1),
// within about 2 MiB.
func NewLogRing(size int) *LogRing {
	size = max(size, 1)
	return &LogRing{maxBytes: logRingMaxBytes, entries: make([]LogEntry, size), sizes: make([]int, size)}
}

// Bytes is the ring's estimated size in bytes (strings and overheads).
func (r *LogRing) Bytes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes
}

func (r *LogRing) add(e LogEntry, size int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.n > 0 && (r.n == len(r.entries) || r.bytes+size > r.maxBytes) {
		r.entries[r.head] = LogEntry{}
		r.bytes -= r.sizes[r.head]
		r.head = (r.head + 1) % len(r.entries)
		r.n--
	}
	i := (r.head + r.n) % len(r.entries)
	r.entries[i], r.sizes[i] = e, size
	r.n++
	r.bytes += size
}

// Logs returns up to limit entries at minLevel or above whose part is part
// (any part when empty), oldest first. It matches Backend.Logs.
func (r *LogRing) Logs(minLevel slog.Level, part string, limit int) []LogEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []LogEntry
	for k := r.n - 1; k >= 0 && len(out) < limit; k-- {
		e := r.entries[(r.head+k)%len(r.entries)]
		var lv slog.Level
		if err := lv.UnmarshalText([]byte(e.Level)); err != nil || lv < minLevel {
			continue
		}
		if part != "" && e.Part != part {
			continue
		}
		out = append(out, e)
	}
	slices.Reverse(out)
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
	b := entryBuilder{e: LogEntry{Time: rec.Time, Level: rec.Level.String(), Message: clip(rec.Message, logMessageMax)}}
	b.size = logEntryOverhead + len(b.e.Message)
	for _, a := range h.attrs {
		b.add("", a)
	}
	rec.Attrs(func(a slog.Attr) bool { b.add(h.groups, a); return true })
	if b.dropped > 0 {
		b.e.Attrs["attrs_dropped"] = strconv.Itoa(b.dropped)
		b.size += logAttrOverhead + len("attrs_dropped") + 8
	}
	h.ring.add(b.e, b.size)
	if h.next == nil {
		return nil
	}
	return h.next.Handle(ctx, rec)
}

// entryBuilder turns a record's attributes into a bounded LogEntry.
type entryBuilder struct {
	e       LogEntry
	size    int
	dropped int
}

// add keeps attribute a (groups flattened into dotted keys) within the
// entry's bounds.
func (b *entryBuilder) add(prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p = prefix + a.Key + "."
		}
		for _, g := range v.Group() {
			b.add(p, g)
		}
		return
	}
	if a.Key == "" && v.Any() == nil {
		return
	}
	key := prefix + a.Key
	if key == "part" {
		b.e.Part = clip(v.String(), logKeyMax)
		b.size += len(b.e.Part)
		return
	}
	key = clip(key, logKeyMax)
	val := valueString(v)
	cost := logAttrOverhead + len(key) + len(val)
	if len(b.e.Attrs) >= logAttrsMax || b.size+cost > logEntryMax {
		b.dropped++
		return
	}
	if b.e.Attrs == nil {
		b.e.Attrs = make(map[string]any)
	}
	if old, ok := b.e.Attrs[key].(string); ok {
		b.size -= logAttrOverhead + len(key) + len(old)
	}
	b.e.Attrs[key] = val
	b.size += cost
}

// valueString is v as the ring keeps it: at most logValueMax bytes (plus
// the marker), in its own memory. Byte slices are formatted from their
// first bytes only, so a huge payload is not formatted whole first.
func valueString(v slog.Value) string {
	if p, ok := v.Any().([]byte); ok && v.Kind() == slog.KindAny && len(p) > logBytesShown {
		return fmt.Sprint(p[:logBytesShown]) + "…(" + strconv.Itoa(len(p)) + " bytes)"
	}
	return clip(v.String(), logValueMax)
}

// logBytesShown is how many bytes of a []byte attribute are formatted
// (at most 4 characters each, so within logValueMax).
const logBytesShown = 48

// clip returns a copy of s cut to at most n bytes at a rune boundary, with
// "…(N bytes)" (N: the full length) appended when it was cut. The copy
// matters: a substring would keep the whole original alive.
func clip(s string, n int) string {
	if len(s) <= n {
		return strings.Clone(s)
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(" + strconv.Itoa(len(s)) + " bytes)"
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
