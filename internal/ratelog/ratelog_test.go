package ratelog

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a fake clock the tests step by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) step(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// lines returns the non-empty lines of out.
func lines(out string) []string {
	var ls []string
	for _, l := range strings.Split(out, "\n") {
		if l != "" {
			ls = append(ls, l)
		}
	}
	return ls
}

// textLogger logs text lines without the time into buf.
func textLogger(buf *bytes.Buffer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	}))
}

func TestBurstAndRefill(t *testing.T) {
	clk := newClock()
	l := NewLimiter(Config{Every: 10 * time.Second, Burst: 3, Now: clk.now})
	allowed := func(n int) (passed, lastSuppressed int) {
		for range n {
			if ok, s := l.Allow("bad frame", "dev1"); ok {
				passed++
				lastSuppressed = s
			}
		}
		return passed, lastSuppressed
	}
	// A burst of 3, then nothing.
	if p, s := allowed(100); p != 3 || s != 0 {
		t.Fatalf("burst: %d passed (suppressed %d), want 3", p, s)
	}
	// 9 s later still nothing; at 10 s one line, which reports the 97+5
	// held back.
	clk.step(9 * time.Second)
	if p, _ := allowed(5); p != 0 {
		t.Fatalf("before the refill: %d passed", p)
	}
	clk.step(time.Second)
	if p, s := allowed(1); p != 1 || s != 102 {
		t.Fatalf("after 10 s: %d passed, suppressed %d; want 1 and 102", p, s)
	}
	// The count is said once.
	clk.step(10 * time.Second)
	if p, s := allowed(1); p != 1 || s != 0 {
		t.Fatalf("next: %d passed, suppressed %d; want 1 and 0", p, s)
	}
	// A long quiet refills to the burst, not beyond.
	clk.step(time.Hour)
	if p, _ := allowed(10); p != 3 {
		t.Fatalf("after an hour: %d passed, want 3", p)
	}
}

// TestKeysApart: each message and key has its own bucket.
func TestKeysApart(t *testing.T) {
	clk := newClock()
	l := NewLimiter(Config{Every: time.Minute, Burst: 1, Now: clk.now})
	for _, k := range []struct{ msg, key string }{{"a", "x"}, {"a", "y"}, {"b", "x"}, {"a", ""}} {
		if ok, _ := l.Allow(k.msg, k.key); !ok {
			t.Errorf("%q/%q refused on its first line", k.msg, k.key)
		}
		if ok, _ := l.Allow(k.msg, k.key); ok {
			t.Errorf("%q/%q passed twice", k.msg, k.key)
		}
	}
}

// TestTotal is the engine's rule for bad packets: one line per client a
// minute and 20 a minute in all, whatever the number of clients.
func TestTotal(t *testing.T) {
	clk := newClock()
	l := NewLimiter(Config{Every: time.Minute, Burst: 1, Total: 20, Now: clk.now})
	passed := 0
	for i := range 1000 {
		if ok, _ := l.Allow("bad packet", fmt.Sprintf("client-%d", i%100)); ok {
			passed++
		}
	}
	if passed != 20 {
		t.Fatalf("1000 lines from 100 clients: %d passed, want 20", passed)
	}
	// A minute later the overall bucket is full again: 20 more.
	clk.step(time.Minute)
	passed = 0
	for i := range 1000 {
		if ok, _ := l.Allow("bad packet", fmt.Sprintf("client-%d", i%100)); ok {
			passed++
		}
	}
	if passed != 20 {
		t.Fatalf("the next minute: %d passed, want 20", passed)
	}
}

// TestNoLimit: Every 0 lets everything through.
func TestNoLimit(t *testing.T) {
	l := NewLimiter(Config{})
	for range 100 {
		if ok, _ := l.Allow("m", "k"); !ok {
			t.Fatal("refused without a limit")
		}
	}
}

