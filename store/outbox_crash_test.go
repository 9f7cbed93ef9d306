package store

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const outboxHelperEnv = "FIELDGATE_OUTBOX_CRASH_HELPER"

// TestOutboxHelperProcess is not a test: TestOutboxCrashKill runs the test
// binary again with outboxHelperEnv set to a directory, and this appends from
// 8 goroutines and acknowledges from a reader until it is killed, printing
// "a <last> <n>" after each Append returned (seqs last-n+1..last are durable)
// and "k <seq>" before each Ack.
func TestOutboxHelperProcess(t *testing.T) {
	dir := os.Getenv(outboxHelperEnv)
	if dir == "" {
		t.Skip("helper process for TestOutboxCrashKill")
	}
	q, err := OpenOutbox(OutboxOptions{Dir: dir, SegmentMessages: 2000})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var out sync.Mutex
	say := func(format string, a ...any) {
		out.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", a...)
		out.Unlock()
	}
	for g := range 8 {
		go func() {
			for i := 0; ; i++ {
				n := 1 + (i+g)%5
				rs := make([]OutboxRecord, n)
				for j := range rs {
					rs[j].Data = bytes.Repeat([]byte{byte('a' + g)}, 100+j)
				}
				last, err := q.Append(context.Background(), rs...)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				say("a %d %d", last, n)
			}
		}()
	}
	// The reader acknowledges even numbers at once and odd ones 3,000
	// numbers later, so that deletes are written and segments removed while
	// the appends go on, and some entries are always unacknowledged.
	var (
		after uint64
		odd   []uint64
	)
	for {
		if err := q.Wait(context.Background(), after); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		got, err := q.Read(after, 100, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		for _, e := range got {
			if e.Seq%2 == 0 {
				say("k %d", e.Seq)
				_ = q.Ack(e.Seq)
			} else {
				odd = append(odd, e.Seq)
			}
		}
		if len(got) > 0 {
			after = got[len(got)-1].Seq
		}
		for len(odd) > 0 && odd[0]+3000 < after {
			say("k %d", odd[0])
			_ = q.Ack(odd[0])
			odd = odd[1:]
		}
	}
}

// TestOutboxCrashKill SIGKILLs a process in the middle of appending and
// acknowledging, several times on the same directory, and checks after each
// kill that the outbox opens cleanly, that every append reported durable and
// not acknowledged is there with its data, and that sequence numbers keep
// growing.
func TestOutboxCrashKill(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess test")
	}
	dir := t.TempDir()
	durable := map[uint64]bool{} // reported appended
	acked := map[uint64]bool{}   // reported acknowledged: may be gone
	var highest uint64
	for round := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestOutboxHelperProcess$")
		cmd.Env = append(os.Environ(), outboxHelperEnv+"="+dir)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		must(t, err)
		must(t, cmd.Start())

		lines := 0
		target := 3000 + round*2000 + rand.IntN(1000)
		sc := bufio.NewScanner(out)
		deadline := time.Now().Add(30 * time.Second)
		parse := func(line string) {
			var a, b uint64
			if n, _ := fmt.Sscanf(line, "a %d %d", &a, &b); n == 2 {
				for s := a - b + 1; s <= a; s++ {
					durable[s] = true
				}
				highest = max(highest, a)
				lines++
			} else if n, _ := fmt.Sscanf(line, "k %d", &a); n == 1 {
				acked[a] = true // "k" can come before the "a" of the same seq
			}
		}
		for sc.Scan() {
			parse(sc.Text())
			if lines >= target || time.Now().After(deadline) {
				break
			}
		}
		must(t, cmd.Process.Signal(syscall.SIGKILL))
		for sc.Scan() { // lines written before the kill count too
			parse(sc.Text())
		}
		_ = cmd.Wait()
		if lines == 0 {
			t.Fatalf("round %d: helper reported nothing", round)
		}

		q, err := OpenOutbox(OutboxOptions{Dir: dir, SegmentMessages: 2000})
		if err != nil {
			t.Fatalf("round %d: reopen after kill -9: %v", round, err)
		}
		present := map[uint64]bool{}
		var after uint64
		for {
			got, err := q.Read(after, 1000, nil)
			must(t, err)
			if len(got) == 0 {
				break
			}
			for _, e := range got {
				present[e.Seq] = true
				if len(e.Data) < 100 || e.Data[0] < 'a' || e.Data[0] > 'h' || bytes.Count(e.Data, e.Data[:1]) != len(e.Data) {
					t.Fatalf("round %d: seq %d has wrong data %q", round, e.Seq, e.Data)
				}
			}
			after = got[len(got)-1].Seq
		}
		for s := range durable {
			if !present[s] && !acked[s] {
				t.Fatalf("round %d: seq %d was reported durable and not acknowledged, but is missing", round, s)
			}
		}
		st := q.Stats()
		if st.CorruptSegments != 0 || st.Drops.Total() != 0 {
			t.Fatalf("round %d: a kill -9 must not corrupt anything: %+v", round, st)
		}
		next, err := q.Append(context.Background(), OutboxRecord{Data: bytes.Repeat([]byte("a"), 100)})
		must(t, err)
		if next <= highest {
			t.Fatalf("round %d: sequence %d reused (highest before the kill %d)", round, next, highest)
		}
		highest = next
		durable[next] = true
		must(t, q.Close())
		segs, _ := segFiles(t, dir)
		t.Logf("round %d: %d appends reported, %d durable, %d acknowledged, %d present, %d segments",
			round, lines, len(durable), len(acked), len(present), len(segs))
	}
}

