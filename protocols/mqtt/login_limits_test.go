package mqtt

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// Issue 17, item 4: lockouts anyone can forge. Failed logins over plain UDP
// (MQTT-SN, CoAP without DTLS) come from addresses anyone can forge: they
// must never block TCP clients of that address. Accounts are throttled too,
// for a bounded time, and never for the sources that already use them.

// loginFrom connects from the loopback address ip to the broker's TCP
// listener with a raw MQTT CONNECT of the given level and returns the
// CONNACK's reason code.
func loginFrom(t testing.TB, tb *testBroker, ip string, level byte, id, user, pass string) byte {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: secWait}
	c, err := d.Dial("tcp", tb.Addr("tcp"))
	if err != nil {
		t.Fatalf("dial from %s: %v", ip, err)
	}
	defer c.Close()
	raw := &secRaw{Conn: c, r: bufio.NewReader(c)}
	code, _ := raw.connect(t, level, id, user, pass)
	return code
}

// sessionLogin opens an in-process session the way the CoAP and MQTT-SN
// gateways do, from remote over UDP, and returns the CONNACK reason code.
func sessionLogin(t testing.TB, tb *testBroker, remote string, verified, trusted bool, user, pass string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), secWait)
	defer cancel()
	s, err := tb.Connect(ctx, SessionOptions{
		Listener:       "udp-test",
		Remote:         &net.UDPAddr{IP: net.ParseIP(remote), Port: 5683},
		SourceVerified: verified,
		ClientID:       secID("udp"),
		Username:       user,
		Password:       []byte(pass),
		Trusted:        trusted,
		CleanStart:     true,
	})
	if err != nil {
		r := bus.RefusalOf(err)
		if r.Code < 0x80 {
			t.Fatalf("session from %s: %v", remote, err)
		}
		return r.Code
	}
	_ = s.Disconnect(false)
	return 0
}

// loginBroker has users alice and bob (password "pw"), anonymous logins
// refused, and the default failed-login limits unless mutate changes them.
func loginBroker(t testing.TB, mutate func(*Config)) *testBroker {
	t.Helper()
	hash := secHash(t, "pw")
	return secStart(t, "-", func(c *Config) {
		c.Listeners.WebSocket.Enabled = false
		c.Auth.AllowAnonymous = false
		c.Auth.Users = []User{{Username: "alice", PasswordHash: hash}, {Username: "bob", PasswordHash: hash}}
		if mutate != nil {
			mutate(c)
		}
	})
}

// TestLoginForgedUDPFailuresDoNotBlockTCP is the attack through the
// path the UDP gateways use: five failed logins from 127.0.0.88 over plain
// UDP, then a correct MQTT login over TCP from 127.0.0.88. It used to get
// CONNACK 0x86 (v3 0x05) for up to 16 minutes.
func TestLoginForgedUDPFailuresDoNotBlockTCP(t *testing.T) {
	t.Parallel()
	tb := loginBroker(t, nil)
	const victim = "127.0.0.88"
	for i := 0; i < 5; i++ {
		if code := sessionLogin(t, tb, victim, false, false, "alice", "forged"); code != 0x86 {
			t.Fatalf("forged UDP login %d: %#x, want 0x86", i+1, code)
		}
	}
	for _, level := range []byte{4, 5} {
		if code := loginFrom(t, tb, victim, level, secID("victim"), "alice", "pw"); code != 0 {
			t.Fatalf("MQTT %d login over TCP from %s after 5 forged UDP failures: CONNACK %#x, want 0", level, victim, code)
		}
	}
	// The forged failures throttle plain-UDP password logins from that
	// address only (for block_for, never longer) ...
	if code := sessionLogin(t, tb, victim, false, false, "alice", "pw"); code != 0x86 {
		t.Errorf("plain-UDP login from %s right after 5 failures: %#x, want 0x86 (throttled)", victim, code)
	}
	// ... not DTLS sessions (their source is proved), nor sessions the
	// gateway vouches for (MQTT-SN: no password to guess).
	if code := sessionLogin(t, tb, victim, true, false, "alice", "pw"); code != 0 {
		t.Errorf("DTLS login from %s: %#x, want 0", victim, code)
	}
	if code := sessionLogin(t, tb, victim, false, true, "alice", ""); code != 0 {
		t.Errorf("trusted MQTT-SN login from %s: %#x, want 0", victim, code)
	}
	// Many more forged failures against alice from the same address and
	// from rotating addresses throttle alice for sources she has not used,
	// never for 127.0.0.88, where she logged in above.
	for i := 0; i < 50; i++ {
		sessionLogin(t, tb, fmt.Sprintf("127.0.1.%d", i+1), false, false, "alice", "forged")
	}
	if code := loginFrom(t, tb, victim, 5, secID("victim"), "alice", "pw"); code != 0 {
		t.Fatalf("known source after 50 forged failures against alice: CONNACK %#x, want 0", code)
	}
	if n := tb.Stats().AuthFailures.Load(); n < 55 {
		t.Errorf("AuthFailures = %d, want >= 55", n)
	}
}

