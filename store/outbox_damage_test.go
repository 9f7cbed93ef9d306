package store

// Storage under attack (issue 17, item 9): segment files truncated or
// altered while the outbox runs, or while it is down. Every message the
// outbox acknowledged must be either recovered or counted lost, by cause.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
)

// lost is the sum of the drop causes a damaged file can produce.
func lost(d OutboxDrops) uint64 { return d.Truncated + d.Corrupt + d.Checksum + d.Expired }

// payload is the data of message i in these tests: recognisable, 200 bytes.
func payload(i int) []byte {
	p := fmt.Appendf(nil, "msg-%06d-", i)
	return append(p, bytes.Repeat([]byte{'a' + byte(i%26)}, 200-len(p))...)
}

// appendN appends n messages numbered from base in calls of 100 and returns
// their sequence numbers by message number.
func appendN(t *testing.T, q *Outbox, base, n int) map[uint64]int {
	t.Helper()
	bySeq := make(map[uint64]int, n)
	for i := 0; i < n; i += 100 {
		k := min(100, n-i)
		rs := make([]OutboxRecord, k)
		for j := range rs {
			rs[j].Data = payload(base + i + j)
		}
		last := appendT(t, q, rs...)
		for j := range k {
			bySeq[last-uint64(k-1-j)] = base + i + j
		}
	}
	return bySeq
}

// TestOutboxTruncatedWhileOpen truncates a live segment file (the head,
// where appends go, or the oldest, where reads go) while the outbox is open,
// then publishes more and reads: before, the first access was a SIGBUS in
// bbolt that killed the process, and after the restart nothing was counted
// lost. Now the shrink is seen before bbolt touches the file: the segment is
// salvaged and moved aside, appends go on in a new head, and every
// acknowledged message (Append returned, not yet Ack'ed) is either read back
// intact or counted lost by cause, in Stats and in the error log.
func TestOutboxTruncatedWhileOpen(t *testing.T) {
	page := int64(os.Getpagesize())
	cases := []struct {
		name   string
		oldest bool // truncate the oldest segment instead of the head
		size   func(int64) int64
	}{
		{"head-to-zero", false, func(int64) int64 { return 0 }},
		{"head-to-100-bytes", false, func(int64) int64 { return 100 }},
		{"head-to-meta-pages", false, func(int64) int64 { return 2 * page }},
		{"head-to-half", false, func(n int64) int64 { return n / 2 }},
		{"oldest-to-zero", true, func(int64) int64 { return 0 }},
		{"oldest-to-half", true, func(n int64) int64 { return n / 2 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var logs lockedBuffer
			opts := OutboxOptions{Dir: dir, SegmentMessages: 3000, Logger: newLogger(&logs)}
			q := openOutboxT(t, opts)
			const n, acked = 6808, 300
			bySeq := appendN(t, q, 0, n)
			// The first 300 were delivered: acknowledged, not losses.
			var ackSeqs []uint64
			for seq, i := range bySeq {
				if i < acked {
					ackSeqs = append(ackSeqs, seq)
				}
			}
			must(t, q.Ack(ackSeqs...))

			segs, _ := segFiles(t, dir)
			if len(segs) != 3 {
				t.Fatalf("segments: %v", segs)
			}
			victim := segs[len(segs)-1]
			if tc.oldest {
				victim = segs[0]
			}
			path := filepath.Join(dir, victim)
			fi, err := os.Stat(path)
			must(t, err)
			must(t, os.Truncate(path, tc.size(fi.Size())))

			// Publish more: no crash, the appends are accepted.
			for i := n; i < n+50; i++ {
				last := appendT(t, q, OutboxRecord{Data: payload(i)})
				bySeq[last] = i
			}
			got := readAll(t, q, 0)
			st := q.Stats()
			t.Logf("truncated %s from %d bytes: %+v", victim, fi.Size(), st.Drops)
			if st.CorruptSegments != 1 {
				t.Fatalf("corrupt segments %d, want 1; logs:\n%s", st.CorruptSegments, logs.String())
			}
			// Every read entry is one that was appended, intact, in order.
			for j, e := range got {
				i, ok := bySeq[e.Seq]
				if !ok || !bytes.Equal(e.Data, payload(i)) {
					t.Fatalf("entry %d (seq %d) is not what was appended", j, e.Seq)
				}
				if i < acked {
					t.Fatalf("acknowledged message %d came back", i)
				}
				if j > 0 && e.Seq <= got[j-1].Seq {
					t.Fatalf("out of order at %d", j)
				}
			}
			// Recovered + lost = stored: nothing silently gone.
			stored := uint64(n - acked)
			readOld := uint64(len(got) - 50)
			if l := lost(st.Drops); l+readOld != stored || l == 0 {
				t.Fatalf("stored %d, read back %d, counted lost %d (%+v)", stored, readOld, l, st.Drops)
			}
			if st.Drops.Truncated != lost(st.Drops) {
				t.Fatalf("a truncation counted as other causes: %+v", st.Drops)
			}
			victimLive := uint64(n - 6000) // the head
			if tc.oldest {
				victimLive = 3000 - acked
			}
			if st.Salvaged+st.Drops.Truncated != victimLive {
				t.Fatalf("damaged segment held %d: salvaged %d, lost %d", victimLive, st.Salvaged, st.Drops.Truncated)
			}
			log := logs.String()
			for _, want := range []string{"level=ERROR", "damage=shrunk", fmt.Sprintf("lost_truncated=%d", st.Drops.Truncated), "moved_to="} {
				if !strings.Contains(log, want) {
					t.Fatalf("log lacks %q:\n%s", want, log)
				}
			}
			if _, aside := segFiles(t, dir); len(aside) != 1 || !strings.HasPrefix(aside[0], victim+".corrupt-") {
				t.Fatalf("moved aside: %v", aside)
			}

			// A restart finds a consistent outbox: nothing more lost.
			must(t, q.Close())
			q2 := openOutboxT(t, opts)
			st2 := q2.Stats()
			if st2.CorruptSegments != 0 || st2.Drops.Total() != 0 || st2.Depth != int64(len(got)) {
				t.Fatalf("after restart: %+v (read %d before)", st2, len(got))
			}
		})
	}
}

