package store

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
)

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	must(t, err)
	return fi.Size()
}

// fillAndClear writes n values of size bytes in bucket q, keeps keep of
// them, and deletes the rest.
func fillAndClear(t *testing.T, db *DB, n, size, keep int) {
	t.Helper()
	v := bytes.Repeat([]byte("q"), size)
	for i := range n {
		must(t, db.Put("q", fmt.Appendf(nil, "k%05d", i), v))
		if i%16 == 15 {
			syncT(t, db) // commits of ~16 values: a realistic file
		}
	}
	syncT(t, db)
	for i := keep; i < n; i++ {
		must(t, db.Delete("q", fmt.Appendf(nil, "k%05d", i)))
	}
	syncT(t, db)
}

// TestCompactAtOpen: a file left large and mostly free (queued messages
// cleared) is compacted when it is opened again, keeping every record.
func TestCompactAtOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.db")
	db := openTest(t, path, Options{CompactInterval: -1})
	fillAndClear(t, db, 200, 256<<10, 3) // 50 MB in, 3 values kept
	must(t, db.Put("small", []byte("a"), []byte("b")))
	must(t, db.Close())
	before := fileSize(t, path)

	var logs lockedBuffer
	db2 := openTest(t, path, Options{Logger: newLogger(&logs)})
	after := fileSize(t, path)
	t.Logf("file %d bytes before, %d after the compaction at open", before, after)
	if before < 32<<20 || after > 4<<20 {
		t.Fatalf("file %d bytes before, %d after", before, after)
	}
	if !strings.Contains(logs.String(), "store compacted") {
		t.Fatalf("not logged:\n%s", logs.String())
	}
	if got := dump(t, db2, "q"); len(got) != 3 {
		t.Fatalf("kept %d values", len(got))
	}
	if v, err := db2.Get("small", []byte("a")); err != nil || string(v) != "b" {
		t.Fatalf("get: %q %v", v, err)
	}
	// Writes go on in the new file, and it is not compacted again.
	must(t, db2.Put("small", []byte("c"), []byte("d")))
	syncT(t, db2)
	if _, err := os.Stat(path + compactSuffix); !os.IsNotExist(err) {
		t.Fatalf("temporary file left: %v", err)
	}
}

// TestCompactWhileOpen: Compact (and the idle check) shrink the file while
// readers and writers keep going.
func TestCompactWhileOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.db")
	db := openTest(t, path, Options{CompactInterval: -1})
	fillAndClear(t, db, 200, 256<<10, 2)
	before := fileSize(t, path)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // readers during the compaction
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := db.Get("q", []byte("k00000")); err != nil {
				t.Errorf("get during compaction: %v", err)
				return
			}
		}
	}()
	go func() { // writers during the compaction
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			if err := db.Put("w", fmt.Appendf(nil, "%d", i%100), []byte("x")); err != nil {
				t.Errorf("put during compaction: %v", err)
				return
			}
		}
	}()
	must(t, db.Compact(context.Background()))
	cancel()
	wg.Wait()
	syncT(t, db)
	after := fileSize(t, path)
	t.Logf("file %d bytes before, %d after Compact", before, after)
	if after > before/4 {
		t.Fatalf("file %d bytes before, %d after", before, after)
	}
	if got := dump(t, db, "q"); len(got) != 2 {
		t.Fatalf("kept %d values", len(got))
	}
	if st := db.Stats(); st.Compactions != 1 {
		t.Fatalf("stats: %+v", st)
	}

	// The idle check compacts by itself once the file is mostly free again.
	must(t, db.Close())
	db2 := openTest(t, path, Options{CompactInterval: 20 * time.Millisecond})
	fillAndClear(t, db2, 100, 256<<10, 1)
	big := fileSize(t, path)
	if !testwait.Until(10*time.Second, func() bool { return fileSize(t, path) <= big/4 }) {
		t.Fatalf("idle compaction: %d → %d bytes, stats %+v", big, fileSize(t, path), db2.Stats())
	}
}
