package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
)

// fakeClock is a settable clock for TTL and age tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func openOutboxT(t testing.TB, o OutboxOptions) *Outbox {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.Logger == nil {
		if tt, ok := t.(*testing.T); ok {
			o.Logger = slog.New(slog.NewTextHandler(testWriter{tt}, &slog.HandlerOptions{Level: slog.LevelInfo}))
		}
	}
	q, err := OpenOutbox(o)
	if err != nil {
		t.Fatalf("OpenOutbox: %v", err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

func recs(prefix string, n int) []OutboxRecord {
	out := make([]OutboxRecord, n)
	for i := range out {
		out[i].Data = []byte(fmt.Sprintf("%s-%d", prefix, i))
	}
	return out
}

func appendT(t testing.TB, q *Outbox, rs ...OutboxRecord) uint64 {
	t.Helper()
	last, err := q.Append(context.Background(), rs...)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return last
}

func readAll(t testing.TB, q *Outbox, after uint64) []OutboxEntry {
	t.Helper()
	var all []OutboxEntry
	for {
		got, err := q.Read(after, 7, nil) // a small max exercises the cursor
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if len(got) == 0 {
			return all
		}
		all = append(all, got...)
		after = got[len(got)-1].Seq
	}
}

func datas(es []OutboxEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = string(e.Data)
	}
	return out
}

func TestOutboxAppendReadAckReopen(t *testing.T) {
	dir := t.TempDir()
	q := openOutboxT(t, OutboxOptions{Dir: dir})

	last := appendT(t, q, recs("a", 10)...)
	got := readAll(t, q, 0)
	if len(got) != 10 || got[9].Seq != last {
		t.Fatalf("read %d entries, last seq %d; want 10 ending at %d", len(got), got[len(got)-1].Seq, last)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Fatalf("sequence not increasing: %d then %d", got[i-1].Seq, got[i].Seq)
		}
		if want := fmt.Sprintf("a-%d", i); string(got[i].Data) != want {
			t.Fatalf("entry %d is %q, want %q", i, got[i].Data, want)
		}
	}
	// Reading from the middle returns only the later entries.
	if mid := readAll(t, q, got[4].Seq); len(mid) != 5 || mid[0].Seq != got[5].Seq {
		t.Fatalf("read after %d: %v", got[4].Seq, datas(mid))
	}
	// Returned data is a copy: scribbling on it changes nothing stored.
	copy(got[0].Data, "XXX")

	must(t, q.Ack(got[0].Seq, got[2].Seq, got[9].Seq, got[9].Seq, 1<<40))
	rest := readAll(t, q, 0)
	if want := "a-1 a-3 a-4 a-5 a-6 a-7 a-8"; strings.Join(datas(rest), " ") != want {
		t.Fatalf("after acks: %v, want %s", datas(rest), want)
	}
	st := q.Stats()
	if st.Depth != 7 || st.Acked != 3 || st.Appended != 10 {
		t.Fatalf("stats: %+v", st)
	}
	must(t, q.Close())
	if _, err := q.Append(context.Background(), recs("x", 1)...); !errors.Is(err, ErrOutboxClosed) {
		t.Fatalf("Append after Close: %v", err)
	}

	q2 := openOutboxT(t, OutboxOptions{Dir: dir})
	again := readAll(t, q2, 0)
	if strings.Join(datas(again), " ") != strings.Join(datas(rest), " ") {
		t.Fatalf("after reopen: %v, want %v", datas(again), datas(rest))
	}
	next := appendT(t, q2, recs("b", 1)...)
	if next <= last {
		t.Fatalf("sequence after reopen %d, not above %d", next, last)
	}
	if q2.Stats().Depth != 8 {
		t.Fatalf("depth after reopen: %+v", q2.Stats())
	}
}

