package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/bus"
)

// Bounds of evaluation: no result may be larger.
const (
	// MaxString is the longest string an expression may produce.
	MaxString = 64 << 10
	// MaxArray is the largest array an expression may produce or FOREACH
	// may walk.
	MaxArray = 10_000
	// maxJSONDecode bounds the text json_decode and path access parse.
	maxJSONDecode = 1 << 20
)

var errTooLarge = errors.New("result too large")

// columns are a message's metadata fields, as EMQX names them.
type columns struct {
	msg       *bus.Message // shared: never written
	gatewayID string
	event     string     // for $events/...: the event name
	shared    *sharedMsg // parses the payload once for every rule
}

// columnNames are the metadata fields, in the order SELECT * writes them.
var columnNames = []string{"id", "topic", "clientid", "username", "qos", "retain", "payload", "timestamp", "publish_received_at", "peerhost", "gateway_id", "event"}

func (c *columns) get(name string) (any, bool) {
	m := c.msg
	if c.event != "" && name != "event" && name != "gateway_id" {
		// An event's fields are in its JSON payload (protocols/mqtt,
		// events.go); it has no payload of its own (message_dropped gives
		// payload_size only).
		if v, ok := c.eventFields()[name]; ok {
			return v, true
		}
		if name == "payload" {
			return nil, true
		}
	}
	switch name {
	case "topic":
		return m.Topic, true
	case "clientid":
		return clientID(m), true
	case "username":
		return userProp(m, "username"), true
	case "qos":
		return int64(m.QoS), true
	case "retain":
		return m.Retain, true
	case "payload":
		return string(m.Payload), true
	case "timestamp", "publish_received_at":
		return m.Time.UnixMilli(), true
	case "peerhost":
		return userProp(m, "peerhost"), true
	case "gateway_id", "node":
		return c.gatewayID, true
	case "event":
		if c.event == "" {
			return "message.publish", true
		}
		return c.event, true
	case "id":
		return fmt.Sprintf("%x", m.Time.UnixNano()), true
	}
	return nil, false
}

// eventFields are an event's fields: its payload's JSON object (nil for
// anything else).
func (c *columns) eventFields() map[string]any {
	obj, _ := c.payloadValue().(map[string]any)
	return obj
}

// payloadValue is the payload parsed as JSON, or the payload as a string
// when it is not JSON.
func (c *columns) payloadValue() any {
	if c.shared == nil {
		c.shared = &sharedMsg{m: *c.msg}
	}
	return c.shared.payload()
}

func clientID(m *bus.Message) string {
	if m.Origin != "" {
		return m.Origin
	}
	s, _ := userProp(m, "clientid").(string)
	return s
}

func userProp(m *bus.Message, key string) any {
	for _, p := range m.UserProperties {
		if p.Key == key {
			return p.Value
		}
	}
	return nil
}

// decodeOrString parses b as JSON, or returns it as a string.
func decodeOrString(b []byte) any {
	if v, err := decodeJSON(b); err == nil {
		return v
	}
	return string(b)
}

// decodeJSON parses b into nil, bool, int64, float64, string, []any and
// map[string]any. A number with an integral value is an int64 (exact past
// 2^53 too when written as an integer); any other number is a float64.
func decodeJSON(b []byte) (any, error) {
	if len(b) > maxJSONDecode {
		return nil, fmt.Errorf("JSON text of %d bytes: %w", len(b), errTooLarge)
	}
	if !longInteger(b) {
		// the fast path: every integer fits a float64 exactly
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, err
		}
		return normalizeFloats(v), nil
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, errors.New("JSON text has trailing data")
	}
	return normalize(v), nil
}

// longInteger reports whether b has a run of 16 or more digits (a number
// a float64 may not hold exactly).
func longInteger(b []byte) bool {
	run := 0
	for _, c := range b {
		if c >= '0' && c <= '9' {
			run++
			if run >= 16 {
				return true
			}
		} else {
			run = 0
		}
	}
	return false
}

// normalizeFloats turns the integral float64s of json.Unmarshal into
// int64 (so "2.0" is the integer 2, as EMQX's JSON decoding also gives).
func normalizeFloats(v any) any {
	switch x := v.(type) {
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x)
		}
	case []any:
		for i := range x {
			x[i] = normalizeFloats(x[i])
		}
	case map[string]any:
		for k, e := range x {
			x[k] = normalizeFloats(e)
		}
	}
	return v
}

// normalize turns the json.Numbers of a UseNumber decoder into int64 or
// float64.
func normalize(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case []any:
		for i := range x {
			x[i] = normalize(x[i])
		}
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(e)
		}
	}
	return v
}

// env is what an expression sees: the message's columns, the aliases
// defined so far (and FOREACH's item), and in a window's output the
// aggregates' values.
type env struct {
	cols *columns
	vars map[string]any
	aggs []any // values of the aggregates, by slot (window output only)
	win  *windowSpan
	st   *stateStore
	now  func() time.Time
}

type windowSpan struct{ start, end time.Time }

