package rules

import (
	"maps"
	"slices"
	"time"
)

// windows is the state of a windowed rule: per window start, per group,
// the accumulators of the aggregates and the group's last message. Only
// this is kept, never the messages themselves: a group costs its
// accumulators and one message, whatever the rate.
type windows struct {
	w         Window
	maxGroups int
	open      map[int64]map[string]*instance // window start (Unix ms) → group key → instance
	// closedUntil is the end of the last window closed: messages older
	// than it are late and left out of the windows already sent.
	closedUntil int64
	// Exceeded counts messages left out because their window had
	// maxGroups groups already; Late those that came after their window
	// closed.
	Exceeded, Late uint64
}

type instance struct {
	last *columns
	accs []accumulator
}

// accumulator is the running state of one aggregate over one group.
type accumulator struct {
	n           int64
	sum         float64
	sumInt      int64
	allInt      bool
	min, max    any
	first, last any
	seen        bool
}

func newWindows(q *Query, maxGroups int) *windows {
	return &windows{w: *q.Window, maxGroups: maxGroups, open: map[int64]map[string]*instance{}}
}

// starts returns the starts (Unix ms) of the windows that contain t.
func (ws *windows) starts(t time.Time) []int64 {
	ms := t.UnixMilli()
	size, hop := ws.w.Size.Milliseconds(), ws.w.Hop.Milliseconds()
	first := floorDiv(ms, hop) * hop
	var out []int64
	for s := first; s > ms-size; s -= hop {
		out = append(out, s)
	}
	return out
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// add puts a message (that passed WHERE) into its windows.
func (ws *windows) add(cols *columns, en *env, p *program) error {
	q := p.q
	keyVals := make([]any, len(q.GroupBy))
	for i, g := range q.GroupBy {
		v, err := eval(g, en)
		if err != nil {
			return err
		}
		keyVals[i] = v
	}
	key := groupKey(keyVals)
	// evaluate the aggregates' arguments once for all windows
	vals := make([]any, len(q.aggs))
	for i, c := range q.aggs {
		if c.star || len(c.args) == 0 {
			vals[i] = true
			continue
		}
		v, err := eval(c.args[0], en)
		if err != nil {
			return err
		}
		vals[i] = v
	}
	var exceeded bool
	for _, s := range ws.starts(cols.msg.Time) {
		if s+ws.w.Size.Milliseconds() <= ws.closedUntil {
			ws.Late++
			continue
		}
		groups := ws.open[s]
		if groups == nil {
			groups = map[string]*instance{}
			ws.open[s] = groups
		}
		in := groups[key]
		if in == nil {
			if len(groups) >= ws.maxGroups {
				exceeded = true
				continue
			}
			in = &instance{accs: make([]accumulator, len(q.aggs))}
			for i := range in.accs {
				in.accs[i].allInt = true
			}
			groups[key] = in
		}
		in.last = cols
		for i, c := range q.aggs {
			in.accs[i].add(c.name, vals[i])
		}
	}
	if exceeded {
		ws.Exceeded++
		return ErrGroupsExceeded
	}
	return nil
}

func (a *accumulator) add(fn string, v any) {
	if v == nil {
		return
	}
	if fn != "count" && fn != "first" && fn != "last" {
		if _, ok := toNumber(v); !ok {
			if _, isStr := v.(string); !isStr || fn == "avg" || fn == "sum" {
				return // not a number: left out, as SQL leaves out nulls
			}
		}
	}
	a.n++
	if !a.seen {
		a.first, a.min, a.max, a.seen = v, v, v, true
	}
	a.last = v
	if c, ok := compare(v, a.min); ok && c < 0 {
		a.min = v
	}
	if c, ok := compare(v, a.max); ok && c > 0 {
		a.max = v
	}
	switch n := v.(type) {
	case int64:
		a.sumInt += n
		a.sum += float64(n)
	case float64:
		a.allInt = false
		a.sum += n
	}
}

func (a *accumulator) value(fn string) any {
	switch fn {
	case "count":
		return a.n
	case "first":
		return a.first
	case "last":
		return a.last
	case "min":
		return a.min
	case "max":
		return a.max
	}
	if a.n == 0 {
		return nil
	}
	if fn == "sum" {
		if a.allInt {
			return a.sumInt
		}
		return a.sum
	}
	return a.sum / float64(a.n) // avg
}

// advance closes every window that ended at or before now and returns
// their rows: windows in order of their start, groups in order of their
// key. A row that fails to evaluate is left out (counted by the caller
// through the returned error count).
func (ws *windows) advance(now time.Time, p *program) []output {
	ms := now.UnixMilli()
	size := ws.w.Size.Milliseconds()
	var rows []output
	for _, s := range slices.Sorted(maps.Keys(ws.open)) {
		if s+size > ms {
			break
		}
		groups := ws.open[s]
		delete(ws.open, s)
		ws.closedUntil = max(ws.closedUntil, s+size)
		span := &windowSpan{start: time.UnixMilli(s), end: time.UnixMilli(s + size)}
		for _, k := range slices.Sorted(maps.Keys(groups)) {
			in := groups[k]
			aggs := make([]any, len(p.q.aggs))
			for i, c := range p.q.aggs {
				aggs[i] = in.accs[i].value(c.name)
			}
			en := &env{cols: in.last, aggs: aggs, win: span, st: &p.st, now: p.now}
			row, err := selectRow(p.q.Fields, en)
			if err != nil {
				p.windowErrs++
				p.lastWindowErr = err
				continue
			}
			rows = append(rows, output{row, in.last})
		}
	}
	return rows
}
