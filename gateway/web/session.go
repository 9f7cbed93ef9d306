package web

import (
	"crypto/sha256"
	"sync"
	"time"
)

// session is one logged-in browser. Sessions live in memory only: a
// restart of the gateway logs everyone out.
type session struct {
	csrf     string
	created  time.Time
	lastSeen time.Time
}

// sessions holds the logged-in browsers, keyed by the SHA-256 of their
// cookie value (so that a timing leak of the map reveals nothing usable).
type sessions struct {
	ttl, max time.Duration

	mu sync.Mutex
	m  map[[32]byte]*session
}

func newSessions(ttl, max time.Duration) *sessions {
	return &sessions{ttl: ttl, max: max, m: make(map[[32]byte]*session)}
}

// maxSessions bounds memory; the oldest session goes first.
const maxSessions = 1000

// create starts a session and returns its cookie value and CSRF token.
func (s *sessions) create(now time.Time) (id, csrf string) {
	id, csrf = randomString(32), randomString(32)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	if len(s.m) >= maxSessions {
		var oldestKey [32]byte
		var oldest time.Time
		for k, v := range s.m {
			if oldest.IsZero() || v.created.Before(oldest) {
				oldestKey, oldest = k, v.created
			}
		}
		delete(s.m, oldestKey)
	}
	s.m[sha256.Sum256([]byte(id))] = &session{csrf: csrf, created: now, lastSeen: now}
	return id, csrf
}

// get returns the CSRF token of a live session and extends it.
func (s *sessions) get(id string, now time.Time) (csrf string, ok bool) {
	k := sha256.Sum256([]byte(id))
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	if !ok {
		return "", false
	}
	if now.Sub(v.lastSeen) > s.ttl || now.Sub(v.created) > s.max {
		delete(s.m, k)
		return "", false
	}
	v.lastSeen = now
	return v.csrf, true
}

// remove ends one session.
func (s *sessions) remove(id string) {
	s.mu.Lock()
	delete(s.m, sha256.Sum256([]byte(id)))
	s.mu.Unlock()
}

// removeAll ends every session (after a password change).
func (s *sessions) removeAll() {
	s.mu.Lock()
	clear(s.m)
	s.mu.Unlock()
}

func (s *sessions) pruneLocked(now time.Time) {
	for k, v := range s.m {
		if now.Sub(v.lastSeen) > s.ttl || now.Sub(v.created) > s.max {
			delete(s.m, k)
		}
	}
}

// limiter slows down password guessing per source address: after free
// wrong attempts in a row, each further one must wait a delay that doubles
// from base to max. A success clears the address.
//
// An attempt is counted before its password is checked (reserve), not
// after: otherwise a burst of parallel guesses would all pass the check
// for the delay while none had failed yet.
type limiter struct {
	free      int
	base, max time.Duration

	mu sync.Mutex
	m  map[string]*attempts
}

type attempts struct {
	failures int       // attempts counted since the last success
	until    time.Time // no attempt before this
	last     time.Time
}

// maxLimiterEntries bounds the addresses remembered.
const maxLimiterEntries = 10000

func newLimiter(free int, base, max time.Duration) *limiter {
	return &limiter{free: free, base: base, max: max, m: make(map[string]*attempts)}
}

// reserve counts an attempt by addr before its password is checked. When
// addr must still wait it returns that wait and counts nothing. Otherwise
// the attempt is counted as a failure (success clears it) and penalty is
// the wait a failure of this attempt costs: 0 within the free attempts.
// From the free-th attempt on, the next one must wait.
func (l *limiter) reserve(addr string, now time.Time) (wait, penalty time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.m[addr]
	if !ok {
		if len(l.m) >= maxLimiterEntries {
			l.pruneLocked(now)
		}
		a = &attempts{}
		l.m[addr] = a
	}
	if now.Before(a.until) {
		return a.until.Sub(now), 0
	}
	a.failures++
	a.last = now
	first := max(l.free, 1) // the attempt after which waiting starts
	if a.failures < first {
		return 0, 0
	}
	d := l.base
	for i := first; i < a.failures && d < l.max; i++ {
		d *= 2
	}
	d = min(d, l.max)
	a.until = now.Add(d)
	if a.failures <= l.free {
		return 0, 0
	}
	return 0, d
}

// success clears addr.
func (l *limiter) success(addr string) {
	l.mu.Lock()
	delete(l.m, addr)
	l.mu.Unlock()
}

// pruneLocked forgets addresses idle for longer than the longest delay, or
// half of all when that is not enough (a flood of spoofed-looking sources).
func (l *limiter) pruneLocked(now time.Time) {
	for k, a := range l.m {
		if now.Sub(a.last) > l.max && !now.Before(a.until) {
			delete(l.m, k)
		}
	}
	if len(l.m) < maxLimiterEntries {
		return
	}
	n := 0
	for k := range l.m {
		if n%2 == 0 {
			delete(l.m, k)
		}
		n++
	}
}