// TestOutboxTruncatedWhileDown truncates a segment while the outbox is
// closed (or its process died before touching the file again): the salvage
// at the next open counts every message the ledger says was stored and that
// it cannot recover, by cause (it counted nothing before).
func TestOutboxTruncatedWhileDown(t *testing.T) {
	for _, size := range []int64{0, 100, 3 * int64(os.Getpagesize())} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			dir := t.TempDir()
			opts := OutboxOptions{Dir: dir, SegmentMessages: 3000}
			q := openOutboxT(t, opts)
			const n = 6808
			appendN(t, q, 0, n)
			must(t, q.Close())
			segs, _ := segFiles(t, dir)
			must(t, os.Truncate(filepath.Join(dir, segs[len(segs)-1]), size))

			var logs lockedBuffer
			opts.Logger = newLogger(&logs)
			q2 := openOutboxT(t, opts)
			st := q2.Stats()
			got := readAll(t, q2, 0)
			t.Logf("read %d, %+v", len(got), st.Drops)
			if l := lost(st.Drops); l == 0 || l+uint64(len(got)) != n || st.Drops.Truncated != l {
				t.Fatalf("appended %d, read %d, lost %+v", n, len(got), st.Drops)
			}
			if !strings.Contains(logs.String(), fmt.Sprintf("lost_truncated=%d", st.Drops.Truncated)) {
				t.Fatalf("log:\n%s", logs.String())
			}
		})
	}
}

// TestOutboxMissingSegmentCounted: a segment file deleted while the outbox
// was down is counted lost from the ledger.
func TestOutboxMissingSegmentCounted(t *testing.T) {
	dir := t.TempDir()
	opts := OutboxOptions{Dir: dir, SegmentMessages: 100}
	q := openOutboxT(t, opts)
	appendN(t, q, 0, 300)
	must(t, q.Close())
	segs, _ := segFiles(t, dir)
	must(t, os.Remove(filepath.Join(dir, segs[1])))
	q2 := openOutboxT(t, opts)
	st := q2.Stats()
	if st.Drops.Truncated != 100 || st.Depth != 200 || st.CorruptSegments != 1 {
		t.Fatalf("stats: %+v", st)
	}
	if got := readAll(t, q2, 0); len(got) != 200 {
		t.Fatalf("read %d", len(got))
	}
}

// flipAt XORs the byte at off of the file with x.
func flipAt(t *testing.T, path string, off int64, x byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	b := make([]byte, 1)
	_, err = f.ReadAt(b, off)
	must(t, err)
	b[0] ^= x
	_, err = f.WriteAt(b, off)
	must(t, err)
}

// recordOffset returns the offset of the key of the record whose data is
// data in a segment file (bbolt keeps a leaf's key right before its value).
func recordOffset(t *testing.T, path string, seq uint64, data []byte) int64 {
	t.Helper()
	raw, err := os.ReadFile(path)
	must(t, err)
	i := bytes.Index(raw, data)
	if i < recHeaderSize+8 {
		t.Fatal("record not found in the file")
	}
	k := i - recHeaderSize - 8
	if be.Uint64(raw[k:]) != seq {
		t.Fatalf("key before the value is %x, not %d", raw[k:k+8], seq)
	}
	return int64(k)
}

