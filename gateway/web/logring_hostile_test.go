package web

import (
	"bytes"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestHostileLogRingBounded is issue 17 item 2: 2,000 log lines each
// carrying a 1 MB attribute (what a malformed 1 MB publish put in the
// engine's log line) took the ring to hundreds of MiB, held after GC. Now
// every value is clipped and copied, and the ring keeps a few MiB at most.
func TestHostileLogRingBounded(t *testing.T) {
	ring := NewLogRing(2000)
	log := slog.New(ring.Handler(nil)).With("part", "broker")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	big := bytes.Repeat([]byte{'x'}, 1<<20)
	for i := range 2000 {
		big[0] = byte('a' + i%26)
		pk := string(big) // a fresh 1 MB string per line, as a decoded packet is
		log.Warn("error processing packet", "client", "anon-"+strconv.Itoa(i), "pk", pk,
			"payload", big, slog.Group("conn", "remote", pk))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	entries := ring.Logs(slog.LevelDebug, "", 10000)
	t.Logf("2000 lines with 1 MiB attributes: heap grew %.2f MiB, ring %d entries, %.2f MiB estimated",
		float64(grew)/(1<<20), len(entries), float64(ring.Bytes())/(1<<20))
	if grew > 6<<20 {
		t.Errorf("heap grew by %.1f MiB holding the ring, want < 6 MiB", float64(grew)/(1<<20))
	}
	if ring.Bytes() > logRingMaxBytes {
		t.Errorf("ring holds %d bytes, bound %d", ring.Bytes(), logRingMaxBytes)
	}
	if len(entries) < 1000 {
		t.Errorf("only %d entries kept", len(entries))
	}
	last := entries[len(entries)-1]
	for _, key := range []string{"pk", "payload", "conn.remote"} {
		v, _ := last.Attrs[key].(string)
		if len(v) > logValueMax+32 || !strings.HasSuffix(v, "…(1048576 bytes)") {
			t.Errorf("%s kept as %d bytes: %.80q…", key, len(v), v)
		}
	}
	if last.Part != "broker" || last.Attrs["client"] != "anon-1999" {
		t.Errorf("last entry %+v", last)
	}
	runtime.KeepAlive(ring)
}

// TestHostileLogRingClips checks every bound of an entry.
func TestHostileLogRingClips(t *testing.T) {
	many := make([]any, 0, 400)
	for i := range 200 {
		many = append(many, "k"+strconv.Itoa(i), strings.Repeat("v", 200))
	}
	tests := []struct {
		name  string
		msg   string
		attrs []any
		check func(t *testing.T, e LogEntry)
	}{
		{"long message", strings.Repeat("m", 1<<20), nil, func(t *testing.T, e LogEntry) {
			if len(e.Message) > logMessageMax+32 || !strings.HasSuffix(e.Message, "(1048576 bytes)") {
				t.Errorf("message kept as %d bytes", len(e.Message))
			}
		}},
		{"long key", "m", []any{strings.Repeat("k", 10000), "v"}, func(t *testing.T, e LogEntry) {
			for k := range e.Attrs {
				if len(k) > logKeyMax+32 {
					t.Errorf("key kept as %d bytes", len(k))
				}
			}
		}},
		{"multi-byte cut", "m", []any{"v", strings.Repeat("é", 1000)}, func(t *testing.T, e LogEntry) {
			v := e.Attrs["v"].(string)
			if !utf8.ValidString(v) || !strings.HasSuffix(v, "…(2000 bytes)") {
				t.Errorf("cut value %q", v)
			}
		}},
		{"many attributes", "m", many, func(t *testing.T, e LogEntry) {
			size := len(e.Message)
			for k, v := range e.Attrs {
				size += len(k) + len(v.(string))
			}
			if len(e.Attrs) > logAttrsMax+1 || size > logEntryMax {
				t.Errorf("%d attributes, %d bytes kept", len(e.Attrs), size)
			}
			if n, _ := strconv.Atoi(e.Attrs["attrs_dropped"].(string)); n < 200-logAttrsMax {
				t.Errorf("dropped counted %v", e.Attrs["attrs_dropped"])
			}
		}},
		{"bytes", "m", []any{"payload", bytes.Repeat([]byte{0xff}, 5000)}, func(t *testing.T, e LogEntry) {
			v := e.Attrs["payload"].(string)
			if len(v) > logValueMax+32 || !strings.HasSuffix(v, "…(5000 bytes)") {
				t.Errorf("payload kept as %q", v)
			}
		}},
		{"nested groups", "m", []any{slog.Group("a", slog.Group("b", "c", strings.Repeat("z", 999)))}, func(t *testing.T, e LogEntry) {
			if v, _ := e.Attrs["a.b.c"].(string); !strings.HasSuffix(v, "…(999 bytes)") {
				t.Errorf("group kept as %v", e.Attrs)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ring := NewLogRing(10)
			slog.New(ring.Handler(nil)).Info(tc.msg, tc.attrs...)
			es := ring.Logs(slog.LevelDebug, "", 10)
			if len(es) != 1 {
				t.Fatalf("%d entries", len(es))
			}
			tc.check(t, es[0])
		})
	}
}

// TestHostileLogRingOrder checks that byte-bounded eviction keeps order.
func TestHostileLogRingOrder(t *testing.T) {
	ring := NewLogRing(5)
	log := slog.New(ring.Handler(nil))
	for i := range 12 {
		log.Info("line", "n", i)
	}
	es := ring.Logs(slog.LevelDebug, "", 100)
	var got []string
	for _, e := range es {
		got = append(got, e.Attrs["n"].(string))
	}
	if strings.Join(got, ",") != "7,8,9,10,11" {
		t.Fatalf("kept %v", got)
	}
	if es := ring.Logs(slog.LevelDebug, "", 2); len(es) != 2 || es[1].Attrs["n"] != "11" {
		t.Fatalf("limit: %v", es)
	}
}

// FuzzLogRingClip feeds arbitrary strings, as a peer can put them in a log
// attribute, to the ring's clipping: the result is bounded, a prefix of the
// input (plus the marker), and valid UTF-8 when the input was.
func FuzzLogRingClip(f *testing.F) {
	f.Add("short", 256)
	f.Add(strings.Repeat("é", 300), 256)
	f.Add("\xff\xfe\xfd"+strings.Repeat("x", 300), 1)
	f.Add("", 0)
	f.Fuzz(func(t *testing.T, s string, n int) {
		n = max(0, n%2048)
		got := clip(s, n)
		if len(s) <= n {
			if got != s {
				t.Fatalf("clip(%q, %d) = %q", s, n, got)
			}
			return
		}
		i := strings.LastIndex(got, "…(")
		if i < 0 || !strings.HasPrefix(s, got[:i]) || i > n || got[i:] != "…("+strconv.Itoa(len(s))+" bytes)" {
			t.Fatalf("clip(%q, %d) = %q", s, n, got)
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("clip cut a rune: %q", got)
		}
		ring := NewLogRing(2)
		slog.New(ring.Handler(nil)).Info(s, s, s, "b", []byte(s))
		if ring.Bytes() > logEntryMax+logEntryOverhead+logMessageMax {
			t.Fatalf("one entry costs %d bytes", ring.Bytes())
		}
	})
}