func (e *env) lookup(name string) any {
	if v, ok := e.vars[name]; ok {
		return v
	}
	if e.cols == nil {
		return nil
	}
	if name == "payload" {
		v, _ := e.cols.get("payload")
		return v
	}
	v, _ := e.cols.get(name)
	return v
}

func (e *env) set(name []string, v any) {
	if e.vars == nil {
		e.vars = map[string]any{}
	}
	setPath(e.vars, name, v)
}

// setPath writes v under the key path name of m, making nested maps. A
// map it descends into is copied first: it may be part of a payload that
// other rules read at the same time.
func setPath(m map[string]any, name []string, v any) {
	for len(name) > 1 {
		sub, ok := m[name[0]].(map[string]any)
		if ok {
			sub = maps.Clone(sub)
		} else {
			sub = map[string]any{}
		}
		m[name[0]] = sub
		m, name = sub, name[1:]
	}
	m[name[0]] = v
}

// evalError is an error evaluating an expression, at its position.
type evalError struct {
	pos Pos
	err error
}

func (e *evalError) Error() string { return e.pos.String() + ": " + e.err.Error() }
func (e *evalError) Unwrap() error { return e.err }

func errAt(x Expr, format string, args ...any) error {
	return &evalError{x.position(), fmt.Errorf(format, args...)}
}

// eval evaluates x in en.
func eval(x Expr, en *env) (any, error) {
	switch x := x.(type) {
	case *literal:
		return x.v, nil
	case *pathExpr:
		return evalPath(x, en)
	case *unaryExpr:
		v, err := eval(x.x, en)
		if err != nil {
			return nil, err
		}
		if x.op == "not" {
			if v == nil {
				return nil, nil
			}
			b, ok := v.(bool)
			if !ok {
				return nil, errAt(x, "NOT of %s", typeName(v))
			}
			return !b, nil
		}
		switch n := v.(type) {
		case int64:
			return -n, nil
		case float64:
			return -n, nil
		case nil:
			return nil, nil
		}
		return nil, errAt(x, "minus of %s", typeName(v))
	case *binaryExpr:
		return evalBinary(x, en)
	case *inExpr:
		v, err := eval(x.x, en)
		if err != nil {
			return nil, err
		}
		found := false
		for _, e := range x.list {
			w, err := eval(e, en)
			if err != nil {
				return nil, err
			}
			if equal(v, w) {
				found = true
				break
			}
		}
		return found != x.not, nil
	case *isNullExpr:
		v, err := eval(x.x, en)
		if err != nil {
			return nil, err
		}
		return (v == nil) != x.not, nil
	case *caseExpr:
		var subj any
		if x.subject != nil {
			v, err := eval(x.subject, en)
			if err != nil {
				return nil, err
			}
			subj = v
		}
		for _, w := range x.whens {
			c, err := eval(w.cond, en)
			if err != nil {
				return nil, err
			}
			if (x.subject != nil && equal(subj, c)) || (x.subject == nil && c == true) {
				return eval(w.then, en)
			}
		}
		if x.els != nil {
			return eval(x.els, en)
		}
		return nil, nil
	case *callExpr:
		return evalCall(x, en)
	}
	return nil, fmt.Errorf("unknown expression %T", x)
}

func evalPath(x *pathExpr, en *env) (any, error) {
	var v any
	if x.base != nil {
		b, err := eval(x.base, en)
		if err != nil {
			return nil, err
		}
		v = b
	} else if x.root == "payload" && len(x.steps) > 0 && en.cols != nil && en.cols.event == "" {
		if _, shadowed := en.vars["payload"]; !shadowed {
			v = en.cols.payloadValue()
		} else {
			v = en.lookup("payload")
		}
	} else {
		v = en.lookup(x.root)
	}
	for _, s := range x.steps {
		if s, ok := v.(string); ok { // a JSON text inside a field is walked into
			d, err := decodeJSON([]byte(s))
			if err != nil {
				return nil, nil
			}
			v = d
		}
		if s.index == nil {
			switch m := v.(type) {
			case map[string]any:
				v = m[s.key]
			case []any: // payload.arr.1: EMQX also allows a numeric key
				n, err := strconv.Atoi(s.key)
				if err != nil {
					return nil, nil
				}
				v = index(m, int64(n))
			default:
				return nil, nil
			}
			continue
		}
		iv, err := eval(s.index, en)
		if err != nil {
			return nil, err
		}
		switch m := v.(type) {
		case []any:
			n, ok := toInt(iv)
			if !ok {
				return nil, errAt(s.index, "array index is %s, not an integer", typeName(iv))
			}
			v = index(m, n)
		case map[string]any:
			k, ok := iv.(string)
			if !ok {
				return nil, nil
			}
			v = m[k]
		default:
			return nil, nil
		}
	}
	return v, nil
}

// index returns element n of a counting from 1 (EMQX); a negative n counts
// from the end; out of range is nil.
func index(a []any, n int64) any {
	switch {
	case n >= 1 && n <= int64(len(a)):
		return a[n-1]
	case n < 0 && -n <= int64(len(a)):
		return a[int64(len(a))+n]
	}
	return nil
}