// TestOutboxFlippedKey damages one byte of a stored record, its key or its
// value, while the outbox is down or while it runs, with a time to live on
// every message and the clock past it for half of the runs: a damaged key is
// counted corrupt (it was counted expired), a damaged value checksum, the
// others are read back or counted expired, and nothing is left uncounted.
func TestOutboxFlippedKey(t *testing.T) {
	type flip struct {
		name string
		at   int // offset from the key: 0..7 key bytes, 8+ value
		x    byte
		want string
	}
	flips := []flip{
		{"key-low-byte", 7, 0xFF, "corrupt"},
		{"key-low-bit-to-neighbour", 7, 0x03, "corrupt"}, // seq 2 becomes 1: a duplicate key
		{"key-high-byte", 0, 0x80, "corrupt"},
		{"value-byte", 8 + recHeaderSize + 3, 0x01, "checksum"},
		{"checksum-byte", 8, 0x01, "checksum"},
	}
	for _, f := range flips {
		for _, running := range []bool{false, true} {
			for _, expire := range []bool{false, true} {
				name := fmt.Sprintf("%s/running=%v/expired=%v", f.name, running, expire)
				t.Run(name, func(t *testing.T) {
					clock := newFakeClock()
					dir := t.TempDir()
					opts := OutboxOptions{Dir: dir, TTL: time.Hour, Now: clock.Now}
					q := openOutboxT(t, opts)
					victim := []byte("victim-payload-xyz")
					appendT(t, q, OutboxRecord{Data: []byte("first message")}, OutboxRecord{Data: victim}, OutboxRecord{Data: []byte("third message")})
					segs, _ := segFiles(t, dir)
					path := filepath.Join(dir, segs[0])
					if !running {
						must(t, q.Close())
					}
					off := recordOffset(t, path, 2, victim)
					flipAt(t, path, off+int64(f.at), f.x)
					if !running {
						q = openOutboxT(t, opts)
					}
					if expire {
						clock.Advance(2 * time.Hour)
						q.sweepExpired()
					}
					got := readAll(t, q, 0)
					st := q.Stats()
					d := st.Drops
					t.Logf("read %q, drops %+v", datas(got), d)
					want := uint64(1)
					if got := map[string]uint64{"corrupt": d.Corrupt, "checksum": d.Checksum}[f.want]; got != want {
						t.Fatalf("%s = %d, want 1: %+v", f.want, got, d)
					}
					others := uint64(2)
					if expire {
						if d.Expired != others || len(got) != 0 {
							t.Fatalf("expired %d (want 2), read %d", d.Expired, len(got))
						}
					} else if d.Expired != 0 || strings.Join(datas(got), ",") != "first message,third message" {
						t.Fatalf("expired %d, read %q", d.Expired, datas(got))
					}
					if lost(d)+uint64(len(got)) != 3 || st.Depth != int64(len(got)) {
						t.Fatalf("3 stored, %d read, lost %+v, depth %d", len(got), d, st.Depth)
					}
				})
			}
		}
	}
}

// TestKeyDamaged: one changed key byte is told from a changed value or
// checksum byte, for values from empty to 1 MiB.
func TestKeyDamaged(t *testing.T) {
	for _, size := range []int{0, 1, 5, 100, 4096, 1 << 20} {
		key := make([]byte, 8)
		be.PutUint64(key, 123456)
		v := make([]byte, recHeaderSize+size)
		for i := range v {
			v[i] = byte(i * 7)
		}
		be.PutUint32(v, recordCRC(key, v))
		if keyDamaged(key, v) {
			t.Fatalf("size %d: an intact record is damaged", size)
		}
		for p := range 8 {
			for _, x := range []byte{0x01, 0x80, 0xFF, 0x5A} {
				k2 := bytes.Clone(key)
				k2[p] ^= x
				if !keyDamaged(k2, v) {
					t.Fatalf("size %d: key byte %d ^ %#x not detected", size, p, x)
				}
			}
		}
		k2 := bytes.Clone(key)
		k2[7] ^= 0xFF
		k2[3] ^= 0x10
		if keyDamaged(k2, v) {
			t.Fatalf("size %d: two changed key bytes taken for one", size)
		}
		for _, at := range []int{0, 5, recHeaderSize, len(v) - 1} {
			if at >= len(v) {
				continue
			}
			v2 := bytes.Clone(v)
			v2[at] ^= 1
			if keyDamaged(key, v2) {
				t.Fatalf("size %d: value byte %d taken for a key byte", size, at)
			}
		}
	}
}

const outboxFaultEnv = "FIELDGATE_OUTBOX_FAULT_HELPER"

