package mqtt

import (
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// publishLimiter is one connection's publish rate limit. Only the
// connection's reading goroutine uses it.
type publishLimiter struct {
	mu        sync.Mutex
	lim       *rate.Limiter
	overSince time.Time
}

func newPublishLimiter(perSecond float64, burst int) *publishLimiter {
	return &publishLimiter{lim: rate.NewLimiter(rate.Limit(perSecond), max(burst, 1))}
}

// take accounts for one publish at now. It returns how long the reader
// should wait before going on, and over=true when the client has been over
// its rate without a break for longer than grace.
func (p *publishLimiter) take(now time.Time, grace time.Duration) (wait time.Duration, over bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.lim.ReserveN(now, 1)
	if !r.OK() {
		return 0, true
	}
	wait = r.DelayFrom(now)
	if wait == 0 {
		p.overSince = time.Time{}
		return 0, false
	}
	if p.overSince.IsZero() {
		p.overSince = now
	}
	if grace > 0 && now.Sub(p.overSince) > grace {
		r.CancelAt(now)
		return 0, true
	}
	return wait, false
}

// ipRateLimiter is a token bucket per source address, for new connections.
// Idle buckets are swept so an address scan cannot grow it without bound.
type ipRateLimiter struct {
	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	lastSweep time.Time
}

func newIPRateLimiter() *ipRateLimiter {
	return &ipRateLimiter{buckets: make(map[string]*rate.Limiter)}
}

func (l *ipRateLimiter) allow(ip string, perSecond float64, burst int) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > time.Minute {
		for k, b := range l.buckets {
			if b.TokensAt(now) >= float64(b.Burst()) {
				delete(l.buckets, k)
			}
		}
		l.lastSweep = now
	}
	b := l.buckets[ip]
	if b == nil || b.Limit() != rate.Limit(perSecond) || b.Burst() != max(burst, 1) {
		b = rate.NewLimiter(rate.Limit(perSecond), max(burst, 1))
		l.buckets[ip] = b
	}
	return b.AllowN(now, 1)
}

// loginLimiter blocks a source address after too many failed logins within
// a window; each further block doubles, up to 16 times the configured one.
type loginLimiter struct {
	mu    sync.Mutex
	state map[string]*loginState
}

type loginState struct {
	failures     []time.Time
	blockedUntil time.Time
	blocks       int
}

func newLoginLimiter() *loginLimiter {
	return &loginLimiter{state: make(map[string]*loginState)}
}

func (l *loginLimiter) blocked(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.state[key]
	return s != nil && now.Before(s.blockedUntil)
}

func (l *loginLimiter) failed(key string, now time.Time, maxFailures int, window, blockFor time.Duration) {
	if maxFailures <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.state) > 10000 { // forget old entries rather than grow without bound
		for k, s := range l.state {
			if now.After(s.blockedUntil) && (len(s.failures) == 0 || now.Sub(s.failures[len(s.failures)-1]) > window) {
				delete(l.state, k)
			}
		}
	}
	s := l.state[key]
	if s == nil {
		s = &loginState{}
		l.state[key] = s
	}
	keep := s.failures[:0]
	for _, t := range s.failures {
		if now.Sub(t) <= window {
			keep = append(keep, t)
		}
	}
	s.failures = append(keep, now)
	if len(s.failures) >= maxFailures {
		s.blockedUntil = now.Add(blockFor << min(s.blocks, 4))
		s.blocks++
		s.failures = s.failures[:0]
	}
}

// logLimiter lets one line per key through per interval, so that a wire
// cannot flood the log; it counts what it suppressed.
type logLimiter struct {
	log      *slog.Logger
	interval time.Duration
	mu       sync.Mutex
	last     map[string]time.Time
	dropped  map[string]int
}

func newLogLimiter(log *slog.Logger, interval time.Duration) *logLimiter {
	return &logLimiter{log: log, interval: interval, last: make(map[string]time.Time), dropped: make(map[string]int)}
}

func (l *logLimiter) warn(key, msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	if t, ok := l.last[key]; ok && now.Sub(t) < l.interval {
		l.dropped[key]++
		l.mu.Unlock()
		return
	}
	if len(l.last) > 10000 {
		clear(l.last)
		clear(l.dropped)
	}
	n := l.dropped[key]
	delete(l.dropped, key)
	l.last[key] = now
	l.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.log.Warn(msg, args...)
}
