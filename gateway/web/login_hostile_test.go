package web

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// loginCost is the bcrypt cost of the burst tests: the default (about
// 0.1 s per check on a board) unless the race detector makes that too slow.
func loginCost() int {
	if raceEnabled {
		return 6
	}
	return bcrypt.DefaultCost
}

// loginFrom posts a login with password from local address src
// (127.0.0.0/8 is all loopback on Linux) and returns the status code.
func loginFrom(t *testing.T, base, src, password string) int {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	body, _ := json.Marshal(map[string]string{"password": password})
	resp, err := cl.Post(base+"/api/v1/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Errorf("login from %s: %v", src, err)
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestHostileLoginBurstOneAddress is issue 17 item 5: login() waited, then
// ran bcrypt, then recorded the failure, so 150 parallel guesses from one
// address were all checked and the right password inside the burst got
// 200. Now each attempt is counted before bcrypt runs.
func TestHostileLoginBurstOneAddress(t *testing.T) {
	cfg := testConfig()
	cfg.LoginFreeAttempts = 3
	cfg.LoginDelay = time.Second
	cfg.LoginConcurrency = 64 // not the global cap: the per-address count is under test
	fb := newFakeBackend()
	h := startOn(t, cfg, fb, fb, t.TempDir(), Options{BcryptCost: loginCost()})
	h.setUp()
	before := h.srv.auth.checks.Load()

	const n = 150
	codes := make([]int, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			codes[i] = loginFrom(t, h.base, "127.0.0.1", fmt.Sprintf("guess-%d", i))
		}()
	}
	close(start)
	// Inside the burst, once the free attempts are spent: the right one.
	// (A check is counted after its attempt was reserved: three checks
	// mean the third reservation has set the wait.)
	waitFor(t, func() bool { return h.srv.auth.checks.Load()-before >= int64(cfg.LoginFreeAttempts) })
	right := loginFrom(t, h.base, "127.0.0.1", testPassword)
	wg.Wait()

	checked := h.srv.auth.checks.Load() - before
	count := map[int]int{}
	for _, c := range codes {
		count[c]++
	}
	t.Logf("150 parallel wrong logins from one address: %d password checks, answers %v; the right one inside the burst: %d", checked, count, right)
	if checked > int64(cfg.LoginFreeAttempts) {
		t.Errorf("%d passwords checked, want at most the %d free attempts", checked, cfg.LoginFreeAttempts)
	}
	if count[401] > cfg.LoginFreeAttempts || count[401]+count[429] != n {
		t.Errorf("answers %v", count)
	}
	if right != http.StatusTooManyRequests {
		t.Errorf("the right password inside the burst: %d, want 429", right)
	}
	// After the wait the right password works.
	h.clock.Add(cfg.LoginDelay)
	if code := loginFrom(t, h.base, "127.0.0.1", testPassword); code != 200 {
		t.Fatalf("right password after the wait: %d", code)
	}
}

// TestHostileLoginBurstMQTT is issue 17 item 5's other half: a burst of
// logins ran bcrypt without bound and pushed MQTT round trips to 4.5 s. 150
// parallel wrong logins from 50 addresses (3 each: all free) now run at
// most web.login_concurrency checks at once; the rest are refused at once.
// The MQTT round trip (PINGREQ → PINGRESP on a real broker) is measured
// during the burst and reported.
func TestHostileLoginBurstMQTT(t *testing.T) {
	broker := startBroker(t)
	ping := mqttPinger(t, broker)
	idle := pingStats(ping, 20)

	run := func(t *testing.T, concurrency int) (maxRTT, medianRTT time.Duration) {
		cfg := testConfig()
		cfg.LoginConcurrency = concurrency
		fb := newFakeBackend()
		h := startOn(t, cfg, fb, fb, t.TempDir(), Options{BcryptCost: loginCost()})
		h.setUp()
		before := h.srv.auth.checks.Load()
		var wg sync.WaitGroup
		var busy, wrong atomic.Int64
		start := make(chan struct{})
		for a := range 50 {
			for range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					switch loginFrom(t, h.base, fmt.Sprintf("127.0.0.%d", a+2), "wrong guess") {
					case 429:
						busy.Add(1)
					case 401:
						wrong.Add(1)
					}
				}()
			}
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		var rtts []time.Duration
		most := 0
		close(start)
	measure:
		for {
			select {
			case <-done:
				break measure
			default:
			}
			most = max(most, len(h.srv.logins))
			rtts = append(rtts, ping())
		}
		rtts = append(rtts, ping())
		slices.Sort(rtts)
		t.Logf("login_concurrency %d: 150 logins from 50 addresses: %d password checks (%d answered 401), %d refused at once (429), at most %d checks at once; MQTT round trip during the burst: median %v, max %v over %d pings (idle: %v)",
			concurrency, h.srv.auth.checks.Load()-before, wrong.Load(), busy.Load(), most, rtts[len(rtts)/2], rtts[len(rtts)-1], len(rtts), idle)
		if most > concurrency {
			t.Errorf("%d password checks at once, cap %d", most, concurrency)
		}
		return rtts[len(rtts)-1], rtts[len(rtts)/2]
	}
	maxRTT, _ := run(t, DefaultConfig().LoginConcurrency)
	if maxRTT > time.Second {
		t.Errorf("MQTT round trip reached %v during the login burst, want < 1s", maxRTT)
	}
	if os.Getenv("FIELDGATE_WEB_COMPARE") != "" && !raceEnabled {
		// For comparison only (not asserted, ~20 s): the bound lifted as
		// far as the config allows, close to the old behaviour.
		t.Run("uncapped", func(t *testing.T) { run(t, 64) })
	}
}

// pingStats returns the median of n round trips.
func pingStats(ping func() time.Duration, n int) time.Duration {
	var rtts []time.Duration
	for range n {
		rtts = append(rtts, ping())
	}
	slices.Sort(rtts)
	return rtts[n/2]
}

// startBroker runs the real MQTT broker on a port of its own and returns
// its TCP address.
func startBroker(t *testing.T) string {
	t.Helper()
	mc := mqtt.DefaultConfig()
	mc.Listeners.TCP.Address = "127.0.0.1:0"
	mc.Listeners.WebSocket.Enabled = false
	broker, err := mqtt.New(mc, mqtt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- broker.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return broker.Addr("tcp")
}

// mqttConnect opens an MQTT 3.1.1 session (clean, keep alive 60 s) and
// returns the connection once CONNACK 0 arrived.
func mqttConnect(addr, clientID string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	pk := append([]byte{0x10, byte(12 + len(clientID)), 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, byte(len(clientID))}, clientID...)
	if _, err := c.Write(pk); err != nil {
		c.Close()
		return nil, err
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || !bytes.Equal(ack, []byte{0x20, 2, 0, 0}) {
		c.Close()
		return nil, fmt.Errorf("connack %x: %v", ack, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// mqttPinger connects to the broker and returns a function that measures
// one PINGREQ → PINGRESP round trip.
func mqttPinger(t *testing.T, addr string) func() time.Duration {
	t.Helper()
	c, err := mqttConnect(addr, "rtt-probe")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	resp := make([]byte, 2)
	return func() time.Duration {
		start := time.Now()
		c.SetDeadline(start.Add(10 * time.Second))
		if _, err := c.Write([]byte{0xc0, 0}); err != nil {
			t.Fatalf("pingreq: %v", err)
		}
		if _, err := io.ReadFull(c, resp); err != nil || resp[0] != 0xd0 {
			t.Fatalf("pingresp %x: %v", resp, err)
		}
		return time.Since(start)
	}
}