// TestOutboxFaultHelperProcess is not a test: TestOutboxFaultRecovered runs
// the test binary again with outboxFaultEnv set to a directory and a mode.
// "fault": it switches off the size check (the first line of defence), so
// that the truncated file is really touched through the mmap, and reads and
// appends: the SIGBUS must come back as an error and a salvage, not kill the
// process. "crash": it truncates the head after the ledger is written and
// exits without closing (a crash before the outbox touched the file again).
func TestOutboxFaultHelperProcess(t *testing.T) {
	env := os.Getenv(outboxFaultEnv)
	if env == "" {
		t.Skip("helper process for TestOutboxFaultRecovered")
	}
	mode, dir, _ := strings.Cut(env, ":")
	fail := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, format+"\n", a...)
		os.Exit(2)
	}
	q, err := OpenOutbox(OutboxOptions{Dir: dir, SegmentMessages: 3000})
	if err != nil {
		fail("open: %v", err)
	}
	const n = 6808
	for i := 0; i < n; i += 100 {
		rs := make([]OutboxRecord, min(100, n-i))
		for j := range rs {
			rs[j].Data = payload(i + j)
		}
		if _, err := q.Append(context.Background(), rs...); err != nil {
			fail("append: %v", err)
		}
	}
	head := func() *segment {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.segs[len(q.segs)-1]
	}
	switch mode {
	case "crash":
		written := testwait.Until(10*time.Second, func() bool {
			b, err := os.ReadFile(filepath.Join(dir, ledgerName))
			es, derr := decodeLedger(b)
			return err == nil && derr == nil && len(es) == 3 && es[head().first].live == n-6000
		})
		if !written {
			fail("ledger not written")
		}
		if err := os.Truncate(head().path, 0); err != nil {
			fail("truncate: %v", err)
		}
		fmt.Println("crashed")
		os.Exit(0) // no Close: as if killed
	case "fault":
		for round := range 2 {
			s := head()
			s.size.Store(0) // the stat check passes: the mmap is touched
			if err := os.Truncate(s.path, 0); err != nil {
				fail("truncate: %v", err)
			}
			if round == 0 {
				// The reader faults first (in Read's goroutine).
				if _, err := q.Read(0, 10_000, nil); err != nil {
					fail("read after the fault: %v", err)
				}
			} else {
				// The writer faults first (in the commit).
				if _, err := q.Append(context.Background(), OutboxRecord{Data: []byte("after")}); err != nil {
					fail("append after the fault: %v", err)
				}
			}
			if _, err := q.Append(context.Background(), OutboxRecord{Data: []byte("more")}); err != nil {
				fail("append: %v", err)
			}
		}
		st := q.Stats()
		got, err := q.Read(0, 100_000, nil)
		if err != nil {
			fail("read: %v", err)
		}
		if err := q.Close(); err != nil {
			fail("close: %v", err)
		}
		fmt.Printf("survived truncated=%d corrupt=%d segments=%d read=%d\n", st.Drops.Truncated, st.Drops.Corrupt, st.CorruptSegments, len(got))
		os.Exit(0)
	}
	fail("unknown mode %q", mode)
}

// TestOutboxFaultRecovered runs the helper above in a child process, so
// that a regression shows as a failed child (SIGBUS) and not as a dead test
// binary: the fault on the truncated mmap is recovered in the reading and in
// the writing goroutine, and the losses are counted. Then a child that
// "crashes" right after a truncation: the next open counts the losses from
// the ledger.
func TestOutboxFaultRecovered(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess test")
	}
	run := func(mode, dir string) string {
		cmd := exec.Command(os.Args[0], "-test.run=^TestOutboxFaultHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), outboxFaultEnv+"="+mode+":"+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("%s child: %v\nstdout:\n%s\nstderr:\n%s", mode, err, out, stderr.String())
		}
		must(t, err)
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "survived") || line == "crashed" {
				return line
			}
		}
		t.Fatalf("%s child said nothing:\n%s\n%s", mode, out, stderr.String())
		return ""
	}

	t.Run("fault", func(t *testing.T) {
		line := run("fault", t.TempDir())
		var tr, co, segs, read int
		if _, err := fmt.Sscanf(line, "survived truncated=%d corrupt=%d segments=%d read=%d", &tr, &co, &segs, &read); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		t.Log(line)
		// Round 0 loses the head's 808, round 1 the new head's message;
		// "after" and the last "more" are read.
		if segs != 2 || tr != 808+1 || co != 0 || read != 6000+2 {
			t.Fatalf("%s", line)
		}
	})
	t.Run("crash-then-open", func(t *testing.T) {
		dir := t.TempDir()
		run("crash", dir)
		var logs lockedBuffer
		q := openOutboxT(t, OutboxOptions{Dir: dir, SegmentMessages: 3000, Logger: newLogger(&logs)})
		st := q.Stats()
		if st.Drops.Truncated != 808 || st.Depth != 6000 {
			t.Fatalf("after the crash: %+v\n%s", st, logs.String())
		}
		if !strings.Contains(logs.String(), "lost_truncated=808") {
			t.Fatalf("log:\n%s", logs.String())
		}
	})
}
