package rules

import (
	"fmt"
	"strconv"
	"strings"
)

// Template is a text with ${var} placeholders, as EMQX's actions use them:
// ${name} is an output field of the rule (or, when the rule did not select
// it, a metadata field of the message such as ${topic} or ${gateway_id}),
// ${a.b} and ${a.b[1]} walk into it, and ${*} is the whole output as JSON.
// Strings are written as they are, numbers in their shortest form, objects
// and arrays as JSON, a missing field as null.
type Template struct {
	segs []tseg
}

type tseg struct {
	lit  string
	path []string // nil for a literal; ["*"] for the whole row
	idx  []int    // for each path element, an index (1-based) or 0
}

// maxTemplate bounds a template's text and its output.
const maxTemplate = 64 << 10

// ParseTemplate parses a template. An unclosed "${" or an empty or
// malformed name is an error naming its column.
func ParseTemplate(s string) (*Template, error) {
	if len(s) > maxTemplate {
		return nil, fmt.Errorf("template of %d bytes is longer than %d", len(s), maxTemplate)
	}
	t := &Template{}
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			if s != "" {
				t.segs = append(t.segs, tseg{lit: s})
			}
			return t, nil
		}
		if i > 0 {
			t.segs = append(t.segs, tseg{lit: s[:i]})
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("unclosed ${ at byte %d", i+1)
		}
		name := strings.TrimSpace(s[i+2 : i+j])
		seg, err := parseVar(name)
		if err != nil {
			return nil, fmt.Errorf("${%s}: %w", name, err)
		}
		t.segs = append(t.segs, seg)
		s = s[i+j+1:]
	}
}

func parseVar(name string) (tseg, error) {
	if name == "*" {
		return tseg{path: []string{"*"}, idx: []int{0}}, nil
	}
	if name == "" {
		return tseg{}, fmt.Errorf("empty name")
	}
	var seg tseg
	for _, part := range strings.Split(name, ".") {
		idx := 0
		if k := strings.IndexByte(part, '['); k >= 0 {
			if !strings.HasSuffix(part, "]") {
				return tseg{}, fmt.Errorf("bad index in %q", part)
			}
			n, err := strconv.Atoi(part[k+1 : len(part)-1])
			if err != nil || n < 1 {
				return tseg{}, fmt.Errorf("index in %q must be a whole number from 1", part)
			}
			idx, part = n, part[:k]
		}
		if part == "" || strings.ContainsAny(part, "${}[] ") {
			return tseg{}, fmt.Errorf("bad name %q", name)
		}
		seg.path = append(seg.path, part)
		seg.idx = append(seg.idx, idx)
	}
	return seg, nil
}

// Render fills the template from row, then from the message's metadata
// (meta may be nil). The output is cut at 64 KiB.
func (t *Template) Render(row Row, meta func(string) (any, bool)) string {
	if len(t.segs) == 1 && t.segs[0].path == nil {
		return t.segs[0].lit
	}
	var b strings.Builder
	for _, s := range t.segs {
		if s.path == nil {
			b.WriteString(s.lit)
		} else if s.path[0] == "*" {
			enc, err := EncodeRow(row)
			if err == nil {
				b.Write(enc)
			}
		} else {
			b.WriteString(toStr(s.lookup(row, meta)))
		}
		if b.Len() > maxTemplate {
			return b.String()[:maxTemplate]
		}
	}
	return b.String()
}

// Vars returns the names the template refers to.
func (t *Template) Vars() []string {
	var out []string
	for _, s := range t.segs {
		if s.path != nil {
			out = append(out, strings.Join(s.path, "."))
		}
	}
	return out
}

func (s tseg) lookup(row Row, meta func(string) (any, bool)) any {
	var v any
	v, ok := row[s.path[0]]
	if !ok && meta != nil {
		v, _ = meta(s.path[0])
	}
	v = indexInto(v, s.idx[0])
	for i, k := range s.path[1:] {
		if str, ok := v.(string); ok {
			d, err := decodeJSON([]byte(str))
			if err != nil {
				return nil
			}
			v = d
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = indexInto(m[k], s.idx[i+1])
	}
	return v
}

func indexInto(v any, idx int) any {
	if idx == 0 {
		return v
	}
	if a, ok := v.([]any); ok {
		return index(a, int64(idx))
	}
	return nil
}