// TestMaxKeys: the pairs remembered stay bounded; pairs whose bucket is
// full again are forgotten first, those with a pending count last.
func TestMaxKeys(t *testing.T) {
	clk := newClock()
	l := NewLimiter(Config{Every: time.Minute, Burst: 1, MaxKeys: 10, Now: clk.now})
	for i := range 10_000 {
		l.Allow("m", fmt.Sprint(i))
	}
	if n := len(l.keys); n > 10 {
		t.Fatalf("%d pairs remembered, want at most 10", n)
	}
	// "hot" keeps its count when old pairs are as good as new.
	l.Allow("m", "hot")
	l.Allow("m", "hot") // held back: count 1
	clk.step(2 * time.Minute)
	for i := range 20 {
		l.Allow("m", fmt.Sprint("new", i))
		clk.step(2 * time.Minute)
	}
	if ok, s := l.Allow("m", "hot"); !ok || s != 1 {
		t.Errorf("hot: ok %v, suppressed %d; want true, 1", ok, s)
	}
}

// TestLogger: 1,000 bad lines from one client in a minute give 1 line, and
// the next one says how many were held back, once.
func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	clk := newClock()
	log := New(textLogger(&buf, slog.LevelInfo), Config{Every: time.Minute, Burst: 1, Now: clk.now})
	for range 1000 {
		log.Warn("client-1", "bad packet", "client", "client-1")
	}
	log.Warn("client-2", "bad packet", "client", "client-2")
	log.Debug("client-3", "not enabled: not counted", "client", "client-3")
	clk.step(time.Minute)
	log.Warn("client-1", "bad packet", "client", "client-1")
	log.Warn("client-1", "bad packet", "client", "client-1")
	clk.step(time.Minute)
	log.Error("client-1", "bad packet", "client", "client-1")
	want := []string{
		`level=WARN msg="bad packet" client=client-1`,
		`level=WARN msg="bad packet" client=client-2`,
		`level=WARN msg="bad packet" client=client-1 suppressed=999`,
		`level=ERROR msg="bad packet" client=client-1 suppressed=1`,
	}
	got := lines(buf.String())
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// A level that is off does not use up the bucket.
	buf.Reset()
	log.Info("k", "info line")
	if len(lines(buf.String())) != 1 {
		t.Errorf("info line: %q", buf.String())
	}
}

// TestHandler: wrapping a handler limits by message and the key
// attribute, from the record or from With.
func TestHandler(t *testing.T) {
	var buf bytes.Buffer
	clk := newClock()
	base := textLogger(&buf, slog.LevelInfo).Handler()
	log := slog.New(Handler(base, Config{Every: time.Minute, Burst: 2, Now: clk.now}, "client"))
	for range 10 {
		log.Warn("bad packet", "client", "a")
		log.Warn("bad packet", "client", "b")
		log.With("client", "c").Warn("bad packet")
		log.Info("started")
	}
	clk.step(time.Minute) // one line refilled
	log.Warn("bad packet", "client", "a")
	got := lines(buf.String())
	count := func(sub string) int {
		n := 0
		for _, l := range got {
			if strings.Contains(l, sub) {
				n++
			}
		}
		return n
	}
	if n := count("client=a"); n != 3 {
		t.Errorf("client a: %d lines, want 3 (burst 2, one refilled):\n%s", n, buf.String())
	}
	if n := count("client=b"); n != 2 {
		t.Errorf("client b: %d lines, want 2", n)
	}
	if n := count("client=c"); n != 2 {
		t.Errorf("client c (With): %d lines, want 2", n)
	}
	if n := count("started"); n != 2 {
		t.Errorf("no key: %d lines, want 2", n)
	}
	if last := got[len(got)-1]; !strings.HasSuffix(last, "client=a suppressed=8") {
		t.Errorf("last line %q, want the count of the 8 held back", last)
	}
	// A group: the key attribute inside it is not the top-level one.
	buf.Reset()
	g := log.WithGroup("g")
	g.Warn("grouped", "client", "x")
	g.Warn("grouped", "client", "y")
	g.Warn("grouped", "client", "z")
	if n := len(lines(buf.String())); n != 2 {
		t.Errorf("grouped: %d lines, want 2 (one bucket for the message)", n)
	}
}

// TestConcurrent: Allow is safe from many goroutines and lets exactly the
// burst through when the clock stands still.
func TestConcurrent(t *testing.T) {
	clk := newClock()
	l := NewLimiter(Config{Every: time.Minute, Burst: 5, Total: 8, Now: clk.now})
	var mu sync.Mutex
	passed := 0
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for range 1000 {
				if ok, _ := l.Allow("m", fmt.Sprint(g%2)); ok {
					mu.Lock()
					passed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if passed != 8 { // two keys of 5, capped at 8 in all
		t.Errorf("%d passed, want 8", passed)
	}
}
