package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

type funcKind int

const (
	kindScalar    funcKind = iota
	kindAggregate          // avg, min, ...: per window and group
	kindState              // changed, lag: per rule, call and topic
)

// function is a built-in function.
type function struct {
	kind     funcKind
	min, max int // argument count; max -1: any
	// regexArg, when > 0, is the argument that must be a literal pattern,
	// compiled at parse time.
	regexArg int
	call     func(c *callExpr, en *env, args []any) (any, error)
}

func (f *function) arity() string {
	switch {
	case f.min == f.max:
		return fmt.Sprintf("%d argument(s)", f.min)
	case f.max < 0:
		return fmt.Sprintf("at least %d argument(s)", f.min)
	}
	return fmt.Sprintf("%d to %d arguments", f.min, f.max)
}

// FunctionNames lists the built-in functions, sorted.
func FunctionNames() []string {
	var out []string
	for n := range functions {
		if n != "array" {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// functions is the table of built-in functions, built once and never
// changed.
var functions = builtins()

func math1(f func(float64) float64) *function {
	return &function{min: 1, max: 1, call: func(c *callExpr, _ *env, a []any) (any, error) {
		x, ok := toFloat(a[0])
		if !ok {
			return nil, errAt(c, "%s of %s", c.name, typeName(a[0]))
		}
		return finite(c, f(x))
	}}
}

func finite(c *callExpr, v float64) (any, error) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil, errAt(c, "%s: result is not a finite number", c.name)
	}
	return v, nil
}

func str1(f func(string) string) *function {
	return &function{min: 1, max: 1, call: func(c *callExpr, _ *env, a []any) (any, error) {
		s, ok := a[0].(string)
		if !ok {
			return nil, errAt(c, "%s of %s", c.name, typeName(a[0]))
		}
		return f(s), nil
	}}
}

func agg() *function { return &function{kind: kindAggregate, min: 1, max: 1} }

func builtins() map[string]*function {
	return map[string]*function{
		// math
		"abs": {min: 1, max: 1, call: func(c *callExpr, _ *env, a []any) (any, error) {
			switch n := a[0].(type) {
			case int64:
				if n < 0 {
					return -n, nil
				}
				return n, nil
			case float64:
				return math.Abs(n), nil
			}
			return nil, errAt(c, "abs of %s", typeName(a[0]))
		}},
		"round": {min: 1, max: 2, call: func(c *callExpr, _ *env, a []any) (any, error) {
			x, ok := toFloat(a[0])
			if !ok {
				return nil, errAt(c, "round of %s", typeName(a[0]))
			}
			if len(a) == 1 {
				if i, ok := a[0].(int64); ok {
					return i, nil
				}
				return int64(math.Round(x)), nil
			}
			d, ok := toInt(a[1])
			if !ok || d < 0 || d > 15 {
				return nil, errAt(c, "round: decimals must be an integer from 0 to 15")
			}
			p := math.Pow(10, float64(d))
			return finite(c, math.Round(x*p)/p)
		}},
		"floor": {min: 1, max: 1, call: intRound(math.Floor)},
		"ceil":  {min: 1, max: 1, call: intRound(math.Ceil)},
		"sqrt":  math1(math.Sqrt),
		"log":   math1(math.Log),
		"log10": math1(math.Log10),
		"log2":  math1(math.Log2),
		"exp":   math1(math.Exp),
		"power": {min: 2, max: 2, call: func(c *callExpr, _ *env, a []any) (any, error) {
			x, ok1 := toFloat(a[0])
			y, ok2 := toFloat(a[1])
			if !ok1 || !ok2 {
				return nil, errAt(c, "power of %s and %s", typeName(a[0]), typeName(a[1]))
			}
			return finite(c, math.Pow(x, y))
		}},
		// string
		"lower": str1(strings.ToLower),
		"upper": str1(strings.ToUpper),
		"trim":  str1(strings.TrimSpace),
		"ltrim": str1(func(s string) string { return strings.TrimLeft(s, " \t\r\n") }),
		"rtrim": str1(func(s string) string { return strings.TrimRight(s, " \t\r\n") }),
		"reverse": str1(func(s string) string {
			r := []rune(s)
			slices.Reverse(r)
			return string(r)
		}),
		"strlen": {min: 1, max: 1, call: func(c *callExpr, _ *env, a []any) (any, error) {
			s, ok := a[0].(string)
			if !ok {
				return nil, errAt(c, "strlen of %s", typeName(a[0]))
			}
			return int64(utf8.RuneCountInString(s)), nil
		}},
		"concat": {min: 1, max: -1, call: func(c *callExpr, _ *env, a []any) (any, error) {
			var b strings.Builder
			for _, x := range a {
				b.WriteString(toStr(x))
				if b.Len() > MaxString {
					return nil, errAt(c, "concat: %w", errTooLarge)
				}
			}
			return b.String(), nil
		}},
		"substr": {min: 2, max: 3, call: func(c *callExpr, _ *env, a []any) (any, error) {
			s, ok := a[0].(string)
			start, ok2 := toInt(a[1])
			if !ok || !ok2 {
				return nil, errAt(c, "substr(string, start[, length])")
			}
			r := []rune(s)
			if start < 0 {
				start = max(int64(len(r))+start, 0)
			}
			start = min(start, int64(len(r)))
			end := int64(len(r))
			if len(a) == 3 {
				n, ok := toInt(a[2])
				if !ok || n < 0 {
					return nil, errAt(c, "substr: length must be a non-negative integer")
				}
				end = min(start+n, end)
			}
			return string(r[start:end]), nil
		}},
		"split": {min: 2, max: 2, call: func(c *callExpr, _ *env, a []any) (any, error) {
			s, ok1 := a[0].(string)
			sep, ok2 := a[1].(string)
			if !ok1 || !ok2 || sep == "" {
				return nil, errAt(c, "split(string, separator) with a non-empty separator")
			}
			parts := strings.SplitN(s, sep, MaxArray+1)
			if len(parts) > MaxArray {
				return nil, errAt(c, "split: %w", errTooLarge)
			}
			out := make([]any, 0, len(parts))
			for _, p := range parts {
				if p != "" { // EMQX drops empty parts
					out = append(out, p)
				}
			}
			return out, nil
		}},
		"replace": {min: 3, max: 3, call: func(c *callExpr, _ *env, a []any) (any, error) {
			s, ok1 := a[0].(string)
			old, ok2 := a[1].(string)
			nw, ok3 := a[2].(string)
			if !ok1 || !ok2 || !ok3 {
				return nil, errAt(c, "replace(string, old, new) takes strings")
			}
			if old != "" && len(nw) > len(old) && len(s)+strings.Count(s, old)*(len(nw)-len(old)) > MaxString {
				return nil, errAt(c, "replace: %w", errTooLarge)
			}
			return strings.ReplaceAll(s, old, nw), nil
		}},
		"regex_match": {min: 2, max: 2, regexArg: 1, call: func(c *callExpr, _ *env, a []any) (any, error) {
			s, ok := a[0].(string)
			if !ok {
				return false, nil
			}
			return c.re.MatchString(s), nil
		}},
		"regex_replace": {min: 3, max: 3, regexArg: 1, call: func(c *callExpr, _ *env, a []any) (any, error) {
			s, ok1 := a[0].(string)
			repl, ok2 := a[2].(string)
			if !ok1 || !ok2 {
				return nil, errAt(c, "regex_replace(string, 'pattern', replacement) takes strings")
			}
			out := c.re.ReplaceAllString(s, repl)
			if len(out) > MaxString {
				return nil, errAt(c, "regex_replace: %w", errTooLarge)
			}
			return out, nil
		}},
		// conversion
		"str": {min: 1, max: 1, call: func(_ *callExpr, _ *env, a []any) (any, error) { return toStr(a[0]), nil }},
		"int": {min: 1, max: 1, call: func(c *callExpr, _ *env, a []any) (any, error) {
			switch x := a[0].(type) {
			case int64:
				return x, nil
			case float64:
				if math.IsNaN(x) || math.Abs(x) > 9e18 {
					break
				}
				return int64(x), nil
			case bool:
				if x {
					return int64(1), nil
				}
				return int64(0), nil
			case string:
				if i, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64); err == nil {
					return i, nil
				}
				if f, err := strconv.ParseFloat(strings.TrimSpace(x), 64); err == nil && math.Abs(f) < 9e18 {
					return int64(f), nil
				}
			}
			return nil, errAt(c, "int of %s", typeName(a[0]))
		}},
		"float": {min: 1, max: 1, call: func(c *callExpr, _ *env, a []any) (any, error) {
			if b, ok := a[0].(bool); ok {
				if b {
					return 1.0, nil
				}
				return 0.0, nil
			}
			f, ok := toFloat(a[0])
			if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
				return nil, errAt(c, "float of %s", typeName(a[0]))
			}
			return f, nil
		}},
		"bool": {min: 1, max: 1, call: func(c *callExpr, _ *env, a []any) (any, error) {
			switch x := a[0].(type) {
			case bool:
				return x, nil
			case int64:
				if x == 0 || x == 1 {
					return x == 1, nil
				}
			case float64:
				if x == 0 || x == 1 {
					return x == 1, nil
				}
			case string:
				switch strings.ToLower(x) {
				case "true":
					return true, nil
				case "false":
					return false, nil
				}
			}
			return nil, errAt(c, "bool of %s", typeName(a[0]))
		}},
		"json_encode": {min: 1, max: 1, call: func(c *callExpr, _ *env, a []any) (any, error) {
			b, err := json.Marshal(a[0])
			if err != nil {
				return nil, errAt(c, "json_encode: %v", err)
			}
			if len(b) > MaxString {
				return nil, errAt(c, "json_encode: %w", errTooLarge)
			}
			return string(b), nil
		}},
		"json_decode": {min: 1, max: 1, call: func(c *callExpr, _ *env, a []any) (any, error) {
			s, ok := a[0].(string)
			if !ok {
				return nil, errAt(c, "json_decode of %s", typeName(a[0]))
			}
			v, err := decodeJSON([]byte(s))
			if err != nil {
				return nil, errAt(c, "json_decode: %v", err)
			}
			return v, nil
		}},
		"is_null":     {min: 1, max: 1, call: func(_ *callExpr, _ *env, a []any) (any, error) { return a[0] == nil, nil }},
		"is_not_null": {min: 1, max: 1, call: func(_ *callExpr, _ *env, a []any) (any, error) { return a[0] != nil, nil }},
		"coalesce": {min: 1, max: -1, call: func(_ *callExpr, _ *env, a []any) (any, error) {
			for _, x := range a {
				if x != nil {
					return x, nil
				}
			}
			return nil, nil
		}},
		// arrays
		"nth": {min: 2, max: 2, call: func(c *callExpr, _ *env, a []any) (any, error) {
			n, ok1 := toInt(a[0])
			arr, ok2 := a[1].([]any)
			if !ok1 || !ok2 {
				return nil, errAt(c, "nth(n, array) of %s and %s", typeName(a[0]), typeName(a[1]))
			}
			return index(arr, n), nil
		}},
		"length": {min: 1, max: 1, call: func(c *callExpr, _ *env, a []any) (any, error) {
			switch x := a[0].(type) {
			case []any:
				return int64(len(x)), nil
			case map[string]any:
				return int64(len(x)), nil
			case string:
				return int64(utf8.RuneCountInString(x)), nil
			}
			return nil, errAt(c, "length of %s", typeName(a[0]))
		}},
		"contains": {min: 2, max: 2, call: func(_ *callExpr, _ *env, a []any) (any, error) {
			switch x := a[1].(type) {
			case []any:
				for _, e := range x {
					if equal(a[0], e) {
						return true, nil
					}
				}
			case string:
				s, ok := a[0].(string)
				return ok && strings.Contains(x, s), nil
			}
			return false, nil
		}},
		"array": {min: 0, max: -1, call: func(c *callExpr, _ *env, a []any) (any, error) {
			if len(a) > MaxArray {
				return nil, errAt(c, "array: %w", errTooLarge)
			}
			return slices.Clone(a), nil
		}},
		// time and topic
		"now_timestamp": {min: 0, max: 1, call: func(c *callExpr, en *env, a []any) (any, error) {
			t := en.now()
			if len(a) == 0 {
				return t.Unix(), nil
			}
			switch a[0] {
			case "second":
				return t.Unix(), nil
			case "millisecond":
				return t.UnixMilli(), nil
			case "microsecond":
				return t.UnixMicro(), nil
			case "nanosecond":
				return t.UnixNano(), nil
			}
			return nil, errAt(c, "now_timestamp: unit must be 'second', 'millisecond', 'microsecond' or 'nanosecond'")
		}},
		"topic": {min: 0, max: 1, call: func(c *callExpr, en *env, a []any) (any, error) {
			t, _ := en.lookup("topic").(string)
			if len(a) == 0 {
				return t, nil
			}
			n, ok := toInt(a[0])
			if !ok {
				return nil, errAt(c, "topic(n) takes an integer")
			}
			levels := strings.Split(t, "/")
			s := make([]any, len(levels))
			for i, l := range levels {
				s[i] = l
			}
			return index(s, n), nil
		}},
		"window_start": {min: 0, max: 0, call: func(c *callExpr, en *env, _ []any) (any, error) {
			if en.win == nil {
				return nil, nil
			}
			return en.win.start.UnixMilli(), nil
		}},
		"window_end": {min: 0, max: 0, call: func(c *callExpr, en *env, _ []any) (any, error) {
			if en.win == nil {
				return nil, nil
			}
			return en.win.end.UnixMilli(), nil
		}},
		// aggregates (windows)
		"avg": agg(), "min": agg(), "max": agg(), "sum": agg(), "count": agg(), "first": agg(), "last": agg(),
		// report by exception
		"changed": {kind: kindState, min: 1, max: 2},
		"lag":     {kind: kindState, min: 1, max: 1},
	}
}

