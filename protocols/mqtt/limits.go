package mqtt

import (
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/fieldgate/fieldgate/internal/ratelog"
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

// Failed logins (how a guesser is slowed, and why nobody can forge a
// lockout). Three kinds of key are counted apart, each in a table of its
// own, so that none can be used to fill or to forge another:
//
//   - a verified source address: the peer of a TCP, TLS, WebSocket or QUIC
//     connection, or of an in-process session whose gateway proved the
//     address (a DTLS handshake, which includes a cookie exchange). Its
//     failures block that address for every login, doubling up to 16 times
//     block_for;
//   - an unverified source address: an in-process session over plain UDP
//     (MQTT-SN, CoAP without DTLS), whose address anyone on the LAN can
//     forge. Its failures only throttle password logins over plain UDP from
//     that address, for block_for and never longer: they never block a TCP,
//     TLS, WebSocket, QUIC or DTLS client;
//   - an account: a username, or a client id, whatever the address. Its
//     failures throttle logins to that account from sources that have not
//     logged in to it before, for account_block_for, doubling up to
//     account_block_max and no further.
//
// A source (address and transport kind) that logged in to an account
// within knownSourceTTL is exempt from that account's throttle: attackers
// who rotate addresses to guess an account's password, or to lock it out,
// cannot lock out the devices that already use it. This is the "device
// cookie" of OWASP's guidance, with the source address as the cookie.
//
// Keys are 64-bit hashes with a per-process random seed, so a 64 KiB
// username costs eight bytes, and every table has a fixed number of entries:
// when one is full, entries with nothing left to say are swept (at most once
// a second), and if that is not enough, the least telling of a few entries
// taken at random is dropped.

const (
	// loginTableSize is the number of entries of each table.
	loginTableSize = 16384
	// knownSourceTTL is how long a successful login exempts its source from
	// the account throttle.
	knownSourceTTL = 7 * 24 * time.Hour
	// addressBlockShift: an address's blocks double up to 1<<4 = 16 times
	// block_for.
	addressBlockShift = 4
	// evictSample is how many entries are compared to pick one to drop.
	evictSample = 8
	// sweepEvery bounds how often a full table is swept.
	sweepEvery = time.Second
)

// loginPolicy is the auth section's failed-login limits, compiled.
type loginPolicy struct {
	maxFailures        int
	window             time.Duration
	blockFor           time.Duration
	accountMaxFailures int
	accountBlockFor    time.Duration
	accountBlockMax    time.Duration
}

func newLoginPolicy(a Auth) loginPolicy {
	return loginPolicy{
		maxFailures:        a.MaxFailures,
		window:             a.FailureWindow,
		blockFor:           a.BlockFor,
		accountMaxFailures: a.AccountMaxFailures,
		accountBlockFor:    a.AccountBlockFor,
		accountBlockMax:    max(a.AccountBlockMax, a.AccountBlockFor),
	}
}

// blockRule is how one table turns failures into blocks: maxFailures within
// window block the key for first, each further block in a row doubles, up
// to last.
type blockRule struct {
	maxFailures int
	window      time.Duration
	first, last time.Duration
}

func (p loginPolicy) addressRule() blockRule {
	return blockRule{p.maxFailures, p.window, p.blockFor, p.blockFor << addressBlockShift}
}

func (p loginPolicy) udpRule() blockRule {
	return blockRule{p.maxFailures, p.window, p.blockFor, p.blockFor}
}

func (p loginPolicy) accountRule() blockRule {
	return blockRule{p.accountMaxFailures, p.window, p.accountBlockFor, p.accountBlockMax}
}

// failureEntry is one key's failures; times are Unix nanoseconds.
type failureEntry struct {
	windowStart  int64 // first failure of the current window
	lastFailure  int64
	blockedUntil int64
	expires      int64 // after this the entry tells nothing
	failures     int32 // in the current window
	blocks       int32 // blocks in a row, for the doubling
}

// failureTable counts failed logins per hashed key, in at most size
// entries. Its user holds the lock.
type failureTable struct {
	seed      maphash.Seed
	size      int
	entries   map[uint64]failureEntry
	lastSweep int64
}

func newFailureTable(size int) *failureTable {
	return &failureTable{seed: maphash.MakeSeed(), size: size, entries: make(map[uint64]failureEntry)}
}

func (t *failureTable) key(kind, v string) uint64 {
	var h maphash.Hash
	h.SetSeed(t.seed)
	_, _ = h.WriteString(kind)
	_ = h.WriteByte(0)
	_, _ = h.WriteString(v)
	return h.Sum64()
}

func (t *failureTable) blocked(k uint64, now int64) bool {
	e, ok := t.entries[k]
	return ok && now < e.blockedUntil
}

func (t *failureTable) fail(k uint64, now int64, r blockRule) {
	if r.maxFailures <= 0 || r.first <= 0 {
		return
	}
	e, ok := t.entries[k]
	if !ok {
		t.makeRoom(now)
	}
	window := int64(r.window)
	if now-e.lastFailure > window+int64(r.last) {
		e.blocks = 0 // quiet long enough: the doubling starts over
	}
	if now-e.windowStart > window {
		e.windowStart, e.failures = now, 0
	}
	e.failures++
	e.lastFailure = now
	if int(e.failures) >= r.maxFailures {
		d := r.first
		for i := int32(0); i < e.blocks && d < r.last; i++ {
			d *= 2
		}
		d = min(d, r.last)
		e.blockedUntil = now + int64(d)
		e.blocks = min(e.blocks+1, 64)
		e.windowStart, e.failures = now, 0
	}
	e.expires = max(e.blockedUntil, now+window+int64(r.last))
	t.entries[k] = e
}

// makeRoom frees an entry when the table is full.
func (t *failureTable) makeRoom(now int64) {
	if len(t.entries) < t.size {
		return
	}
	if now-t.lastSweep >= int64(sweepEvery) {
		t.lastSweep = now
		for k, e := range t.entries {
			if e.expires <= now {
				delete(t.entries, k)
			}
		}
		if len(t.entries) < t.size {
			return
		}
	}
	var victim uint64
	var worst failureEntry
	n := 0
	for k, e := range t.entries { // map order is random
		if n == 0 || lessTelling(e, worst, now) {
			victim, worst = k, e
		}
		if n++; n == evictSample {
			break
		}
	}
	delete(t.entries, victim)
}

// lessTelling orders entries for eviction: one not blocked before one
// blocked, then fewer failures, then the older last failure.
func lessTelling(a, b failureEntry, now int64) bool {
	if ab, bb := now < a.blockedUntil, now < b.blockedUntil; ab != bb {
		return !ab
	}
	if a.failures != b.failures {
		return a.failures < b.failures
	}
	return a.lastFailure < b.lastFailure
}

// knownTable remembers sources that logged in to an account, in at most
// size entries. Its user holds the lock.
type knownTable struct {
	seed      maphash.Seed
	size      int
	seen      map[uint64]int64 // hashed (kind, address, username) → last login
	lastSweep int64
}

func newKnownTable(size int) *knownTable {
	return &knownTable{seed: maphash.MakeSeed(), size: size, seen: make(map[uint64]int64)}
}

func (t *knownTable) key(src loginSource, user string) uint64 {
	var h maphash.Hash
	h.SetSeed(t.seed)
	_, _ = h.WriteString(src.kind())
	_ = h.WriteByte(0)
	_, _ = h.WriteString(src.ip)
	_ = h.WriteByte(0)
	_, _ = h.WriteString(user)
	return h.Sum64()
}

func (t *knownTable) has(k uint64, now int64) bool {
	at, ok := t.seen[k]
	return ok && now-at <= int64(knownSourceTTL)
}

func (t *knownTable) add(k uint64, now int64) {
	if _, ok := t.seen[k]; !ok && len(t.seen) >= t.size {
		if now-t.lastSweep >= int64(sweepEvery) {
			t.lastSweep = now
			for k, at := range t.seen {
				if now-at > int64(knownSourceTTL) {
					delete(t.seen, k)
				}
			}
		}
		if len(t.seen) >= t.size {
			var victim uint64
			var oldest int64
			n := 0
			for k, at := range t.seen {
				if n == 0 || at < oldest {
					victim, oldest = k, at
				}
				if n++; n == evictSample {
					break
				}
			}
			delete(t.seen, victim)
		}
	}
	t.seen[k] = now
}

// loginSource is where a login comes from.
type loginSource struct {
	ip string // "" when the address is not known
	// verified: the transport proved that the peer receives at ip (a TCP
	// handshake, QUIC, DTLS). Plain UDP does not.
	verified bool
}

func (s loginSource) kind() string {
	if s.verified {
		return "ip"
	}
	return "udp"
}

// loginVerdict is what the failed-login limits say about a login.
type loginVerdict int

const (
	loginAllowed        loginVerdict = iota
	loginAddressBlocked              // too many failures from the source address
	loginAccountBlocked              // too many failures against the username or client id
)

// loginGuard is the broker's failed-login limits: per verified address,
// per unverified (plain UDP) address, per account (username, client id),
// and the sources known to each account. Safe for concurrent use.
type loginGuard struct {
	mu       sync.Mutex
	addr     *failureTable
	udp      *failureTable
	accounts *failureTable
	known    *knownTable
}

func newLoginGuard() *loginGuard {
	return &loginGuard{
		addr:     newFailureTable(loginTableSize),
		udp:      newFailureTable(loginTableSize),
		accounts: newFailureTable(loginTableSize),
		known:    newKnownTable(loginTableSize),
	}
}

// check says whether a login may go on to its password check. With
// password false (a client certificate, or a gateway that vouches for the
// username) only a verified address's block applies: there is nothing to
// guess, and nothing forged may refuse it.
func (g *loginGuard) check(now time.Time, src loginSource, user, clientID string, password bool) loginVerdict {
	n := now.UnixNano()
	g.mu.Lock()
	defer g.mu.Unlock()
	if src.ip != "" {
		if g.addr.blocked(g.addr.key("ip", src.ip), n) {
			return loginAddressBlocked
		}
		if password && !src.verified && g.udp.blocked(g.udp.key("ip", src.ip), n) {
			return loginAddressBlocked
		}
	}
	// Anonymous logins have no account to protect: allowed, anyone may
	// use any client id; not allowed, they fail whatever the client id.
	if !password || user == "" || src.ip != "" && g.known.has(g.known.key(src, user), n) {
		return loginAllowed
	}
	if g.accounts.blocked(g.accounts.key("user", user), n) {
		return loginAccountBlocked
	}
	if clientID != "" && g.accounts.blocked(g.accounts.key("client", clientID), n) {
		return loginAccountBlocked
	}
	return loginAllowed
}

// failed counts a failed password check against the source address (in the
// table of its kind) and, when a username was given, against it and the
// client id. (The client id's count catches a guesser who tries many
// usernames for one client id, to take over its session.)
func (g *loginGuard) failed(now time.Time, src loginSource, user, clientID string, p loginPolicy) {
	n := now.UnixNano()
	g.mu.Lock()
	defer g.mu.Unlock()
	if src.ip != "" {
		if src.verified {
			g.addr.fail(g.addr.key("ip", src.ip), n, p.addressRule())
		} else {
			g.udp.fail(g.udp.key("ip", src.ip), n, p.udpRule())
		}
	}
	if user == "" {
		return
	}
	g.accounts.fail(g.accounts.key("user", user), n, p.accountRule())
	if clientID != "" {
		g.accounts.fail(g.accounts.key("client", clientID), n, p.accountRule())
	}
}

// succeeded records a successful password login: its source is known to
// the account from now on. Failure counts are left as they are, so that a
// guesser cannot reset them by logging in to an account of its own.
func (g *loginGuard) succeeded(now time.Time, src loginSource, user string) {
	if src.ip == "" || user == "" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.known.add(g.known.key(src, user), now.UnixNano())
}

// sizes returns the number of entries of each table, for tests.
func (g *loginGuard) sizes() (addr, udp, accounts, known int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.addr.entries), len(g.udp.entries), len(g.accounts.entries), len(g.known.seen)
}

// logLimiter lets one line per message and key through per interval, so
// that a wire cannot flood the log; the next line says how many it held
// back (internal/ratelog).
type logLimiter struct {
	log *ratelog.Logger
}

func newLogLimiter(log *slog.Logger, interval time.Duration) *logLimiter {
	return &logLimiter{log: ratelog.New(log, ratelog.Config{Every: interval, Burst: 1, MaxKeys: 10000})}
}

func (l *logLimiter) warn(key, msg string, args ...any) {
	l.log.Warn(key, msg, args...)
}
