package serial

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// split feeds the chunks to a fresh splitter and returns the lines and the
// number of over-long lines.
func split(term string, max int, chunks ...string) (lines []string, overlong int) {
	s := newLineSplitter([]byte(term), max)
	for _, c := range chunks {
		s.feed([]byte(c),
			func(b []byte) { lines = append(lines, string(b)) },
			func() { overlong++ })
	}
	return lines, overlong
}

func TestLineSplitter(t *testing.T) {
	tests := []struct {
		name     string
		term     string
		max      int
		chunks   []string
		want     []string
		overlong int
	}{
		{"simple", "\n", 10, []string{"a\nbb\n"}, []string{"a", "bb"}, 0},
		{"partial kept", "\n", 10, []string{"ab", "c\nd"}, []string{"abc"}, 0},
		{"empty lines", "\n", 10, []string{"\n\na\n"}, []string{"", "", "a"}, 0},
		{"crlf split across reads", "\r\n", 10, []string{"ab\r", "\ncd\r", "\n"}, []string{"ab", "cd"}, 0},
		{"cr inside crlf line", "\r\n", 10, []string{"a\rb\r\n"}, []string{"a\rb"}, 0},
		{"exactly max", "\n", 3, []string{"abc\n"}, []string{"abc"}, 0},
		{"one over max in one read", "\n", 3, []string{"abcd\nok\n"}, []string{"ok"}, 1},
		{"over max across reads", "\n", 3, []string{"ab", "cd", "ef", "gh\nok\n"}, []string{"ok"}, 1},
		{"long flood without terminator", "\n", 3, []string{strings.Repeat("x", 100), strings.Repeat("y", 100)}, nil, 1},
		{"two long lines", "\n", 3, []string{"aaaaa\nbbbbb\nc\n"}, []string{"c"}, 2},
		{"long line then crlf split", "\r\n", 3, []string{"abcdef\r", "\nok\r\n"}, []string{"ok"}, 1},
		{"multi-byte terminator at max", "END", 3, []string{"abcEN", "Dxyz", "END"}, []string{"abc", "xyz"}, 0},
		{"overlapping terminator", "aa", 10, []string{"xa", "aa"}, []string{"x"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines, overlong := split(tt.term, tt.max, tt.chunks...)
			if !reflect.DeepEqual(lines, tt.want) || overlong != tt.overlong {
				t.Errorf("lines %q overlong %d, want %q overlong %d", lines, overlong, tt.want, tt.overlong)
			}
			// Byte by byte gives the same result.
			one := []string{}
			for _, c := range []byte(strings.Join(tt.chunks, "")) {
				one = append(one, string(c))
			}
			lines1, overlong1 := split(tt.term, tt.max, one...)
			if !reflect.DeepEqual(lines1, lines) || overlong1 != overlong {
				t.Errorf("byte by byte: lines %q overlong %d, want %q overlong %d", lines1, overlong1, lines, overlong)
			}
		})
	}
}

func TestLineSplitterBoundedMemory(t *testing.T) {
	s := newLineSplitter([]byte("\n"), 1024)
	chunk := bytes.Repeat([]byte{0xff}, 4096)
	for range 1000 {
		s.feed(chunk, func([]byte) { t.Fatal("line from a flood without terminator") }, func() {})
		if len(s.buf) > 1024 {
			t.Fatalf("splitter keeps %d bytes", len(s.buf))
		}
	}
}

func TestGarbage(t *testing.T) {
	for _, tt := range []struct {
		line string
		want bool
	}{
		{"T=21.5\tH=40", false},
		{"température 21,5 °C", false},
		{"a\x00b", true},
		{"\x1b[2J", true},
		{"abc\x7f", true},
		{"\xff\xfe", true},
		{"a\rb", true},
	} {
		if got := garbage([]byte(tt.line)); got != tt.want {
			t.Errorf("garbage(%q) = %v, want %v", tt.line, got, tt.want)
		}
	}
	if got := string(trimLine([]byte("\n\r$GPGGA\r\r"))); got != "$GPGGA" {
		t.Errorf("trimLine = %q", got)
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`\r\n`:       "\r\n",
		"\r\n":       "\r\n",
		`READ?\r`:    "READ?\r",
		`\x02M\x03`:  "\x02M\x03",
		`say "hi"\n`: "say \"hi\"\n",
		`\\`:         `\`,
		`°C`:         "°C",
	} {
		got, err := unescape(in)
		if err != nil || got != want {
			t.Errorf("unescape(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{`\q`, `\x0`, `abc\`} {
		if got, err := unescape(in); err == nil {
			t.Errorf("unescape(%q) = %q, want an error", in, got)
		}
	}
}