// TestLoginFailuresBlockVerifiedAddress: failures over TCP (or from a source
// the transport proved, DTLS) still block that address for every login, and
// only that address.
func TestLoginFailuresBlockVerifiedAddress(t *testing.T) {
	t.Parallel()
	tb := loginBroker(t, nil)
	for _, tc := range []struct {
		name string
		ip   string
		fail func(ip string) byte
	}{
		// Each case guesses its own username, so that no account
		// throttle gets in the way of the address's count.
		{"tcp v5", "127.0.0.61", func(ip string) byte { return loginFrom(t, tb, ip, 5, secID("bad"), "guess-v5", "wrong") }},
		{"tcp v3", "127.0.0.62", func(ip string) byte { return loginFrom(t, tb, ip, 4, secID("bad"), "guess-v3", "wrong") }},
		{"dtls session", "127.0.0.63", func(ip string) byte { return sessionLogin(t, tb, ip, true, false, "guess-dtls", "wrong") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i < 5; i++ {
				if code := tc.fail(tc.ip); code != 0x86 && code != 0x04 && code != 0x05 {
					t.Fatalf("failure %d: %#x", i+1, code)
				}
			}
			if code := loginFrom(t, tb, tc.ip, 5, secID("good"), "alice", "pw"); code != 0x86 {
				t.Errorf("right password over TCP from the blocked %s: %#x, want 0x86", tc.ip, code)
			}
			if code := sessionLogin(t, tb, tc.ip, false, false, "alice", "pw"); code != 0x86 {
				t.Errorf("right password over UDP from the blocked %s: %#x, want 0x86", tc.ip, code)
			}
			if code := loginFrom(t, tb, "127.0.0.60", 5, secID("other"), "alice", "pw"); code != 0 {
				t.Errorf("another address: %#x, want 0", code)
			}
		})
	}
}

// TestLoginAccountThrottle: failures against one username from many
// addresses (one each, under the per-address limit) throttle that account
// for sources it has not used, for a bounded time; its known sources and
// other accounts are not affected. The same for one client id.
func TestLoginAccountThrottle(t *testing.T) {
	t.Parallel()
	const blockFor, blockMax = time.Second, 2 * time.Second
	tb := loginBroker(t, func(c *Config) {
		c.Auth.AccountBlockFor = blockFor
		c.Auth.AccountBlockMax = blockMax
	})
	const known = "127.0.0.2"
	if code := loginFrom(t, tb, known, 5, secID("alice"), "alice", "pw"); code != 0 {
		t.Fatalf("alice's first login: %#x", code)
	}
	// Ten failures, each from its own address (127.0.0.10-19).
	for i := 0; i < 10; i++ {
		if code := loginFrom(t, tb, fmt.Sprintf("127.0.0.%d", 10+i), 5, secID("guess"), "alice", fmt.Sprintf("guess%d", i)); code != 0x86 {
			t.Fatalf("guess %d: %#x", i, code)
		}
	}
	blockedAt := time.Now()
	if code := loginFrom(t, tb, "127.0.0.50", 5, secID("new"), "alice", "pw"); code != 0x86 {
		t.Fatalf("alice from a new address while her account is throttled: %#x, want 0x86", code)
	}
	if code := loginFrom(t, tb, known, 5, secID("alice"), "alice", "pw"); code != 0 {
		t.Fatalf("alice from her known address while throttled: %#x, want 0", code)
	}
	if code := loginFrom(t, tb, "127.0.0.51", 5, secID("bob"), "bob", "pw"); code != 0 {
		t.Fatalf("bob from a new address: %#x, want 0", code)
	}
	// Bounded: a new source gets in once the block (account_block_for)
	// ends. Refused attempts do not count as failures.
	var waited time.Duration
	if !testwait.Until(time.Until(blockedAt.Add(blockMax+3*time.Second)), func() bool {
		if code := loginFrom(t, tb, "127.0.0.52", 5, secID("new"), "alice", "pw"); code == 0 {
			waited = time.Since(blockedAt)
			return true
		}
		return false
	}) {
		t.Fatalf("alice from a new address still refused %s after the block began (account_block_max %s)", time.Since(blockedAt), blockMax)
	}
	t.Logf("account throttle lifted for a new source after %s (account_block_for %s)", waited.Round(time.Millisecond), blockFor)

	// One client id guessed with many usernames.
	for i := 0; i < 10; i++ {
		loginFrom(t, tb, fmt.Sprintf("127.0.0.%d", 100+i), 5, "plc-1", fmt.Sprintf("user%d", i), "x")
	}
	if code := loginFrom(t, tb, "127.0.0.120", 5, "plc-1", "bob", "pw"); code != 0x86 {
		t.Errorf("client id plc-1 from a new address after 10 failures: %#x, want 0x86", code)
	}
	if code := loginFrom(t, tb, "127.0.0.120", 5, "plc-2", "bob", "pw"); code != 0 {
		t.Errorf("client id plc-2: %#x, want 0", code)
	}
}

