package serial

import (
	"bytes"
	"unicode/utf8"
)

// lineSplitter cuts a byte stream into lines ending in a terminator. It
// keeps at most max+len(term)-1 bytes plus one read's worth: a line longer
// than max is dropped (reported once, when it passes max) and everything up
// to its terminator is skipped. It is not safe for concurrent use.
type lineSplitter struct {
	term []byte
	max  int
	buf  []byte
	// skipping is set while the rest of an over-long line is thrown away.
	skipping bool
}

// newLineSplitter returns a splitter for lines of at most max bytes
// (without term). term must not be empty.
func newLineSplitter(term []byte, max int) *lineSplitter {
	return &lineSplitter{term: term, max: max}
}

// feed appends p and calls line for every complete line (without its
// terminator; the slice is valid only during the call) and overlong for
// every line that exceeded max.
func (s *lineSplitter) feed(p []byte, line func([]byte), overlong func()) {
	// Start the search where the previous feed stopped, minus what could
	// be the beginning of a terminator cut in two.
	from := max(len(s.buf)-len(s.term)+1, 0)
	s.buf = append(s.buf, p...)
	start := 0
	for {
		i := bytes.Index(s.buf[from:], s.term)
		if i < 0 {
			break
		}
		end := from + i
		switch {
		case s.skipping:
			s.skipping = false
		case end-start > s.max:
			overlong()
		default:
			line(s.buf[start:end])
		}
		start = end + len(s.term)
		from = start
	}
	rest := s.buf[start:]
	if len(rest)-(len(s.term)-1) > s.max {
		// No terminator can end this line within max: drop what we have
		// but the bytes that may begin a terminator.
		if !s.skipping {
			s.skipping = true
			overlong()
		}
		rest = rest[len(rest)-(len(s.term)-1):]
	}
	s.buf = append(s.buf[:0], rest...)
}

// trimLine removes carriage returns and line feeds around a line, whatever
// the terminator was.
func trimLine(b []byte) []byte {
	return bytes.Trim(b, "\r\n")
}

// garbage reports whether a line is not text: invalid UTF-8, or a control
// character other than tab (NUL, bell, escape, DEL ...).
func garbage(b []byte) bool {
	if !utf8.Valid(b) {
		return true
	}
	for _, c := range b {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return true
		}
	}
	return false
}