// TestOutboxGroupCommit: 50 concurrent appenders share transactions, every
// sequence number is unique, and a reader sees each record once, in order.
func TestOutboxGroupCommit(t *testing.T) {
	q := openOutboxT(t, OutboxOptions{})
	const appenders, each = 50, 100
	var wg sync.WaitGroup
	seqs := make([][]uint64, appenders)
	for a := range appenders {
		wg.Go(func() {
			for i := range each {
				seq, err := q.Append(context.Background(), OutboxRecord{Data: fmt.Appendf(nil, "%d/%d", a, i)})
				if err != nil {
					t.Error(err)
					return
				}
				seqs[a] = append(seqs[a], seq)
			}
		})
	}
	// A concurrent reader follows the appends with Wait.
	var read []OutboxEntry
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var after uint64
		for len(read) < appenders*each {
			if err := q.Wait(ctx, after); err != nil {
				t.Error(err)
				return
			}
			got, err := q.Read(after, 500, nil)
			if err != nil {
				t.Error(err)
				return
			}
			if len(got) > 0 {
				read = append(read, got...)
				after = got[len(got)-1].Seq
			}
		}
	}()
	wg.Wait()
	<-readerDone

	seen := map[uint64]bool{}
	for a := range appenders {
		for i, s := range seqs[a] {
			if seen[s] {
				t.Fatalf("sequence %d returned twice", s)
			}
			seen[s] = true
			if i > 0 && s <= seqs[a][i-1] {
				t.Fatalf("appender %d: sequence went back", a)
			}
		}
	}
	if len(read) != appenders*each {
		t.Fatalf("reader saw %d entries, want %d", len(read), appenders*each)
	}
	for i := 1; i < len(read); i++ {
		if read[i].Seq <= read[i-1].Seq {
			t.Fatalf("reader: out of order at %d", i)
		}
	}
	st := q.Stats()
	if st.Commits >= appenders*each {
		t.Fatalf("no group commit: %d commits for %d appends", st.Commits, appenders*each)
	}
	t.Logf("%d appends in %d commits", st.Appended, st.Commits)
}

func TestOutboxDropOldest(t *testing.T) {
	q := openOutboxT(t, OutboxOptions{MaxMessages: 10})
	for i := range 15 {
		appendT(t, q, OutboxRecord{Data: fmt.Appendf(nil, "m%d", i)})
	}
	got := readAll(t, q, 0)
	if want := "m5 m6 m7 m8 m9 m10 m11 m12 m13 m14"; strings.Join(datas(got), " ") != want {
		t.Fatalf("got %v, want %s", datas(got), want)
	}
	if st := q.Stats(); st.Depth != 10 || st.Drops.Full != 5 {
		t.Fatalf("stats: %+v", st)
	}

	// By bytes: each record counts 28 + len(data).
	qb := openOutboxT(t, OutboxOptions{MaxBytes: 3 * (recOverhead + 10)})
	for i := range 5 {
		appendT(t, qb, OutboxRecord{Data: fmt.Appendf(nil, "0123456789")[:10]})
		_ = i
	}
	if st := qb.Stats(); st.Depth != 3 || st.Drops.Full != 2 || st.Bytes != 3*(recOverhead+10) {
		t.Fatalf("bytes limit: %+v", st)
	}
	// A single append larger than the limit itself is refused.
	if _, err := qb.Append(context.Background(), OutboxRecord{Data: make([]byte, 200)}); !errors.Is(err, ErrOutboxFull) {
		t.Fatalf("oversized append: %v", err)
	}
}

