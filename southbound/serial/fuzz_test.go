package serial

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/fieldgate/fieldgate/bus"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/. Run one target with
// e.g. go test -run '^$' -fuzz '^FuzzNMEA$' -fuzztime 20s ./southbound/serial/

// checkFields fails unless every value is a finite float, an int, a bool
// or a valid UTF-8 string, so that the reading always encodes as JSON.
func checkFields(t *testing.T, line string, fields map[string]any) {
	for k, v := range fields {
		switch x := v.(type) {
		case float64:
			if math.IsNaN(x) || math.IsInf(x, 0) {
				t.Fatalf("%q: field %s = %v", line, k, x)
			}
		case int, int64, bool, string:
		default:
			t.Fatalf("%q: field %s has type %T", line, k, v)
		}
	}
	if _, err := json.Marshal(reading{V: fields}); err != nil {
		t.Fatalf("%q: encode: %v", line, err)
	}
}

func FuzzNMEA(f *testing.F) {
	p := nmeaParser{sentences: nmeaSentences}
	f.Fuzz(func(t *testing.T, line string) {
		fields, err := p.parse(line)
		if err != nil {
			if fields != nil {
				t.Fatalf("%q: fields %v with error %v", line, fields, err)
			}
			return
		}
		checkFields(t, line, fields)
		if lat, ok := fields["lat"].(float64); ok && math.Abs(lat) > 90 {
			t.Fatalf("%q: lat %v", line, lat)
		}
		if lon, ok := fields["lon"].(float64); ok && math.Abs(lon) > 180 {
			t.Fatalf("%q: lon %v", line, lon)
		}
		// An accepted sentence carries a valid checksum: flipping a bit
		// of its body must be noticed.
		if strings.LastIndexByte(line, '*') > 1 {
			b := []byte(line)
			b[1] ^= 0x01
			if _, err := p.parse(string(b)); err == nil {
				t.Fatalf("%q: accepted with a flipped bit too", b)
			}
		}
	})
}

func FuzzRegex(f *testing.F) {
	p, err := newRegexParser(`^(?P<f>[^ ]*) (?P<i>[^ ]*) (?P<b>[^ ]*) (?P<s>.*?)(?: (?P<opt>x\d+))?$`, []Field{
		{Name: "f", Type: TypeFloat, Scale: 1e200, Offset: -1},
		{Name: "i", Type: TypeInt, Scale: 0.5, Offset: 3},
		{Name: "b", Type: TypeBool},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if garbage([]byte(line)) {
			return // never reaches a parser
		}
		fields, err := p.parse(line)
		if err != nil {
			return
		}
		checkFields(t, line, fields)
		if _, ok := fields["i"].(int64); !ok {
			t.Fatalf("%q: i is %T", line, fields["i"])
		}
	})
}

func FuzzLineSplitter(f *testing.F) {
	terms := []string{"\n", "\r\n", "\r", "END", "aa"}
	f.Fuzz(func(t *testing.T, data []byte, cut uint16, termSel, max uint8) {
		term := []byte(terms[int(termSel)%len(terms)])
		limit := int(max%64) + 1
		run := func(chunks ...[]byte) (lines []string, overlong int) {
			s := newLineSplitter(term, limit)
			for _, c := range chunks {
				s.feed(c, func(l []byte) {
					if bytes.Contains(l, term) || len(l) > limit {
						t.Fatalf("line %q (term %q, max %d)", l, term, limit)
					}
					lines = append(lines, string(l))
				}, func() { overlong++ })
				if len(s.buf) > limit+len(term)-1 {
					t.Fatalf("splitter keeps %d bytes, max %d", len(s.buf), limit)
				}
			}
			return lines, overlong
		}
		lines, overlong := run(data)
		at := int(cut) % (len(data) + 1)
		lines2, overlong2 := run(data[:at], data[at:])
		if !reflect.DeepEqual(lines, lines2) || overlong != overlong2 {
			t.Fatalf("cut at %d: %q/%d, whole: %q/%d", at, lines2, overlong2, lines, overlong)
		}
		var bytewise [][]byte
		for i := range data {
			bytewise = append(bytewise, data[i:i+1])
		}
		lines3, overlong3 := run(bytewise...)
		if !reflect.DeepEqual(lines, lines3) || overlong != overlong3 {
			t.Fatalf("byte by byte: %q/%d, whole: %q/%d", lines3, overlong3, lines, overlong)
		}
	})
}

func FuzzValidate(f *testing.F) {
	f.Fuzz(func(t *testing.T, doc string) {
		cfg := DefaultConfig()
		dec := yaml.NewDecoder(strings.NewReader(doc))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			return
		}
		err := cfg.Validate()
		if err != nil {
			for _, l := range strings.Split(err.Error(), "\n") {
				path, reason, ok := strings.Cut(l, ": ")
				if !ok || path == "" || reason == "" || strings.Contains(path, " ") {
					t.Fatalf("error line %q is not \"path: reason\"", l)
				}
			}
			return
		}
		// What Validate accepts, New must build.
		if _, err := New(cfg, bus.NewMemory(nil), nil); err != nil {
			t.Fatalf("valid config refused by New: %v\n%s", err, doc)
		}
	})
}
