// Package ratelog rate-limits log lines, so that a wire (a flood of bad
// packets, a device sending garbage, a password guesser) cannot flood the
// log. It follows tailscale's types/logger.RateLimitedFn, adapted to
// log/slog: lines are limited per message and an optional key (a client,
// an address, a device), each with a token bucket of Burst lines refilled
// one per Every; an optional overall bucket bounds all keys together. When
// lines were held back, the next line let through for that message and key
// says so once, with the count ("suppressed", n).
//
// Three ways in, all over one Limiter: Logger for call sites that name
// their key (log.Warn(client, "bad packet", ...)), Handler to wrap a whole
// slog.Handler (the key read from an attribute such as "client"), and
// Limiter.Allow for a caller that composes its own line.
//
// The clock is injected (Config.Now), so that tests step it instead of
// sleeping.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// SuppressedKey is the attribute that carries, on a line let through, how
// many lines of the same message and key were held back before it.
const SuppressedKey = "suppressed"

// defaultMaxKeys is how many message+key pairs a Limiter remembers when
// Config.MaxKeys is 0.
const defaultMaxKeys = 1024

// Config sets a Limiter's rates.
type Config struct {
	// Every is the refill: each message+key earns one line per Every.
	// 0 means no limit (every line passes).
	Every time.Duration
	// Burst is how many lines a message+key may log at once (the size of
	// its bucket); below 1 means 1.
	Burst int
	// Total, above 0, bounds all message+key pairs together: a bucket of
	// Total lines refilled Total per Every (e.g. Every 1m, Burst 1, Total
	// 20: one line per client a minute and 20 a minute in all).
	Total int
	// MaxKeys bounds the message+key pairs remembered (0: 1024). Beyond
	// it, pairs whose bucket is full again are forgotten first, which
	// changes nothing; failing that, one pair is forgotten with its count.
	MaxKeys int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// bucket is one token bucket and the count of lines it held back.
type bucket struct {
	tokens     float64
	last       time.Time
	suppressed int
}

// refill adds one token per every since b's last refill, up to burst.
func (b *bucket) refill(now time.Time, every time.Duration, burst float64) {
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(burst, b.tokens+float64(el)/float64(every))
		b.last = now
	}
}

// full reports whether b, refilled to now, is as good as new.
func (b *bucket) full(now time.Time, every time.Duration, burst float64) bool {
	return b.suppressed == 0 && b.tokens+float64(max(now.Sub(b.last), 0))/float64(every) >= burst
}

// Limiter decides which lines pass. It is safe for concurrent use; the
// zero value is not usable: call NewLimiter.
type Limiter struct {
	cfg   Config
	burst float64

	mu    sync.Mutex
	keys  map[string]*bucket
	total bucket // used when cfg.Total > 0
}

