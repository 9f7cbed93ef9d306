package store

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// FuzzOutboxSegment writes arbitrary bytes as the only segment file and opens
// the outbox: it must open (a bad file is moved aside, what is readable
// kept), never panic, read without error, and take new appends numbered after
// everything it recovered. The seed corpus (testdata/fuzz/FuzzOutboxSegment)
// holds real segment files, damaged ones and garbage.
func FuzzOutboxSegment(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("not a bbolt file"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segName(1)), data, 0o600); err != nil {
			t.Fatal(err)
		}
		q, err := OpenOutbox(OutboxOptions{Dir: dir})
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer q.Close()
		var after uint64
		for {
			got, err := q.Read(after, 100, nil)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if len(got) == 0 {
				break
			}
			after = got[len(got)-1].Seq
		}
		seq, err := q.Append(context.Background(), OutboxRecord{Data: []byte("x")})
		if err != nil {
			t.Fatalf("append: %v", err)
		}
		if seq <= after {
			t.Fatalf("append got %d, not above recovered %d", seq, after)
		}
	})
}

// FuzzSalvageRecords feeds arbitrary bytes to the raw page scanner used on
// corrupt segments: no panic, every record it returns passes its checksum,
// no sequence number is both recovered and counted bad, and the loss
// accounting never counts more than the ledger entry said was stored.
func FuzzSalvageRecords(f *testing.F) {
	f.Add([]byte{}, uint64(1))
	f.Fuzz(func(t *testing.T, data []byte, first uint64) {
		res := salvageRecords(data, first)
		for seq := range res.bad {
			if _, ok := res.good[seq]; ok {
				t.Fatalf("seq %d both recovered and bad", seq)
			}
		}
		e := ledgerEntry{first: first, last: first + 100, lo: first, live: 50}
		if _, loss := res.account(e, true, 0, fileShrunk(data)); loss.truncated+loss.corrupt+loss.checksum > e.live {
			t.Fatalf("lost %+v of %d stored", loss, e.live)
		}
		recs, _ := res.records(0, 0)
		for i, r := range recs {
			if len(r.key) != 8 || len(r.value) < recHeaderSize || be.Uint32(r.value) != recordCRC(r.key, r.value) {
				t.Fatalf("record %d does not check", i)
			}
			if i > 0 && be.Uint64(r.key) <= be.Uint64(recs[i-1].key) {
				t.Fatalf("records out of order at %d", i)
			}
		}
	})
}

// TestWriteOutboxFuzzSeeds regenerates the seed corpus from real segment
// files when FIELDGATE_WRITE_FUZZ_SEEDS is set.
func TestWriteOutboxFuzzSeeds(t *testing.T) {
	if os.Getenv("FIELDGATE_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set FIELDGATE_WRITE_FUZZ_SEEDS=1 to regenerate testdata/fuzz seeds")
	}
	dir := t.TempDir()
	q := openOutboxT(t, OutboxOptions{Dir: dir})
	appendT(t, q, recs("seed", 20)...)
	must(t, q.Close())
	segs, _ := segFiles(t, dir)
	raw, err := os.ReadFile(filepath.Join(dir, segs[0]))
	must(t, err)
	seeds := map[string][]byte{"valid": raw}
	for _, d := range damages {
		c := filepath.Join(t.TempDir(), "seg")
		must(t, os.WriteFile(c, raw, 0o600))
		d.do(t, c)
		b, err := os.ReadFile(c)
		must(t, err)
		seeds[d.name] = b
	}
	for name, b := range seeds {
		writeSeed(t, "FuzzOutboxSegment", name, "[]byte("+quoteBytes(b)+")")
		writeSeed(t, "FuzzSalvageRecords", name, "[]byte("+quoteBytes(b)+")\nuint64(1)")
	}
	ledgers := map[string][]byte{
		"empty":        encodeLedger(nil),
		"two":          encodeLedger([]ledgerEntry{{first: 1, last: 3000, lo: 301, live: 2700}, {first: 3001, last: 3808, lo: 3001, live: 808}}),
		"bad-crc":      append(encodeLedger([]ledgerEntry{{first: 1, last: 2, lo: 1, live: 2}})[:44], 0, 0, 0, 0),
		"huge-count":   []byte(ledgerMagic + "\xff\xff\xff\xff\x00\x00\x00\x00"),
		"inconsistent": encodeLedger([]ledgerEntry{{first: 10, last: 5, lo: 1, live: 99}}),
	}
	for name, b := range ledgers {
		writeSeed(t, "FuzzDecodeLedger", name, "[]byte("+quoteBytes(b)+")")
	}
}

func writeSeed(t *testing.T, fuzz, name, body string) {
	d := filepath.Join("testdata", "fuzz", fuzz)
	must(t, os.MkdirAll(d, 0o755))
	must(t, os.WriteFile(filepath.Join(d, name), []byte("go test fuzz v1\n"+body+"\n"), 0o644))
}

func quoteBytes(b []byte) string { return strconv.Quote(string(b)) }

// FuzzDecodeLedger feeds arbitrary bytes as the outbox ledger (a file an
// attacker with write access could craft): no panic, no allocation beyond
// what the input can hold, and every entry it accepts is consistent.
func FuzzDecodeLedger(f *testing.F) {
	f.Add(encodeLedger(nil))
	f.Add(encodeLedger([]ledgerEntry{{first: 1, last: 3000, lo: 301, live: 2700}, {first: 3001, last: 3808, lo: 3001, live: 808}}))
	f.Add([]byte(ledgerMagic + "\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := decodeLedger(data)
		if err != nil {
			return
		}
		if len(es) > len(data)/32 {
			t.Fatalf("%d entries from %d bytes", len(es), len(data))
		}
		for first, e := range es {
			if e.first != first || e.last < e.first || e.lo < e.first || e.lo > e.last+1 || e.live > e.last-e.first+1 {
				t.Fatalf("inconsistent entry accepted: %+v", e)
			}
		}
	})
}
