package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func openTest(t *testing.T, path string, opts Options) *DB {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	db, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func syncT(t *testing.T, db *DB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

func dump(t *testing.T, db *DB, bucket string) map[string]string {
	t.Helper()
	got := map[string]string{}
	if err := db.ForEach(bucket, func(k, v []byte) error {
		got[string(k)] = string(v)
		return nil
	}); err != nil {
		t.Fatalf("ForEach: %v", err)
	}
	return got
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestPutDeleteForEachGet(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "s.db"), Options{})

	if got := dump(t, db, "missing"); len(got) != 0 {
		t.Fatalf("missing bucket: got %v", got)
	}
	if _, err := db.Get("missing", []byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get missing bucket: %v, want ErrNotFound", err)
	}

	val := []byte("one")
	must(t, db.Put("a", []byte("k1"), val))
	val[0] = 'X' // Put copies
	must(t, db.Put("a", []byte("k2"), []byte("two")))
	must(t, db.Put("b", []byte("k1"), []byte("other")))
	must(t, db.Delete("a", []byte("nope")))
	syncT(t, db)

	if got, want := dump(t, db, "a"), map[string]string{"k1": "one", "k2": "two"}; !equalMaps(got, want) {
		t.Fatalf("bucket a = %v, want %v", got, want)
	}
	v, err := db.Get("b", []byte("k1"))
	if err != nil || string(v) != "other" {
		t.Fatalf("Get b/k1 = %q, %v", v, err)
	}

	must(t, db.Delete("a", []byte("k1")))
	syncT(t, db)
	if _, err := db.Get("a", []byte("k1")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get deleted: %v, want ErrNotFound", err)
	}
	if got, want := dump(t, db, "a"), map[string]string{"k2": "two"}; !equalMaps(got, want) {
		t.Fatalf("bucket a = %v, want %v", got, want)
	}

	stop := errors.New("stop")
	if err := db.ForEach("a", func(k, v []byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("ForEach error = %v, want wrapping %v", err, stop)
	}

	for _, bad := range []struct{ bucket, key string }{{"", "k"}, {"a", ""}} {
		if err := db.Put(bad.bucket, []byte(bad.key), nil); err == nil {
			t.Errorf("Put(%q, %q) succeeded, want error", bad.bucket, bad.key)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// gate is a value whose encoding blocks until released: enqueued first, it
// holds the writer inside a commit so that the test controls what is pending.
type gate struct {
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{entered: make(chan struct{}), release: make(chan struct{})} }

func (g *gate) MarshalBinary() ([]byte, error) {
	close(g.entered)
	<-g.release
	return []byte("gate"), nil
}

// counting counts its encodings.
type counting struct {
	n   *atomic.Int32
	val string
}

func (c counting) MarshalBinary() ([]byte, error) {
	c.n.Add(1)
	return []byte(c.val), nil
}

func TestCoalescing(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "s.db"), Options{})
	must(t, db.Put("p", []byte("old"), []byte("old")))
	must(t, db.Put("p", []byte("keep-old"), []byte("x")))
	must(t, db.Put("q", []byte("c1:old"), []byte("x")))
	syncT(t, db)

	g := newGate()
	must(t, db.PutMarshaler("g", []byte("gate"), g))
	<-g.entered // the writer is now inside a commit; everything below is pending

	var encoded atomic.Int32
	must(t, db.Put("p", []byte("k"), []byte("v1")))
	must(t, db.Put("p", []byte("k"), []byte("v2")))
	must(t, db.Put("p", []byte("k"), []byte("v3"))) // last write wins
	must(t, db.Put("p", []byte("gone"), []byte("v")))
	must(t, db.Delete("p", []byte("gone"))) // delete after put wins
	must(t, db.PutMarshaler("p", []byte("acked"), counting{&encoded, "big"}))
	must(t, db.Delete("p", []byte("acked"))) // never encoded, never written
	must(t, db.Delete("p", []byte("old")))
	must(t, db.Put("p", []byte("old"), []byte("new"))) // put after delete wins
	must(t, db.Put("q", []byte("c1:a"), []byte("x")))
	must(t, db.DeletePrefix("q", []byte("c1:")))          // removes c1:old on disk and c1:a pending
	must(t, db.Put("q", []byte("c1:b"), []byte("after"))) // enqueued after: kept
	must(t, db.Put("q", []byte("c2:a"), []byte("other")))
	if st := db.Stats(); st.Pending != 7 {
		t.Errorf("Pending = %d, want 7 (coalesced)", st.Pending)
	}
	close(g.release)
	syncT(t, db)

	if got, want := dump(t, db, "p"), map[string]string{"k": "v3", "old": "new", "keep-old": "x"}; !equalMaps(got, want) {
		t.Errorf("bucket p = %v, want %v", got, want)
	}
	if got, want := dump(t, db, "q"), map[string]string{"c1:b": "after", "c2:a": "other"}; !equalMaps(got, want) {
		t.Errorf("bucket q = %v, want %v", got, want)
	}
	if n := encoded.Load(); n != 0 {
		t.Errorf("superseded PutMarshaler value encoded %d times, want 0", n)
	}
	t.Logf("stats: %+v", db.Stats())
}

func TestSyncBarrierAndConcurrentWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	db := openTest(t, path, Options{MaxPending: 64}) // small: exercise backpressure
	const writers, perWriter = 16, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				key := []byte(fmt.Sprintf("w%02d-%05d", w, i))
				if err := db.Put("c", key, key); err != nil {
					t.Error(err)
					return
				}
				if i%100 == 99 {
					// Sync is a barrier: this writer's keys so far must be readable.
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					err := db.Sync(ctx)
					cancel()
					if err != nil {
						t.Error(err)
						return
					}
					if _, err := db.Get("c", key); err != nil {
						t.Errorf("after Sync, Get %s: %v", key, err)
					}
				}
				if i%3 == 0 {
					_ = db.Delete("c", key)
				}
			}
		}()
	}
	wg.Wait()
	syncT(t, db)
	got := dump(t, db, "c")
	want := writers * (perWriter - (perWriter+2)/3)
	if len(got) != want {
		t.Fatalf("have %d keys, want %d", len(got), want)
	}
	st := db.Stats()
	if st.Enqueued != uint64(writers*perWriter+writers*((perWriter+2)/3)) {
		t.Errorf("Enqueued = %d", st.Enqueued)
	}
	t.Logf("stats: %+v (%.1f ops per commit)", st, float64(st.Ops)/float64(st.Commits))
}

func TestCloseFlushesAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	db, err := Open(path, Options{})
	must(t, err)
	for i := range 1000 {
		must(t, db.Put("b", []byte(fmt.Sprintf("%04d", i)), []byte("v")))
	}
	must(t, db.Close()) // no Sync: Close must flush
	must(t, db.Close()) // idempotent
	if err := db.Put("b", []byte("late"), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close: %v, want ErrClosed", err)
	}
	if err := db.Sync(context.Background()); err != nil {
		t.Fatalf("Sync after Close with nothing lost: %v", err)
	}

	db2 := openTest(t, path, Options{})
	if got := dump(t, db2, "b"); len(got) != 1000 {
		t.Fatalf("after reopen: %d keys, want 1000", len(got))
	}
}

func TestSyncContext(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "s.db"), Options{})
	g := newGate()
	must(t, db.PutMarshaler("g", []byte("k"), g))
	<-g.entered
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := db.Sync(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync while blocked: %v, want DeadlineExceeded", err)
	}
	close(g.release)
	syncT(t, db)
}

func TestLockedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	openTest(t, path, Options{})
	start := time.Now()
	_, err := Open(path, Options{OpenTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Open: %v, want ErrLocked naming %s", err, path)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("second Open took %s", d)
	}
}

func TestCorruptFile(t *testing.T) {
	cases := []struct {
		name    string
		content func(t *testing.T, path string) []byte
	}{
		{"garbage", func(*testing.T, string) []byte {
			return bytes.Repeat([]byte("not a bbolt file, just garbage. "), 1024)
		}},
		{"tiny", func(*testing.T, string) []byte { return []byte("x") }},
		{"torn meta pages", func(t *testing.T, path string) []byte {
			db, err := Open(path, Options{})
			must(t, err)
			must(t, db.Put("b", []byte("k"), []byte("v")))
			must(t, db.Close())
			data, err := os.ReadFile(path)
			must(t, err)
			for i := 16; i < 64; i++ { // both meta pages (4 KiB pages): scribble over their headers
				data[i] ^= 0xff
				data[4096+i] ^= 0xff
			}
			must(t, os.Remove(path))
			return data
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.db")
			must(t, os.WriteFile(path, tc.content(t, path), 0o600))
			orig, err := os.ReadFile(path)
			must(t, err)

			_, err = Open(path, Options{})
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open corrupt: %v, want ErrCorrupt naming the file", err)
			}
			t.Logf("error: %v", err)
			if now, _ := os.ReadFile(path); !bytes.Equal(now, orig) {
				t.Fatal("Open without MoveAsideCorrupt changed the file")
			}

			var logs bytes.Buffer
			clock := func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
			db := openTest(t, path, Options{
				MoveAsideCorrupt: true,
				Now:              clock,
				Logger:           slog.New(slog.NewTextHandler(&logs, nil)),
			})
			aside := path + ".corrupt-20260102T030405Z"
			moved, err := os.ReadFile(aside)
			if err != nil || !bytes.Equal(moved, orig) {
				t.Fatalf("moved-aside file %s: %v (equal=%v)", aside, err, bytes.Equal(moved, orig))
			}
			if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), aside) {
				t.Errorf("log does not name the new file at error level: %s", logs.String())
			}
			must(t, db.Put("b", []byte("k"), []byte("fresh")))
			syncT(t, db)
			if v, err := db.Get("b", []byte("k")); err != nil || string(v) != "fresh" {
				t.Fatalf("Get after starting empty: %q %v", v, err)
			}
		})
	}
}

