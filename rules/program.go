package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/bus"
)

// Row is one output of a rule: the selected fields by name.
type Row = map[string]any

// output is a row with the message it came from (for templates that name
// a field the rule did not select).
type output struct {
	row  Row
	cols *columns
}

// The event sources a rule may select FROM.
var eventNames = []string{"$events/client_connected", "$events/client_disconnected", "$events/message_dropped"}

func validEvent(topic string) bool { return slices.Contains(eventNames, topic) }

// DefaultMaxGroups bounds the state of one rule: the groups of each open
// window and the topics whose last value changed/lag remember.
const DefaultMaxGroups = 10_000

// program is a compiled rule with its state (windows, changed/lag). It is
// not safe for concurrent use: one goroutine (the rule's) owns it.
type program struct {
	q          *Query
	gatewayID  string
	now        func() time.Time
	whereFirst bool // WHERE uses no alias of SELECT: evaluate it first
	st         stateStore
	win        *windows
	en         env // the env of the message being processed (processShared)
	// windowErrs counts window output rows that failed to evaluate, the
	// last such error in lastWindowErr.
	windowErrs    uint64
	lastWindowErr error
}

func compile(q *Query, gatewayID string, maxGroups int, now func() time.Time) *program {
	if maxGroups <= 0 {
		maxGroups = DefaultMaxGroups
	}
	p := &program{q: q, gatewayID: gatewayID, now: now, st: stateStore{max: maxGroups}}
	aliases := map[string]bool{}
	for _, f := range q.Fields {
		if f.Alias {
			aliases[f.Name[0]] = true
		}
	}
	p.whereFirst = q.Where == nil || !usesAny(q.Where, aliases)
	if q.Window != nil {
		p.win = newWindows(q, maxGroups)
	}
	return p
}

// usesAny reports whether x refers to one of names (as the root of a path).
func usesAny(x Expr, names map[string]bool) bool {
	found := false
	walk(x, func(e Expr) {
		if pe, ok := e.(*pathExpr); ok && names[pe.root] {
			found = true
		}
	})
	return found
}

func walk(x Expr, fn func(Expr)) {
	if x == nil {
		return
	}
	fn(x)
	switch x := x.(type) {
	case *pathExpr:
		walk(x.base, fn)
		for _, s := range x.steps {
			walk(s.index, fn)
		}
	case *unaryExpr:
		walk(x.x, fn)
	case *binaryExpr:
		walk(x.l, fn)
		walk(x.r, fn)
	case *inExpr:
		walk(x.x, fn)
		for _, e := range x.list {
			walk(e, fn)
		}
	case *isNullExpr:
		walk(x.x, fn)
	case *caseExpr:
		walk(x.subject, fn)
		for _, w := range x.whens {
			walk(w.cond, fn)
			walk(w.then, fn)
		}
		walk(x.els, fn)
	case *callExpr:
		for _, a := range x.args {
			walk(a, fn)
		}
	}
}

// result is what one message did in a rule.
type result int

const (
	resultPassed   result = iota // produced output (or entered a window)
	resultFiltered               // WHERE was false
	resultNoResult               // FOREACH/INCASE produced nothing
)

// process runs the rule on one message. It returns the rows to send now
// (a windowed rule returns the rows of the windows the message's time
// closed).
func (p *program) process(m bus.Message, event string) ([]output, result, error) {
	if m.Time.IsZero() {
		m.Time = p.now()
	}
	return p.processShared(newSharedMsg(m, event, p.gatewayID))
}

// processShared is process for a message shared with other rules (its
// payload parsed once).
func (p *program) processShared(sm *sharedMsg) ([]output, result, error) {
	cols := &sm.cols // built once for every rule (newSharedMsg); Time is set
	// the env is the program's, reused: only its aliases are per message
	vars := p.en.vars
	clear(vars)
	p.en = env{cols: cols, vars: vars, st: &p.st, now: p.now}
	en := &p.en
	q := p.q
	if p.win != nil {
		closed := p.win.advance(cols.msg.Time, p)
		if q.Where != nil {
			ok, err := cond(q.Where, en)
			if err != nil || !ok {
				if err == nil {
					return closed, resultFiltered, nil
				}
				return closed, resultPassed, err
			}
		}
		return closed, resultPassed, p.win.add(cols, en, p)
	}
	if q.Foreach != nil {
		return p.foreach(en)
	}
	if p.whereFirst && q.Where != nil {
		ok, err := cond(q.Where, en)
		if err != nil {
			return nil, resultPassed, err
		}
		if !ok {
			return nil, resultFiltered, nil
		}
	}
	row, err := selectRow(q.Fields, en)
	if err != nil {
		return nil, resultPassed, err
	}
	if !p.whereFirst {
		ok, err := cond(q.Where, en)
		if err != nil {
			return nil, resultPassed, err
		}
		if !ok {
			return nil, resultFiltered, nil
		}
	}
	return []output{{row, cols}}, resultPassed, nil
}

// cond evaluates a condition: true only for the boolean true (null and
// false are false; another type is an error).
func cond(x Expr, en *env) (bool, error) {
	v, err := eval(x, en)
	if err != nil {
		return false, err
	}
	switch b := v.(type) {
	case bool:
		return b, nil
	case nil:
		return false, nil
	}
	return false, errAt(x, "condition is %s, not a boolean", typeName(v))
}

