package serial

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// errNoMatch: a line the sensor's regex does not match.
var errNoMatch = errors.New("line does not match the regex")

// regexParser turns the named groups of an RE2 expression into typed
// fields. RE2 runs in time linear in the line, so untrusted input cannot
// make it slow.
type regexParser struct {
	re *regexp.Regexp
	// groups holds one converter per submatch index; nil for unnamed
	// groups.
	groups []*fieldConv
}

// fieldConv converts the text of one named group.
type fieldConv struct {
	name          string
	typ           string
	scale, offset float64
}

// newRegexParser compiles expr and the field list. The config was
// validated, but the errors are still reported for direct callers.
func newRegexParser(expr string, fields []Field) (*regexParser, error) {
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("regex: %w", err)
	}
	byName := make(map[string]Field, len(fields))
	for _, f := range fields {
		byName[f.Name] = f
	}
	p := &regexParser{re: re, groups: make([]*fieldConv, re.NumSubexp()+1)}
	named := 0
	for i, name := range re.SubexpNames() {
		if name == "" {
			continue
		}
		named++
		f, ok := byName[name]
		if !ok {
			f = Field{Name: name, Type: TypeString}
		}
		c := &fieldConv{name: name, typ: f.Type, scale: f.Scale, offset: f.Offset}
		if c.typ == "" {
			c.typ = TypeFloat
		}
		if c.scale == 0 {
			c.scale = 1
		}
		p.groups[i] = c
	}
	if named == 0 {
		return nil, errors.New("regex: no named group")
	}
	for _, f := range fields {
		if !slices.Contains(re.SubexpNames(), f.Name) || f.Name == "" {
			return nil, fmt.Errorf("regex: field %q is not a named group", f.Name)
		}
	}
	return p, nil
}

// parse matches line and converts every named group that took part in the
// match.
func (p *regexParser) parse(line string) (map[string]any, error) {
	m := p.re.FindStringSubmatchIndex(line)
	if m == nil {
		return nil, errNoMatch
	}
	out := make(map[string]any, len(p.groups))
	for i, c := range p.groups {
		if c == nil || m[2*i] < 0 {
			continue
		}
		v, err := c.convert(line[m[2*i]:m[2*i+1]])
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", c.name, err)
		}
		out[c.name] = v
	}
	return out, nil
}

// convert turns text into the field's type, applying scale and offset.
func (c *fieldConv) convert(text string) (any, error) {
	s := strings.TrimSpace(text)
	switch c.typ {
	case TypeString:
		return text, nil
	case TypeBool:
		switch strings.ToLower(s) {
		case "1", "true", "on", "yes":
			return true, nil
		case "0", "false", "off", "no":
			return false, nil
		}
		return nil, fmt.Errorf("%q is not a boolean (true/false, 1/0, on/off, yes/no)", text)
	case TypeInt:
		n, err := strconv.ParseInt(strings.TrimPrefix(s, "+"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a decimal integer", text)
		}
		if c.scale == 1 && c.offset == 0 {
			return n, nil
		}
		x := math.Round(float64(n)*c.scale + c.offset)
		if x < math.MinInt64 || x >= math.MaxInt64 || math.IsNaN(x) {
			return nil, fmt.Errorf("%q scaled is out of the integer range", text)
		}
		return int64(x), nil
	default: // TypeFloat
		x, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("%q is not a finite number", text)
		}
		if c.scale == 1 && c.offset == 0 {
			return x, nil
		}
		x = x*c.scale + c.offset
		if math.IsInf(x, 0) {
			return nil, fmt.Errorf("%q scaled is out of range", text)
		}
		// 15 significant digits, the most a float64 always holds, drop
		// the binary noise of the product ("217" × 0.1 is
		// 21.700000000000003, published as 21.7).
		if r, err := strconv.ParseFloat(strconv.FormatFloat(x, 'g', 15, 64), 64); err == nil {
			x = r
		}
		return x, nil
	}
}