func TestOpenNotCorrupt(t *testing.T) {
	// A path that cannot be opened is an error, never a move aside.
	path := filepath.Join(t.TempDir(), "missing-dir", "s.db")
	_, err := Open(path, Options{MoveAsideCorrupt: true})
	if err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open in a missing dir: %v, want a plain error", err)
	}
}

// TestCorruptRandomNeverCrashes flips random bytes anywhere in a real file:
// Open with MoveAsideCorrupt must either use it or move it aside, never
// panic or fault (bbolt walks the tree in a goroutine of its own at open,
// which checkPages guards).
func TestCorruptRandomNeverCrashes(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.db")
	db, err := Open(src, Options{})
	must(t, err)
	for i := range 3000 {
		must(t, db.Put(fmt.Sprintf("b%d", i%3), []byte(fmt.Sprintf("%06d", i)), make([]byte, 100+i%700)))
	}
	must(t, db.Close())
	if err := checkPages(src); err != nil {
		t.Fatalf("checkPages on a good file: %v", err)
	}
	orig, err := os.ReadFile(src)
	must(t, err)

	seeds := 300
	if testing.Short() {
		seeds = 30
	}
	moved := 0
	for seed := range seeds {
		r := rand.New(rand.NewPCG(uint64(seed), 1))
		data := bytes.Clone(orig)
		for range 1 + r.IntN(20) {
			data[r.IntN(len(data))] ^= byte(1 + r.IntN(255))
		}
		path := filepath.Join(dir, fmt.Sprintf("c%d.db", seed))
		must(t, os.WriteFile(path, data, 0o600))
		db, err := Open(path, Options{MoveAsideCorrupt: true})
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		_ = db.ForEach("b1", func(k, v []byte) error { return nil })
		_ = db.Put("b1", []byte("x"), []byte("y"))
		_ = db.Close()
		if m, _ := filepath.Glob(path + ".corrupt-*"); len(m) > 0 {
			moved++
		}
	}
	t.Logf("%d of %d corrupted files moved aside, the rest usable", moved, seeds)
}