func TestOutboxRefuseNew(t *testing.T) {
	q := openOutboxT(t, OutboxOptions{MaxMessages: 5, Policy: RefuseNew})
	appendT(t, q, recs("a", 5)...)
	if _, err := q.Append(context.Background(), recs("b", 1)...); !errors.Is(err, ErrOutboxFull) {
		t.Fatalf("append when full: %v, want ErrOutboxFull", err)
	}
	if err := q.AppendAsync(recs("c", 1)...); !errors.Is(err, ErrOutboxFull) {
		t.Fatalf("async append when full: %v, want ErrOutboxFull", err)
	}
	got := readAll(t, q, 0)
	if len(got) != 5 || string(got[0].Data) != "a-0" {
		t.Fatalf("kept %v", datas(got))
	}
	must(t, q.Ack(got[0].Seq))
	appendT(t, q, recs("d", 1)...)
	if st := q.Stats(); st.Depth != 5 || st.Drops.Full != 2 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestOutboxFullHook(t *testing.T) {
	var full atomic.Bool
	for _, policy := range []OverflowPolicy{RefuseNew, DropOldest} {
		t.Run(policy.String(), func(t *testing.T) {
			full.Store(false)
			q := openOutboxT(t, OutboxOptions{Policy: policy, Full: full.Load})
			appendT(t, q, recs("a", 3)...)
			full.Store(true)
			_, err := q.Append(context.Background(), recs("b", 2)...)
			got := datas(readAll(t, q, 0))
			st := q.Stats()
			switch policy {
			case RefuseNew:
				if !errors.Is(err, ErrOutboxFull) || strings.Join(got, " ") != "a-0 a-1 a-2" {
					t.Fatalf("err %v, kept %v", err, got)
				}
			case DropOldest:
				if err != nil || strings.Join(got, " ") != "a-2 b-0 b-1" {
					t.Fatalf("err %v, kept %v", err, got)
				}
			}
			if st.Drops.Full != 2 || st.Depth != 3 {
				t.Fatalf("stats: %+v", st)
			}
		})
	}
}

func TestOutboxTTL(t *testing.T) {
	clock := newFakeClock()
	q := openOutboxT(t, OutboxOptions{TTL: time.Minute, Now: clock.Now})
	appendT(t, q, recs("old", 3)...)
	clock.Advance(30 * time.Second)
	appendT(t, q, OutboxRecord{Data: []byte("forever"), Expiry: clock.Now().Add(time.Hour)})
	appendT(t, q, recs("new", 2)...)
	if st := q.Stats(); st.OldestAge != 30*time.Second {
		t.Fatalf("oldest age %v, want 30s", st.OldestAge)
	}
	clock.Advance(45 * time.Second) // old ones expired, new ones not
	got := readAll(t, q, 0)
	if want := "forever new-0 new-1"; strings.Join(datas(got), " ") != want {
		t.Fatalf("got %v, want %s", datas(got), want)
	}
	if st := q.Stats(); st.Drops.Expired != 3 || st.Depth != 3 {
		t.Fatalf("stats: %+v", st)
	}
	clock.Advance(time.Minute)
	q.sweepExpired() // what the writer does every few seconds
	if st := q.Stats(); st.Drops.Expired != 5 || st.Depth != 1 {
		t.Fatalf("after sweep: %+v", st)
	}

	// DropOldest counts an expired victim as expired, not as full.
	q2 := openOutboxT(t, OutboxOptions{TTL: time.Minute, Now: clock.Now, MaxMessages: 2})
	appendT(t, q2, recs("x", 1)...)
	clock.Advance(2 * time.Minute)
	appendT(t, q2, recs("y", 2)...)
	if st := q2.Stats(); st.Drops.Expired != 1 || st.Drops.Full != 0 {
		t.Fatalf("victim classification: %+v", st.Drops)
	}
}

func TestOutboxWait(t *testing.T) {
	q := openOutboxT(t, OutboxOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := q.Wait(ctx, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on empty: %v", err)
	}
	woke := make(chan error, 1)
	go func() { woke <- q.Wait(context.Background(), 0) }()
	seq := appendT(t, q, recs("a", 1)...)
	select {
	case err := <-woke:
		must(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not wake on append")
	}
	// Entries past `after` that were acknowledged do not count.
	must(t, q.Ack(seq))
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if err := q.Wait(ctx2, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait after ack: %v", err)
	}
	go func() { woke <- q.Wait(context.Background(), seq) }()
	must(t, q.Close())
	if err := <-woke; !errors.Is(err, ErrOutboxClosed) {
		t.Fatalf("Wait across Close: %v", err)
	}
}

func TestOutboxAsyncAndBusy(t *testing.T) {
	q := openOutboxT(t, OutboxOptions{MaxPending: 1})
	must(t, q.AppendAsync(recs("a", 1)...))
	// Fill the queue faster than the writer can take it; some async appends
	// must be refused, and each refusal counted.
	var refused int
	for range 2000 {
		if err := q.AppendAsync(recs("b", 1)...); errors.Is(err, ErrOutboxBusy) {
			refused++
		} else {
			must(t, err)
		}
	}
	must(t, q.Close())
	st := q.Stats()
	if st.Drops.Overload != uint64(refused) || st.Appended+uint64(refused) != 2001 {
		t.Fatalf("refused %d, stats %+v", refused, st)
	}
	t.Logf("async: %d committed, %d refused as busy", st.Appended, refused)
}

func segFiles(t testing.TB, dir string) (segs, aside []string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if _, live, ok := parseSegName(e.Name()); ok && live {
			segs = append(segs, e.Name())
		} else if ok {
			aside = append(aside, e.Name())
		}
	}
	return segs, aside
}

func TestOutboxSegmentsRotateAndRemove(t *testing.T) {
	dir := t.TempDir()
	q := openOutboxT(t, OutboxOptions{Dir: dir, SegmentMessages: 100})
	for range 10 {
		appendT(t, q, recs("m", 100)...)
	}
	segs, _ := segFiles(t, dir)
	if len(segs) != 10 || q.Stats().Segments != 10 {
		t.Fatalf("segments after 1000 appends of 100 per segment: %v", segs)
	}
	got := readAll(t, q, 0)
	// Acknowledge all but the last in reverse order: segments go whole.
	for i := len(got) - 2; i >= 0; i-- {
		must(t, q.Ack(got[i].Seq))
	}
	// Files are removed after the segment leaves the index: poll the
	// directory itself, with a deadline.
	testwait.Until(10*time.Second, func() bool { segs, _ = segFiles(t, dir); return len(segs) == 1 })
	if len(segs) != 1 || q.Stats().Segments != 1 {
		t.Fatalf("segments left: %v", segs)
	}
	if rest := readAll(t, q, 0); len(rest) != 1 || rest[0].Seq != got[len(got)-1].Seq {
		t.Fatalf("left: %v", datas(rest))
	}
	must(t, q.Close())
	q2 := openOutboxT(t, OutboxOptions{Dir: dir, SegmentMessages: 100})
	if st := q2.Stats(); st.Depth != 1 {
		t.Fatalf("after reopen: %+v", st)
	}
	if seq := appendT(t, q2, recs("n", 1)...); seq <= got[len(got)-1].Seq {
		t.Fatalf("sequence reused after reopen: %d", seq)
	}
}

// TestOutboxMillionBounded pushes 1,000,000 × 200 B through (100,000 with
// -short) with a reader acknowledging everything. The reader starts only after
// a fifth has been appended, so a backlog builds up and is drained while the
// appends go on. At the end the directory must be small again: drained
// segments are removed whole (one bbolt file would keep ~471 MB).
func TestOutboxMillionBounded(t *testing.T) {
	total := 1_000_000
	if testing.Short() {
		total = 100_000
	}
	dir := t.TempDir()
	q := openOutboxT(t, OutboxOptions{Dir: dir})
	start := time.Now()
	const appenders, batch = 8, 100
	var (
		wg      sync.WaitGroup
		maxDisk atomic.Int64
	)
	data := bytes.Repeat([]byte("x"), 200)
	for range appenders {
		wg.Go(func() {
			rs := make([]OutboxRecord, batch)
			for i := range rs {
				rs[i].Data = data
			}
			for range total / appenders / batch {
				if _, err := q.Append(context.Background(), rs...); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var (
		after uint64
		read  int
		buf   []OutboxEntry
		seqs  []uint64
	)
	testwait.For(t, 5*time.Minute, "a fifth of the appends", func() bool { return q.Stats().Appended >= uint64(total/5) })
	maxDisk.Store(q.Stats().DiskBytes)
	for read < total {
		if err := q.Wait(ctx, after); err != nil {
			t.Fatalf("after %d read: %v", read, err)
		}
		var err error
		buf, err = q.Read(after, 1000, buf[:0])
		if err != nil {
			t.Fatal(err)
		}
		seqs = seqs[:0]
		for _, e := range buf {
			seqs = append(seqs, e.Seq)
		}
		must(t, q.Ack(seqs...))
		read += len(buf)
		after = buf[len(buf)-1].Seq
		if read%50_000 < len(buf) {
			maxDisk.Store(max(maxDisk.Load(), q.Stats().DiskBytes))
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	must(t, q.Close())
	var size int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			size += fi.Size()
		}
	}
	t.Logf("%d × 200 B in and out in %v (%.0f msg/s); directory %d files, %.1f MB at the end, max %.1f MB seen",
		total, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), len(ents), float64(size)/1e6, float64(maxDisk.Load())/1e6)
	if size > 64<<20 {
		t.Fatalf("data directory too large: %d bytes at the end, %d max", size, maxDisk.Load())
	}
}

func TestOutboxOptionsValidate(t *testing.T) {
	_, err := OpenOutbox(OutboxOptions{MaxBytes: -1, Policy: 7})
	if err == nil || !strings.Contains(err.Error(), "dir: must be set") ||
		!strings.Contains(err.Error(), "max_bytes") || !strings.Contains(err.Error(), "policy") {
		t.Fatalf("validate: %v", err)
	}
}

func TestOutboxLockedByAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	q := openOutboxT(t, OutboxOptions{Dir: dir})
	appendT(t, q, recs("a", 1)...)
	// bbolt's flock is per open file description, so a second open in the
	// same process sees the lock like another process would.
	if _, err := OpenOutbox(OutboxOptions{Dir: dir}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	segs, aside := segFiles(t, dir)
	if len(segs) != 1 || len(aside) != 0 {
		t.Fatalf("a locked segment must not be touched: %v %v", segs, aside)
	}
}
