package config

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Pos is where something is in a config file: a 1-based line and column.
// The zero Pos means "not in the file" (a field the file omits keeps its
// default and has no position).
type Pos struct {
	Line   int
	Column int
}

// Error is one problem with a config: the field at fault, given by its path
// of YAML keys ("southbound.modbus.devices[1].points[0].address"), the
// reason, and, when the config was read from a file, the file and the
// field's position in it.
//
// Its text follows nats-server's: "fieldgate.yaml:42:5: path: reason" for a
// named file, "fieldgate.yaml: path: reason" for a field the file does not
// set, and "path: reason (line 42, column 5)" for a config parsed without a
// name (an upload). A config that never was YAML (the admin API's JSON, a
// config built in code) gets no position: "path: reason".
type Error struct {
	// File names the config file; empty when the config has no name.
	File string
	// Pos is the position of the field, or of the nearest enclosing key
	// the file has; zero when none is known.
	Pos Pos
	// Path is the dotted path of the field; empty for the file as a whole.
	Path string
	// Err is the reason, without the path.
	Err error
}

// Error formats the problem on one line.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Pos.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Pos.Line)
			if e.Pos.Column > 0 {
				fmt.Fprintf(&b, ":%d", e.Pos.Column)
			}
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	if e.File == "" && e.Pos.Line > 0 {
		fmt.Fprintf(&b, " (line %d", e.Pos.Line)
		if e.Pos.Column > 0 {
			fmt.Fprintf(&b, ", column %d", e.Pos.Column)
		}
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the reason, so that errors.Is sees through an Error (e.g.
// to os.ErrNotExist for a missing certificate).
func (e *Error) Unwrap() error { return e.Err }

// reason is the text of an error after its "path: " prefix, still wrapping
// the whole error so that its chain is kept.
type reason struct {
	text string
	err  error
}

func (r reason) Error() string { return r.text }
func (r reason) Unwrap() error { return r.err }

// fieldError splits a "path: reason" error (what Validate and Provision
// return, one per line) into an *Error. An error that is already an *Error
// is returned as it is; one without a path keeps its whole text as reason.
func fieldError(err error) *Error {
	if e, ok := err.(*Error); ok {
		return e
	}
	msg := err.Error()
	path, rest, ok := strings.Cut(msg, ": ")
	if !ok || path == "" || strings.ContainsAny(path, " \t\n") {
		return &Error{Err: err}
	}
	return &Error{Path: path, Err: reason{text: rest, err: err}}
}

// positions maps the path of every key and list item a file sets to its
// position.
type positions map[string]Pos

// locate returns the position of path, or of the nearest enclosing key or
// list item the file has ("broker.listeners.tls" for a
// "broker.listeners.tls.cert" the file omits), or the zero Pos.
func (p positions) locate(path string) Pos {
	for path != "" {
		if pos, ok := p[path]; ok {
			return pos
		}
		path = parentPath(path)
	}
	return Pos{}
}

// parentPath returns the path of the key or list that holds path:
// "a.b[2]" → "a.b", "a.b" → "a", "a" → "".
func parentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i > 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndexAny(path, ".["); i > 0 {
		return path[:i]
	}
	return ""
}

// locateAll turns each "path: reason" line of err into an *Error with the
// file name and the position of its field, joined again. It returns nil
// for nil.
func locateAll(err error, file string, pos positions) error {
	if err == nil {
		return nil
	}
	var located []*Error
	for _, e := range flatten(err) {
		l := *fieldError(e)
		l.File = file
		if l.Pos == (Pos{}) && l.Path != "" {
			l.Pos = pos.locate(l.Path)
		}
		located = append(located, &l)
	}
	// In the order of the file, a field the file omits first; ties by
	// text, so that the output is the same on every run.
	slices.SortStableFunc(located, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Pos.Line, b.Pos.Line), cmp.Compare(a.Pos.Column, b.Pos.Column), strings.Compare(a.Error(), b.Error()))
	})
	out := make([]error, len(located))
	for i, e := range located {
		out[i] = e
	}
	return errors.Join(out...)
}

// flatten returns the one-line errors joined in err, descending into
// nested joins. An error of several lines that is not a join is split into
// one error per line (losing its chain, which only a join keeps).
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			if e != nil {
				out = append(out, flatten(e)...)
			}
		}
		return out
	}
	msg := err.Error()
	if !strings.Contains(msg, "\n") {
		return []error{err}
	}
	var out []error
	for _, l := range strings.Split(msg, "\n") {
		if l != "" {
			out = append(out, errors.New(l))
		}
	}
	return out
}