// damage describes one way to break a segment file.
type damage struct {
	name string
	do   func(t *testing.T, path string)
}

var damages = []damage{
	{"truncated-half", func(t *testing.T, path string) {
		fi, err := os.Stat(path)
		must(t, err)
		must(t, os.Truncate(path, fi.Size()/2))
	}},
	{"truncated-tiny", func(t *testing.T, path string) { must(t, os.Truncate(path, 100)) }},
	{"zeroed-meta-pages", func(t *testing.T, path string) { overwrite(t, path, 0, make([]byte, 2*os.Getpagesize())) }},
	{"garbage-in-the-middle", func(t *testing.T, path string) {
		fi, err := os.Stat(path)
		must(t, err)
		junk := make([]byte, 3*os.Getpagesize())
		r := rand.New(rand.NewPCG(1, 2))
		for i := range junk {
			junk[i] = byte(r.UintN(256))
		}
		overwrite(t, path, fi.Size()/3, junk)
	}},
	{"all-garbage", func(t *testing.T, path string) {
		must(t, os.WriteFile(path, bytes.Repeat([]byte("not a bbolt file "), 4000), 0o600))
	}},
}

func overwrite(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteAt(b, off)
	must(t, err)
	must(t, f.Close())
}

// TestOutboxDamagedSegments breaks the oldest of three segments in several
// ways and checks that the outbox opens, reports it, keeps the other segments
// and whatever of the broken one is readable, moves the file aside, and never
// reuses a sequence number.
func TestOutboxDamagedSegments(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			dir := t.TempDir()
			q := openOutboxT(t, OutboxOptions{Dir: dir, SegmentMessages: 300})
			var last uint64
			for range 9 {
				last = appendT(t, q, recs("m", 100)...)
			}
			must(t, q.Close())
			segs, _ := segFiles(t, dir)
			if len(segs) != 3 {
				t.Fatalf("segments: %v", segs)
			}
			d.do(t, filepath.Join(dir, segs[0]))

			var logs lockedBuffer
			q2 := openOutboxT(t, OutboxOptions{Dir: dir, SegmentMessages: 300, Logger: newLogger(&logs)})
			st := q2.Stats()
			if st.CorruptSegments != 1 {
				t.Fatalf("corrupt segments %d, want 1; logs:\n%s", st.CorruptSegments, logs.String())
			}
			if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "moved_to=") {
				t.Fatalf("no clear error log:\n%s", logs.String())
			}
			_, aside := segFiles(t, dir)
			if len(aside) != 1 || !strings.HasPrefix(aside[0], segs[0]+".corrupt-") {
				t.Fatalf("moved aside: %v", aside)
			}
			got := readAll(t, q2, 0)
			// The two intact segments are all there, in order.
			if len(got) < 600 || got[len(got)-1].Seq != last {
				t.Fatalf("read %d entries ending at %d, want at least 600 ending at %d", len(got), got[len(got)-1].Seq, last)
			}
			for i := 1; i < len(got); i++ {
				if got[i].Seq <= got[i-1].Seq {
					t.Fatalf("out of order at %d", i)
				}
			}
			t.Logf("salvaged %d of 300 from the damaged segment; stats %+v", st.Salvaged, st)
			if int(st.Salvaged) != len(got)-600 {
				t.Fatalf("salvaged %d but read %d beyond the 600 intact", st.Salvaged, len(got)-600)
			}
			next := appendT(t, q2, recs("n", 1)...)
			if next <= last {
				t.Fatalf("sequence %d reused", next)
			}
			// A second restart does not report the corruption again and
			// keeps the numbering.
			must(t, q2.Close())
			q3 := openOutboxT(t, OutboxOptions{Dir: dir, SegmentMessages: 300})
			if st := q3.Stats(); st.CorruptSegments != 0 || st.Depth != int64(len(got)+1) {
				t.Fatalf("second restart: %+v", st)
			}
			if n := appendT(t, q3, recs("o", 1)...); n <= next {
				t.Fatalf("sequence %d after second restart, not above %d", n, next)
			}
		})
	}
}