func intRound(f func(float64) float64) func(c *callExpr, _ *env, a []any) (any, error) {
	return func(c *callExpr, _ *env, a []any) (any, error) {
		switch n := a[0].(type) {
		case int64:
			return n, nil
		case float64:
			r := f(n)
			if math.Abs(r) > 9e18 || math.IsNaN(r) {
				return nil, errAt(c, "%s: out of range", c.name)
			}
			return int64(r), nil
		}
		return nil, errAt(c, "%s of %s", c.name, typeName(a[0]))
	}
}

var errNoAggregate = errors.New("aggregate outside a window")

func evalCall(c *callExpr, en *env) (any, error) {
	switch c.fn.kind {
	case kindAggregate:
		if en.aggs == nil {
			return nil, errAt(c, "%s: %w", c.name, errNoAggregate)
		}
		return en.aggs[c.slot], nil
	case kindState:
		args := make([]any, len(c.args))
		for i, x := range c.args {
			v, err := eval(x, en)
			if err != nil {
				return nil, err
			}
			args[i] = v
		}
		return en.st.apply(c, en, args)
	}
	args := make([]any, len(c.args))
	for i, x := range c.args {
		v, err := eval(x, en)
		if err != nil {
			return nil, err
		}
		args[i] = v
	}
	return c.fn.call(c, en, args)
}