// selectRow evaluates fields into a row; each alias is visible to the
// fields after it (and to WHERE).
func selectRow(fields []Field, en *env) (Row, error) {
	row := Row{}
	for _, f := range fields {
		if f.Star {
			if en.cols != nil && en.cols.event != "" {
				// an event: its own fields (EMQX's), the event's name and
				// the node (this gateway)
				for n, v := range en.cols.eventFields() {
					row[n] = v
				}
				row["event"], row["node"] = en.cols.event, en.cols.gatewayID
			} else if en.cols != nil {
				for _, n := range columnNames {
					if v, ok := en.cols.get(n); ok && v != nil {
						row[n] = v
					}
				}
			}
			continue
		}
		v, err := eval(f.Expr, en)
		if err != nil {
			return nil, err
		}
		setPath(row, f.Name, v)
		if f.Alias {
			en.set(f.Name, v)
		}
	}
	return row, nil
}

func (p *program) foreach(en *env) ([]output, result, error) {
	q := p.q
	if q.Where != nil {
		ok, err := cond(q.Where, en)
		if err != nil {
			return nil, resultPassed, err
		}
		if !ok {
			return nil, resultFiltered, nil
		}
	}
	v, err := eval(q.Foreach, en)
	if err != nil {
		return nil, resultPassed, err
	}
	if s, ok := v.(string); ok {
		v, _ = decodeJSON([]byte(s))
	}
	arr, ok := v.([]any)
	if !ok {
		if v == nil {
			return nil, resultNoResult, nil
		}
		return nil, resultPassed, errAt(q.Foreach, "FOREACH of %s, not an array", typeName(v))
	}
	if len(arr) > MaxArray {
		return nil, resultPassed, errAt(q.Foreach, "FOREACH of %d elements: %w", len(arr), errTooLarge)
	}
	var rows []output
	for _, item := range arr {
		ie := &env{cols: en.cols, st: en.st, now: en.now, vars: map[string]any{q.ForeachAs: item}}
		if q.Incase != nil {
			ok, err := cond(q.Incase, ie)
			if err != nil {
				return nil, resultPassed, err
			}
			if !ok {
				continue
			}
		}
		if len(q.Do) == 0 {
			if m, ok := item.(map[string]any); ok {
				rows = append(rows, output{m, en.cols})
			} else {
				rows = append(rows, output{Row{q.ForeachAs: item}, en.cols})
			}
			continue
		}
		row, err := selectRow(q.Do, ie)
		if err != nil {
			return nil, resultPassed, err
		}
		rows = append(rows, output{row, en.cols})
	}
	if len(rows) == 0 {
		return nil, resultNoResult, nil
	}
	return rows, resultPassed, nil
}

// tick closes the windows that ended by now and returns their rows.
func (p *program) tick(now time.Time) []output {
	if p.win == nil {
		return nil
	}
	return p.win.advance(now, p)
}

// stateStore holds the last values of changed() and lag(), per call and
// per topic, at most max of them.
type stateStore struct {
	max      int
	last     map[stateKey]any
	Exceeded uint64
}

type stateKey struct {
	slot  int
	topic string
}

func (s *stateStore) apply(c *callExpr, en *env, args []any) (any, error) {
	topic, _ := en.lookup("topic").(string)
	k := stateKey{c.slot, topic}
	if s.last == nil {
		s.last = map[stateKey]any{}
	}
	prev, seen := s.last[k]
	if !seen && len(s.last) >= s.max {
		s.Exceeded++
		return nil, errAt(c, "%s: more than %d topics remembered: %w", c.name, s.max, ErrGroupsExceeded)
	}
	v := args[0]
	if c.name == "lag" {
		s.last[k] = v
		return prev, nil
	}
	var dead float64
	if len(args) == 2 {
		d, ok := toFloat(args[1])
		if !ok || d < 0 {
			return nil, errAt(c, "changed: the deadband must be a non-negative number")
		}
		dead = d
	}
	changed := !seen
	if seen {
		a, ok1 := toNumber(v)
		b, ok2 := toNumber(prev)
		if ok1 && ok2 {
			d := a - b
			if d < 0 {
				d = -d
			}
			changed = d > dead || (dead == 0 && a != b)
		} else {
			changed = !equal(v, prev)
		}
	}
	if changed {
		s.last[k] = v
	}
	return changed, nil
}

// ErrGroupsExceeded is the error of a message that would have made a rule
// keep more groups (or remembered topics) than its limit.
var ErrGroupsExceeded = errors.New("group limit reached")

// EncodeRow writes a row as JSON (keys sorted).
func EncodeRow(r Row) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("rules: encode output: %w", err)
	}
	return b, nil
}

// groupKey is the text of a group's key values.
func groupKey(vals []any) string {
	var b strings.Builder
	for i, v := range vals {
		if i > 0 {
			b.WriteByte(0)
		}
		b.WriteString(typeName(v))
		b.WriteByte(':')
		b.WriteString(toStr(v))
	}
	return b.String()
}