// lockedBuffer collects logs written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLogger(w *lockedBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// TestOutboxCorruptRecord flips a byte of one stored message in place (bbolt
// itself does not notice): Read drops it, counts it as a checksum failure
// (its key is intact), and returns the others.
func TestOutboxCorruptRecord(t *testing.T) {
	dir := t.TempDir()
	q := openOutboxT(t, OutboxOptions{Dir: dir})
	appendT(t, q, OutboxRecord{Data: []byte("first message")}, OutboxRecord{Data: []byte("victim-payload-xyz")}, OutboxRecord{Data: []byte("third message")})
	must(t, q.Close())
	segs, _ := segFiles(t, dir)
	path := filepath.Join(dir, segs[0])
	raw, err := os.ReadFile(path)
	must(t, err)
	i := bytes.Index(raw, []byte("victim-payload-xyz"))
	if i < 0 {
		t.Fatal("payload not found in the file")
	}
	overwrite(t, path, int64(i), []byte("V"))

	q2 := openOutboxT(t, OutboxOptions{Dir: dir})
	got := readAll(t, q2, 0)
	if want := "first message,third message"; strings.Join(datas(got), ",") != want {
		t.Fatalf("got %q", datas(got))
	}
	if st := q2.Stats(); st.Drops.Checksum != 1 || st.Drops.Corrupt != 0 || st.Depth != 2 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestOutboxEmptySegmentFile: a zero-length segment (killed while creating
// it) is removed with a warning, not reported as corruption.
func TestOutboxEmptySegmentFile(t *testing.T) {
	dir := t.TempDir()
	q := openOutboxT(t, OutboxOptions{Dir: dir})
	last := appendT(t, q, recs("a", 3)...)
	must(t, q.Close())
	must(t, os.WriteFile(filepath.Join(dir, segName(last+1)), nil, 0o600))
	q2 := openOutboxT(t, OutboxOptions{Dir: dir})
	if st := q2.Stats(); st.CorruptSegments != 0 || st.Depth != 3 || st.Segments != 1 {
		t.Fatalf("stats: %+v", st)
	}
}