func evalBinary(x *binaryExpr, en *env) (any, error) {
	l, err := eval(x.l, en)
	if err != nil {
		return nil, err
	}
	switch x.op {
	case "and":
		if l == false {
			return false, nil
		}
	case "or":
		if l == true {
			return true, nil
		}
	}
	r, err := eval(x.r, en)
	if err != nil {
		return nil, err
	}
	switch x.op {
	case "and", "or":
		lb, lok := l.(bool)
		rb, rok := r.(bool)
		if (!lok && l != nil) || (!rok && r != nil) {
			return nil, errAt(x, "%s of %s and %s", strings.ToUpper(x.op), typeName(l), typeName(r))
		}
		if x.op == "and" {
			return lok && rok && lb && rb, nil
		}
		return (lok && lb) || (rok && rb), nil
	case "=":
		return equal(l, r), nil
	case "!=":
		if l == nil || r == nil {
			return l != r, nil
		}
		return !equal(l, r), nil
	case "<", "<=", ">", ">=":
		c, ok := compare(l, r)
		if !ok {
			return false, nil
		}
		switch x.op {
		case "<":
			return c < 0, nil
		case "<=":
			return c <= 0, nil
		case ">":
			return c > 0, nil
		}
		return c >= 0, nil
	case "=~":
		t, ok1 := l.(string)
		f, ok2 := r.(string)
		if !ok1 || !ok2 {
			return false, nil
		}
		return bus.Match(f, t), nil
	}
	return arith(x, l, r)
}

func arith(x *binaryExpr, l, r any) (any, error) {
	if l == nil || r == nil {
		return nil, errAt(x, "%s with a null operand (%s %s %s)", x.op, typeName(l), x.op, typeName(r))
	}
	if x.op == "+" {
		ls, lok := l.(string)
		rs, rok := r.(string)
		if lok || rok {
			if !lok {
				ls = toStr(l)
			}
			if !rok {
				rs = toStr(r)
			}
			if len(ls)+len(rs) > MaxString {
				return nil, errAt(x, "string concatenation: %w", errTooLarge)
			}
			return ls + rs, nil
		}
	}
	li, lint := l.(int64)
	ri, rint := r.(int64)
	if lint && rint {
		switch x.op {
		case "+":
			return li + ri, nil
		case "-":
			return li - ri, nil
		case "*":
			return li * ri, nil
		case "div", "%":
			if ri == 0 {
				return nil, errAt(x, "division by zero")
			}
			if x.op == "div" {
				return li / ri, nil
			}
			return li % ri, nil
		case "/":
			if ri == 0 {
				return nil, errAt(x, "division by zero")
			}
			if li%ri == 0 {
				return li / ri, nil
			}
			return float64(li) / float64(ri), nil
		}
	}
	lf, ok1 := toFloat(l)
	rf, ok2 := toFloat(r)
	if !ok1 || !ok2 {
		return nil, errAt(x, "%s of %s and %s", x.op, typeName(l), typeName(r))
	}
	var v float64
	switch x.op {
	case "+":
		v = lf + rf
	case "-":
		v = lf - rf
	case "*":
		v = lf * rf
	case "/":
		if rf == 0 {
			return nil, errAt(x, "division by zero")
		}
		v = lf / rf
	case "div":
		if rf == 0 {
			return nil, errAt(x, "division by zero")
		}
		v = math.Trunc(lf / rf)
	case "%":
		if rf == 0 {
			return nil, errAt(x, "division by zero")
		}
		v = math.Mod(lf, rf)
	}
	return v, nil
}

// equal compares two values: numbers by value whatever their type, the
// rest by type and value.
func equal(a, b any) bool {
	if af, ok := toNumber(a); ok {
		if bf, ok := toNumber(b); ok {
			return af == bf
		}
		return false
	}
	switch x := a.(type) {
	case nil:
		return b == nil
	case string, bool:
		return a == b
	case []any, map[string]any:
		ja, _ := json.Marshal(x)
		jb, _ := json.Marshal(b)
		return string(ja) == string(jb)
	}
	return false
}

// compare orders two numbers or two strings.
func compare(a, b any) (int, bool) {
	if af, ok := toNumber(a); ok {
		if bf, ok := toNumber(b); ok {
			switch {
			case af < bf:
				return -1, true
			case af > bf:
				return 1, true
			}
			return 0, true
		}
		return 0, false
	}
	as, ok1 := a.(string)
	bs, ok2 := b.(string)
	if ok1 && ok2 {
		return strings.Compare(as, bs), true
	}
	return 0, false
}

// toNumber is a number's value (strings are not numbers here).
func toNumber(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

// toFloat converts a number or a numeric string.
func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case float64:
		return n, true
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
		return f, err == nil
	}
	return 0, false
}

func toInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case float64:
		if n == math.Trunc(n) && math.Abs(n) < 1<<62 {
			return int64(n), true
		}
	}
	return 0, false
}

// toStr writes a value as text: strings as they are, numbers in their
// shortest form, null as "null", arrays and objects as JSON.
func toStr(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