// TestLoginGuardAccountBlockBounded runs a day of a sustained account
// attack from rotating addresses against the limiter with a fake clock: no
// block ever lasts longer than account_block_max, a known source is never
// refused, and once the attack stops a new source gets in within
// account_block_max.
func TestLoginGuardAccountBlockBounded(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig().Auth
	p := newLoginPolicy(cfg)
	g := newLoginGuard()
	now := time.Unix(1_700_000_000, 0)
	known := loginSource{ip: "10.0.0.1", verified: true}
	fresh := loginSource{ip: "10.0.0.2", verified: true}
	g.succeeded(now, known, "alice")
	var longest, blockedTime time.Duration
	var blockStart time.Time
	attacker := 0
	for end := now.Add(24 * time.Hour); now.Before(end); now = now.Add(time.Second) {
		if g.check(now, known, "alice", "c", true) != loginAllowed {
			t.Fatalf("known source refused at %s", now)
		}
		blocked := g.check(now, fresh, "alice", "c", true) == loginAccountBlocked
		switch {
		case blocked && blockStart.IsZero():
			blockStart = now
		case !blocked && !blockStart.IsZero():
			longest = max(longest, now.Sub(blockStart))
			blockStart = time.Time{}
		}
		if blocked {
			blockedTime += time.Second
			continue
		}
		// The attacker fails as fast as the throttle lets it, each time
		// from a new address (over TCP or forged over UDP).
		for i := 0; i < 20; i++ {
			attacker++
			src := loginSource{ip: fmt.Sprintf("10.%d.%d.%d", attacker>>16&255, attacker>>8&255, attacker&255), verified: attacker%2 == 0}
			if g.check(now, src, "alice", "c", true) == loginAllowed {
				g.failed(now, src, "alice", "c", p)
			}
		}
	}
	if longest > cfg.AccountBlockMax+time.Second {
		t.Errorf("longest account block %s, want <= account_block_max %s", longest, cfg.AccountBlockMax)
	}
	// The attack stops: a new source gets in within account_block_max.
	stop := now
	for g.check(now, fresh, "alice", "c", true) != loginAllowed {
		now = now.Add(time.Second)
		if now.Sub(stop) > cfg.AccountBlockMax {
			t.Fatalf("new source still refused %s after the attack stopped", now.Sub(stop))
		}
	}
	t.Logf("24 h attack: %d failures, longest block %s (cap %s), throttled %.0f%% of the time; new source admitted %s after it stopped",
		attacker, longest, cfg.AccountBlockMax, 100*blockedTime.Seconds()/(24*3600), now.Sub(stop))
}