// NewLimiter returns a Limiter with cfg's rates.
func NewLimiter(cfg Config) *Limiter {
	if cfg.Burst < 1 {
		cfg.Burst = 1
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = defaultMaxKeys
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Limiter{cfg: cfg, burst: float64(cfg.Burst), keys: make(map[string]*bucket)}
	l.total = bucket{tokens: float64(cfg.Total), last: cfg.Now()}
	return l
}

// Allow reports whether a line of message msg for key may be logged now
// and, when it may, how many lines of the same msg and key were held back
// since the last one that passed (to be said once, on this line).
func (l *Limiter) Allow(msg, key string) (ok bool, suppressed int) {
	if l.cfg.Every <= 0 {
		return true, 0
	}
	return l.AllowAt(l.cfg.Now(), msg, key)
}

// AllowAt is Allow at the time now, for a caller that carries its own
// clock reading (a poller's tick). A time before the last one seen for
// the pair refills nothing.
func (l *Limiter) AllowAt(now time.Time, msg, key string) (ok bool, suppressed int) {
	if l.cfg.Every <= 0 {
		return true, 0
	}
	id := msg + "\x00" + key
	l.mu.Lock()
	defer l.mu.Unlock()
	b, found := l.keys[id]
	if !found {
		l.makeRoom(now)
		b = &bucket{tokens: l.burst, last: now}
		l.keys[id] = b
	}
	b.refill(now, l.cfg.Every, l.burst)
	if b.tokens < 1 {
		b.suppressed++
		return false, 0
	}
	if l.cfg.Total > 0 {
		l.total.refill(now, l.cfg.Every/time.Duration(l.cfg.Total), float64(l.cfg.Total))
		if l.total.tokens < 1 {
			b.suppressed++
			return false, 0
		}
		l.total.tokens--
	}
	b.tokens--
	suppressed, b.suppressed = b.suppressed, 0
	return true, suppressed
}

// makeRoom forgets pairs when the map is full: first those that are as
// good as new, else one at random. The caller holds mu.
func (l *Limiter) makeRoom(now time.Time) {
	if len(l.keys) < l.cfg.MaxKeys {
		return
	}
	for id, b := range l.keys {
		if b.full(now, l.cfg.Every, l.burst) {
			delete(l.keys, id)
		}
	}
	for id := range l.keys {
		if len(l.keys) < l.cfg.MaxKeys {
			break
		}
		delete(l.keys, id)
	}
}

// Logger logs through a Limiter: each call names the key its line is
// limited by, besides its message.
type Logger struct {
	log *slog.Logger
	lim *Limiter
}

// New returns a Logger writing to log with cfg's rates.
func New(log *slog.Logger, cfg Config) *Logger {
	return &Logger{log: log, lim: NewLimiter(cfg)}
}

// Log logs msg at level with args (slog's key-value pairs) unless the
// message and key are over their rate; a line let through after lines
// were held back gets SuppressedKey with their count. The key is for
// limiting only: put what the reader needs in args.
func (l *Logger) Log(ctx context.Context, level slog.Level, key, msg string, args ...any) {
	if !l.log.Enabled(ctx, level) {
		return
	}
	ok, n := l.lim.Allow(msg, key)
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, SuppressedKey, n)
	}
	l.log.Log(ctx, level, msg, args...)
}

// Debug logs at debug level, rate-limited by msg and key.
func (l *Logger) Debug(key, msg string, args ...any) {
	l.Log(context.Background(), slog.LevelDebug, key, msg, args...)
}

// Info logs at info level, rate-limited by msg and key.
func (l *Logger) Info(key, msg string, args ...any) {
	l.Log(context.Background(), slog.LevelInfo, key, msg, args...)
}

// Warn logs at warn level, rate-limited by msg and key.
func (l *Logger) Warn(key, msg string, args ...any) {
	l.Log(context.Background(), slog.LevelWarn, key, msg, args...)
}

// Error logs at error level, rate-limited by msg and key.
func (l *Logger) Error(key, msg string, args ...any) {
	l.Log(context.Background(), slog.LevelError, key, msg, args...)
}

// Handler returns a slog.Handler that passes records to next at cfg's
// rates, limited by message and by the value of the attribute keyAttr
// (e.g. "client"; "" limits by message only), found among the record's
// attributes or those added with WithAttrs. Records below next's level
// are not counted.
func Handler(next slog.Handler, cfg Config, keyAttr string) slog.Handler {
	return &handler{next: next, lim: NewLimiter(cfg), keyAttr: keyAttr}
}

type handler struct {
	next    slog.Handler
	lim     *Limiter
	keyAttr string
	key     string // keyAttr's value when set by WithAttrs
	group   bool   // after WithGroup, record attributes are not top level
}

func (h *handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	key := h.key
	if h.keyAttr != "" && !h.group {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == h.keyAttr {
				key = a.Value.String()
				return false
			}
			return true
		})
	}
	ok, n := h.lim.Allow(r.Message, key)
	if !ok {
		return nil
	}
	if n > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int(SuppressedKey, n))
	}
	return h.next.Handle(ctx, r)
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(attrs)
	if h.keyAttr != "" && !h.group {
		for _, a := range attrs {
			if a.Key == h.keyAttr {
				c.key = a.Value.String()
			}
		}
	}
	return &c
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.next = h.next.WithGroup(name)
	c.group = true
	return &c
}