// TestLoginGuardBounded floods every table of the limiter with 100,000
// distinct keys each (addresses over TCP and UDP, usernames, client ids,
// known sources, and 64 KiB usernames): the tables keep at most
// loginTableSize entries, the heap grows by a few MiB, and an address
// blocked before the flood stays blocked.
func TestLoginGuardBounded(t *testing.T) {
	p := newLoginPolicy(DefaultConfig().Auth)
	g := newLoginGuard()
	now := time.Unix(1_700_000_000, 0)
	target := loginSource{ip: "192.0.2.1", verified: true}
	for i := 0; i < p.maxFailures; i++ {
		g.failed(now, target, "", "", p)
	}
	if g.check(now, target, "alice", "", true) != loginAddressBlocked {
		t.Fatal("target not blocked")
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	const n = 100_000
	for i := 0; i < n; i++ {
		now = now.Add(time.Microsecond)
		ip := fmt.Sprintf("fd00::%x:%x", i>>16, i&0xffff)
		g.failed(now, loginSource{ip: ip, verified: true}, fmt.Sprintf("user%d", i), fmt.Sprintf("client%d", i), p)
		g.failed(now, loginSource{ip: ip}, "", "", p)
		g.succeeded(now, loginSource{ip: ip, verified: i%2 == 0}, fmt.Sprintf("user%d", i))
	}
	long := strings.Repeat("u", 65535)
	for i := 0; i < 256; i++ {
		user := fmt.Sprintf("%d%s", i, long[:65535-8])
		g.failed(now, target, user, user, p)
		g.succeeded(now, target, user)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	addr, udp, accounts, knownN := g.sizes()
	for name, got := range map[string]int{"addresses": addr, "udp": udp, "accounts": accounts, "known": knownN} {
		if got > loginTableSize {
			t.Errorf("%s table: %d entries, want <= %d", name, got, loginTableSize)
		}
	}
	growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("after %d distinct keys per table: %d/%d/%d/%d entries (cap %d), heap growth %.1f MiB",
		n, addr, udp, accounts, knownN, loginTableSize, float64(growth)/(1<<20))
	if growth > 16<<20 {
		t.Errorf("heap grew by %.1f MiB, want < 16 MiB", float64(growth)/(1<<20))
	}
	if g.check(now, target, "alice", "", true) != loginAddressBlocked {
		t.Error("the address blocked before the flood was evicted by it")
	}
}

// TestLoginGuardTables checks the block rules of each table with a fake
// clock: addresses double up to 16 × block_for, plain-UDP addresses never
// escalate, a failure window that passes forgets the count.
func TestLoginGuardTables(t *testing.T) {
	t.Parallel()
	p := newLoginPolicy(DefaultConfig().Auth) // 5 failures / 1 min, block 1 min
	for _, tc := range []struct {
		name     string
		src      loginSource
		password bool
		want     []time.Duration // successive block lengths
	}{
		{"tcp address", loginSource{ip: "10.1.1.1", verified: true}, true, []time.Duration{1, 2, 4, 8, 16, 16}},
		{"udp address", loginSource{ip: "10.1.1.2"}, true, []time.Duration{1, 1, 1, 1, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newLoginGuard()
			now := time.Unix(1_700_000_000, 0)
			for round, want := range tc.want {
				for i := 0; i < p.maxFailures; i++ {
					if v := g.check(now, tc.src, "", "", tc.password); v != loginAllowed {
						t.Fatalf("round %d failure %d: refused before the limit", round, i)
					}
					g.failed(now, tc.src, "", "", p)
				}
				start := now
				for g.check(now, tc.src, "", "", true) != loginAllowed {
					now = now.Add(time.Second)
				}
				if got := now.Sub(start); got != want*time.Minute {
					t.Errorf("round %d: blocked %s, want %s", round, got, want*time.Minute)
				}
			}
			// A quiet window forgets the count: four failures, a pause
			// longer than the window, four more: no block.
			src := loginSource{ip: "10.9.9.9", verified: tc.src.verified}
			for i := 0; i < 2*(p.maxFailures-1); i++ {
				if i == p.maxFailures-1 {
					now = now.Add(p.window + time.Second)
				}
				g.failed(now, src, "", "", p)
			}
			if g.check(now, src, "", "", true) != loginAllowed {
				t.Error("blocked though no window held max_failures failures")
			}
		})
	}
}

// TestLoginConfigValidate: the account limits are validated with their
// field paths.
func TestLoginConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		mutate func(*Auth)
		want   string // "" = valid
	}{
		{"defaults", func(*Auth) {}, ""},
		{"no account blocks", func(a *Auth) { a.AccountBlockFor = 0 }, ""},
		{"zero failures", func(a *Auth) { a.AccountMaxFailures = 0 }, "auth.account_max_failures"},
		{"negative block", func(a *Auth) { a.AccountBlockFor = -time.Second }, "auth.account_block_for"},
		{"block over an hour", func(a *Auth) { a.AccountBlockFor, a.AccountBlockMax = 2*time.Hour, 2*time.Hour }, "auth.account_block_for"},
		{"max under first", func(a *Auth) { a.AccountBlockMax = time.Second }, "auth.account_block_max"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mutate(&cfg.Auth)
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid config refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want+":")):
				t.Fatalf("got %v, want an error on %s", err, tc.want)
			}
		})
	}
}
