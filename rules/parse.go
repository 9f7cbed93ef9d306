package rules

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/bus"
)

// Expr is a node of a parsed expression.
type Expr interface {
	position() Pos
}

type (
	// literal is a constant: nil, bool, int64, float64 or string.
	literal struct {
		p Pos
		v any
	}
	// pathExpr is a column or alias followed by .key and [index] steps.
	pathExpr struct {
		p     Pos
		root  string
		base  Expr // instead of root: json_decode(x).a, (expr)[1]
		steps []step
	}
	unaryExpr struct {
		p  Pos
		op string // "-" or "not"
		x  Expr
	}
	binaryExpr struct {
		p    Pos
		op   string
		l, r Expr
	}
	inExpr struct {
		p    Pos
		x    Expr
		list []Expr
		not  bool
	}
	isNullExpr struct {
		p   Pos
		x   Expr
		not bool
	}
	caseExpr struct {
		p       Pos
		subject Expr // nil for CASE WHEN cond
		whens   []whenClause
		els     Expr
	}
	callExpr struct {
		p    Pos
		name string
		args []Expr
		fn   *function
		re   *regexp.Regexp // compiled pattern of regex_* (literal)
		slot int            // aggregate or state slot
		star bool           // count(*)
	}
)

type step struct {
	key   string
	index Expr // nil for a .key step
}

type whenClause struct {
	cond, then Expr
}

func (e *literal) position() Pos    { return e.p }
func (e *pathExpr) position() Pos   { return e.p }
func (e *unaryExpr) position() Pos  { return e.p }
func (e *binaryExpr) position() Pos { return e.p }
func (e *inExpr) position() Pos     { return e.p }
func (e *isNullExpr) position() Pos { return e.p }
func (e *caseExpr) position() Pos   { return e.p }
func (e *callExpr) position() Pos   { return e.p }

// Field is one output of SELECT or DO: an expression and the name it is
// written under, or * (every column).
type Field struct {
	Star bool
	Expr Expr
	// Name is the output key path: the alias after AS, else the path of a
	// plain field reference, else the expression's text.
	Name []string
	// Alias is true when Name was given with AS: later fields and WHERE
	// can refer to it.
	Alias bool
}

// Window is an eKuiper time window of GROUP BY.
type Window struct {
	// Kind is "tumbling" or "hopping".
	Kind string
	// Size is the window length; Hop how often a hopping window starts
	// (equal to Size for a tumbling one).
	Size, Hop time.Duration
}

// Query is a parsed rule.
type Query struct {
	Fields []Field
	// From are the MQTT topic filters (event sources included).
	From  []string
	Where Expr
	// Foreach, when set, makes one output per element of its array.
	Foreach   Expr
	ForeachAs string
	Do        []Field
	Incase    Expr
	GroupBy   []Expr
	Window    *Window

	aggs   []*callExpr // aggregate calls, by slot
	states []*callExpr // changed/lag calls, by slot
}

// Limits of a query, checked at parse time.
const (
	maxRegex      = 1024
	maxHopWindows = 60
	maxDepth      = 64
	maxWindow     = 7 * 24 * time.Hour
)

type parser struct {
	toks  []token
	i     int
	q     *Query
	depth int
	// clause is where expressions are being parsed: "select", "where", ...
	clause string
	inAgg  bool
}

// Parse parses a rule's SQL. Errors are *SyntaxError with the line and
// column of the fault, e.g. `line 2, col 14: unknown function "avgg"`.
func Parse(src string) (*Query, error) {
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks, q: &Query{}}
	if err := p.parse(); err != nil {
		return nil, err
	}
	return p.q, nil
}

func (p *parser) peek() token { return p.toks[p.i] }
func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *parser) errf(pos Pos, format string, args ...any) error {
	return &SyntaxError{pos, fmt.Sprintf(format, args...)}
}

// isKw reports whether t is the keyword kw (case-insensitive).
func isKw(t token, kw string) bool { return t.kind == tIdent && strings.EqualFold(t.text, kw) }

func (p *parser) acceptKw(kw string) bool {
	if isKw(p.peek(), kw) {
		p.i++
		return true
	}
	return false
}

func (p *parser) expectKw(kw string) error {
	if !p.acceptKw(kw) {
		t := p.peek()
		return p.errf(t.pos, "expected %s, found %s", kw, t)
	}
	return nil
}

func (p *parser) acceptOp(op string) bool {
	t := p.peek()
	if t.kind == tOp && t.text == op {
		p.i++
		return true
	}
	return false
}

func (p *parser) expectOp(op string) error {
	if !p.acceptOp(op) {
		t := p.peek()
		return p.errf(t.pos, "expected %q, found %s", op, t)
	}
	return nil
}

var reserved = map[string]bool{
	"select": true, "from": true, "where": true, "as": true, "and": true, "or": true, "not": true,
	"in": true, "case": true, "when": true, "then": true, "else": true, "end": true, "foreach": true,
	"do": true, "incase": true, "group": true, "by": true, "is": true, "div": true, "mod": true,
}

func (p *parser) parse() error {
	q := p.q
	switch {
	case p.acceptKw("select"):
		p.clause = "select"
		fields, err := p.fields(false)
		if err != nil {
			return err
		}
		q.Fields = fields
	case p.acceptKw("foreach"):
		p.clause = "foreach"
		e, err := p.expr()
		if err != nil {
			return err
		}
		q.Foreach, q.ForeachAs = e, "item"
		if p.acceptKw("as") {
			t := p.next()
			if t.kind != tIdent || reserved[strings.ToLower(t.text)] {
				return p.errf(t.pos, "expected a name after AS, found %s", t)
			}
			q.ForeachAs = t.text
		}
		if p.acceptKw("do") {
			p.clause = "do"
			if q.Do, err = p.fields(true); err != nil {
				return err
			}
		}
		if p.acceptKw("incase") {
			p.clause = "incase"
			if q.Incase, err = p.expr(); err != nil {
				return err
			}
		}
	default:
		t := p.peek()
		return p.errf(t.pos, "expected SELECT or FOREACH, found %s", t)
	}
	if err := p.expectKw("from"); err != nil {
		return err
	}
	for {
		t := p.next()
		if t.kind != tString {
			return p.errf(t.pos, "expected a quoted topic filter after FROM, found %s", t)
		}
		if !bus.ValidFilter(t.text) {
			return p.errf(t.pos, "%q is not a valid MQTT topic filter", t.text)
		}
		if strings.HasPrefix(t.text, "$events/") && !validEvent(t.text) {
			return p.errf(t.pos, "unknown event %q (known: %s)", t.text, strings.Join(eventNames, ", "))
		}
		q.From = append(q.From, t.text)
		if !p.acceptOp(",") {
			break
		}
	}
	if p.acceptKw("where") {
		p.clause = "where"
		e, err := p.expr()
		if err != nil {
			return err
		}
		q.Where = e
	}
	if isKw(p.peek(), "group") {
		p.next()
		if err := p.expectKw("by"); err != nil {
			return err
		}
		if q.Foreach != nil {
			return p.errf(p.peek().pos, "GROUP BY cannot be used with FOREACH")
		}
		if err := p.groupBy(); err != nil {
			return err
		}
	}
	if t := p.peek(); t.kind != tEOF {
		return p.errf(t.pos, "unexpected %s", t)
	}
	if len(q.aggs) > 0 && q.Window == nil {
		c := q.aggs[0]
		return p.errf(c.p, "aggregate function %q needs GROUP BY with TUMBLINGWINDOW or HOPPINGWINDOW", c.name)
	}
	return nil
}

func (p *parser) fields(allowEmpty bool) ([]Field, error) {
	var out []Field
	for {
		t := p.peek()
		if allowEmpty && len(out) == 0 && (isKw(t, "incase") || isKw(t, "from")) {
			return nil, nil
		}
		if p.acceptOp("*") {
			out = append(out, Field{Star: true})
		} else {
			start := p.i
			e, err := p.expr()
			if err != nil {
				return nil, err
			}
			f := Field{Expr: e}
			if p.acceptKw("as") {
				name, err := p.aliasPath()
				if err != nil {
					return nil, err
				}
				f.Name, f.Alias = name, true
			} else if pe, ok := e.(*pathExpr); ok && pe.base == nil && plainPath(pe) {
				f.Name = append([]string{pe.root}, keys(pe)...)
			} else {
				f.Name = []string{p.text(start, p.i)}
			}
			out = append(out, f)
		}
		if !p.acceptOp(",") {
			return out, nil
		}
	}
}

// aliasPath reads the name after AS: a name or a dotted path of names.
func (p *parser) aliasPath() ([]string, error) {
	var name []string
	for {
		t := p.next()
		switch {
		case t.kind == tIdent && (len(name) > 0 || !reserved[strings.ToLower(t.text)]):
			name = append(name, t.text)
		case t.kind == tString && t.quote == '"':
			name = append(name, t.text)
		default:
			return nil, p.errf(t.pos, "expected a name after AS, found %s", t)
		}
		if !p.acceptOp(".") {
			return name, nil
		}
	}
}

// text rebuilds the source text of tokens [from, to) for a field name.
func (p *parser) text(from, to int) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		t := p.toks[i]
		if i > from && needSpace(p.toks[i-1], t) {
			b.WriteByte(' ')
		}
		if t.kind == tString {
			b.WriteByte(t.quote)
			b.WriteString(t.text)
			b.WriteByte(t.quote)
		} else {
			b.WriteString(t.text)
		}
	}
	return b.String()
}

func needSpace(a, b token) bool {
	if a.kind == tOp && (a.text == "(" || a.text == "[" || a.text == ".") {
		return false
	}
	if b.kind == tOp && (b.text == ")" || b.text == "]" || b.text == "," || b.text == "." || b.text == "(" || b.text == "[") {
		return false
	}
	return true
}

func plainPath(pe *pathExpr) bool {
	for _, s := range pe.steps {
		if s.index != nil {
			return false
		}
	}
	return true
}

func keys(pe *pathExpr) []string {
	out := make([]string, len(pe.steps))
	for i, s := range pe.steps {
		out[i] = s.key
	}
	return out
}

func (p *parser) groupBy() error {
	p.clause = "group by"
	for {
		t := p.peek()
		if t.kind == tIdent && (strings.EqualFold(t.text, "tumblingwindow") || strings.EqualFold(t.text, "hoppingwindow")) {
			if p.q.Window != nil {
				return p.errf(t.pos, "only one window per rule")
			}
			w, err := p.window()
			if err != nil {
				return err
			}
			p.q.Window = w
		} else {
			e, err := p.expr()
			if err != nil {
				return err
			}
			p.q.GroupBy = append(p.q.GroupBy, e)
		}
		if !p.acceptOp(",") {
			break
		}
	}
	if p.q.Window == nil {
		return p.errf(p.peek().pos, "GROUP BY needs a TUMBLINGWINDOW or HOPPINGWINDOW")
	}
	return nil
}

func (p *parser) window() (*Window, error) {
	name := p.next()
	hopping := strings.EqualFold(name.text, "hoppingwindow")
	if err := p.expectOp("("); err != nil {
		return nil, err
	}
	ut := p.next()
	units := map[string]time.Duration{"ms": time.Millisecond, "ss": time.Second, "mi": time.Minute, "hh": time.Hour, "dd": 24 * time.Hour}
	unit, ok := units[strings.ToLower(ut.text)]
	if ut.kind != tIdent || !ok {
		return nil, p.errf(ut.pos, "expected a time unit (ms, ss, mi, hh, dd), found %s", ut)
	}
	num := func() (time.Duration, error) {
		if err := p.expectOp(","); err != nil {
			return 0, err
		}
		t := p.next()
		n, err := strconv.Atoi(t.text)
		if t.kind != tNumber || err != nil || n <= 0 {
			return 0, p.errf(t.pos, "expected a whole number of units from 1, found %s", t)
		}
		if int64(n) > int64(maxWindow/unit) {
			return 0, p.errf(t.pos, "a window of %d %s is longer than %s", n, ut.text, maxWindow)
		}
		return time.Duration(n) * unit, nil
	}
	size, err := num()
	if err != nil {
		return nil, err
	}
	w := &Window{Kind: "tumbling", Size: size, Hop: size}
	if hopping {
		w.Kind = "hopping"
		hp := p.peek().pos
		if w.Hop, err = num(); err != nil {
			return nil, err
		}
		if w.Hop > w.Size {
			return nil, p.errf(hp, "the hop (%s) must not be longer than the window (%s)", w.Hop, w.Size)
		}
		if w.Size/w.Hop > maxHopWindows || w.Size%w.Hop != 0 {
			return nil, p.errf(hp, "the window (%s) must be a multiple of the hop (%s), at most %d times", w.Size, w.Hop, maxHopWindows)
		}
	}
	if w.Size < 10*time.Millisecond {
		return nil, p.errf(name.pos, "a window must be at least 10ms long")
	}
	return w, p.expectOp(")")
}

// Expressions, lowest precedence first: OR, AND, NOT, comparison, + -,
// * / div mod, unary -, primary.

func (p *parser) expr() (Expr, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxDepth {
		return nil, p.errf(p.peek().pos, "expression nested more than %d deep", maxDepth)
	}
	return p.or()
}

func (p *parser) or() (Expr, error) {
	l, err := p.and()
	if err != nil {
		return nil, err
	}
	for isKw(p.peek(), "or") {
		t := p.next()
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		l = &binaryExpr{t.pos, "or", l, r}
	}
	return l, nil
}

func (p *parser) and() (Expr, error) {
	l, err := p.not()
	if err != nil {
		return nil, err
	}
	for isKw(p.peek(), "and") {
		t := p.next()
		r, err := p.not()
		if err != nil {
			return nil, err
		}
		l = &binaryExpr{t.pos, "and", l, r}
	}
	return l, nil
}

func (p *parser) not() (Expr, error) {
	if isKw(p.peek(), "not") {
		t := p.next()
		p.depth++
		defer func() { p.depth-- }()
		if p.depth > maxDepth {
			return nil, p.errf(t.pos, "expression nested more than %d deep", maxDepth)
		}
		x, err := p.not()
		if err != nil {
			return nil, err
		}
		return &unaryExpr{t.pos, "not", x}, nil
	}
	return p.cmp()
}

func (p *parser) cmp() (Expr, error) {
	l, err := p.add()
	if err != nil {
		return nil, err
	}
	t := p.peek()
	switch {
	case t.kind == tOp && (t.text == "=" || t.text == "!=" || t.text == "<" || t.text == "<=" || t.text == ">" || t.text == ">=" || t.text == "=~"):
		p.next()
		r, err := p.add()
		if err != nil {
			return nil, err
		}
		return &binaryExpr{t.pos, t.text, l, r}, nil
	case isKw(t, "is"):
		p.next()
		not := p.acceptKw("not")
		if err := p.expectKw("null"); err != nil {
			return nil, err
		}
		return &isNullExpr{t.pos, l, not}, nil
	case isKw(t, "in") || isKw(t, "not") && p.i+1 < len(p.toks) && isKw(p.toks[p.i+1], "in"):
		not := p.acceptKw("not")
		p.next()
		if err := p.expectOp("("); err != nil {
			return nil, err
		}
		in := &inExpr{p: t.pos, x: l, not: not}
		for {
			e, err := p.expr()
			if err != nil {
				return nil, err
			}
			in.list = append(in.list, e)
			if !p.acceptOp(",") {
				break
			}
		}
		return in, p.expectOp(")")
	}
	return l, nil
}

func (p *parser) add() (Expr, error) {
	l, err := p.mul()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		if t.kind != tOp || (t.text != "+" && t.text != "-") {
			return l, nil
		}
		p.next()
		r, err := p.mul()
		if err != nil {
			return nil, err
		}
		l = &binaryExpr{t.pos, t.text, l, r}
	}
}

func (p *parser) mul() (Expr, error) {
	l, err := p.unary()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		op := ""
		switch {
		case t.kind == tOp && (t.text == "*" || t.text == "/" || t.text == "%"):
			op = t.text
		case isKw(t, "div"):
			op = "div"
		case isKw(t, "mod"):
			op = "%"
		default:
			return l, nil
		}
		p.next()
		r, err := p.unary()
		if err != nil {
			return nil, err
		}
		l = &binaryExpr{t.pos, op, l, r}
	}
}

func (p *parser) unary() (Expr, error) {
	if t := p.peek(); t.kind == tOp && (t.text == "-" || t.text == "+") {
		p.next()
		p.depth++
		defer func() { p.depth-- }()
		if p.depth > maxDepth {
			return nil, p.errf(t.pos, "expression nested more than %d deep", maxDepth)
		}
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		if t.text == "+" {
			return x, nil
		}
		if l, ok := x.(*literal); ok {
			switch v := l.v.(type) {
			case int64:
				return &literal{t.pos, -v}, nil
			case float64:
				return &literal{t.pos, -v}, nil
			}
		}
		return &unaryExpr{t.pos, "-", x}, nil
	}
	return p.primary()
}

func (p *parser) primary() (Expr, error) {
	t := p.next()
	switch t.kind {
	case tNumber:
		if i, err := strconv.ParseInt(t.text, 10, 64); err == nil {
			return &literal{t.pos, i}, nil
		}
		f, err := strconv.ParseFloat(t.text, 64)
		if err != nil || math.IsInf(f, 0) {
			return nil, p.errf(t.pos, "bad number %q", t.text)
		}
		return &literal{t.pos, f}, nil
	case tString:
		return &literal{t.pos, t.text}, nil
	case tOp:
		switch t.text {
		case "(":
			e, err := p.expr()
			if err != nil {
				return nil, err
			}
			if err := p.expectOp(")"); err != nil {
				return nil, err
			}
			return p.postfix(e)
		case "[":
			// an array literal: its elements as arguments of a hidden call
			c := &callExpr{p: t.pos, name: "array", fn: functions["array"]}
			if !p.acceptOp("]") {
				for {
					e, err := p.expr()
					if err != nil {
						return nil, err
					}
					c.args = append(c.args, e)
					if !p.acceptOp(",") {
						break
					}
				}
				if err := p.expectOp("]"); err != nil {
					return nil, err
				}
			}
			return c, nil
		}
		return nil, p.errf(t.pos, "unexpected %s", t)
	case tIdent:
		low := strings.ToLower(t.text)
		switch low {
		case "true":
			return &literal{t.pos, true}, nil
		case "false":
			return &literal{t.pos, false}, nil
		case "null":
			return &literal{t.pos, nil}, nil
		case "case":
			return p.caseExpr(t)
		}
		if reserved[low] {
			return nil, p.errf(t.pos, "unexpected %s", t)
		}
		if n := p.peek(); n.kind == tOp && n.text == "(" {
			c, err := p.call(t)
			if err != nil {
				return nil, err
			}
			return p.postfix(c)
		}
		return p.path(&pathExpr{p: t.pos, root: t.text})
	}
	return nil, p.errf(t.pos, "unexpected %s", t)
}

// postfix reads .key and [index] steps after a call or a parenthesis.
func (p *parser) postfix(e Expr) (Expr, error) {
	if t := p.peek(); t.kind == tOp && (t.text == "." || t.text == "[") {
		return p.path(&pathExpr{p: e.position(), base: e})
	}
	return e, nil
}

func (p *parser) path(pe *pathExpr) (Expr, error) {
	for {
		switch {
		case p.acceptOp("."):
			k := p.next()
			if k.kind != tIdent && !(k.kind == tString && k.quote == '\'') && k.kind != tNumber {
				return nil, p.errf(k.pos, "expected a field name after '.', found %s", k)
			}
			pe.steps = append(pe.steps, step{key: k.text})
		case p.acceptOp("["):
			e, err := p.expr()
			if err != nil {
				return nil, err
			}
			if err := p.expectOp("]"); err != nil {
				return nil, err
			}
			pe.steps = append(pe.steps, step{index: e})
		default:
			return pe, nil
		}
	}
}

func (p *parser) caseExpr(t token) (Expr, error) {
	c := &caseExpr{p: t.pos}
	if !isKw(p.peek(), "when") {
		s, err := p.expr()
		if err != nil {
			return nil, err
		}
		c.subject = s
	}
	for p.acceptKw("when") {
		cond, err := p.expr()
		if err != nil {
			return nil, err
		}
		if err := p.expectKw("then"); err != nil {
			return nil, err
		}
		then, err := p.expr()
		if err != nil {
			return nil, err
		}
		c.whens = append(c.whens, whenClause{cond, then})
	}
	if len(c.whens) == 0 {
		return nil, p.errf(p.peek().pos, "expected WHEN, found %s", p.peek())
	}
	if p.acceptKw("else") {
		e, err := p.expr()
		if err != nil {
			return nil, err
		}
		c.els = e
	}
	return c, p.expectKw("end")
}

func (p *parser) call(name token) (Expr, error) {
	low := strings.ToLower(name.text)
	fn, ok := functions[low]
	if !ok || low == "array" {
		return nil, p.errf(name.pos, "unknown function %q", name.text)
	}
	p.next() // (
	c := &callExpr{p: name.pos, name: low, fn: fn}
	if fn.kind == kindAggregate {
		if p.inAgg {
			return nil, p.errf(name.pos, "aggregate %s inside another aggregate", low)
		}
		if p.clause != "select" {
			return nil, p.errf(name.pos, "aggregate %s is only allowed in SELECT", low)
		}
		p.inAgg = true
		defer func() { p.inAgg = false }()
	}
	if low == "count" && p.acceptOp("*") {
		c.star = true
		return c.register(p), p.expectOp(")")
	}
	if !p.acceptOp(")") {
		for {
			e, err := p.expr()
			if err != nil {
				return nil, err
			}
			c.args = append(c.args, e)
			if !p.acceptOp(",") {
				break
			}
		}
		if err := p.expectOp(")"); err != nil {
			return nil, err
		}
	}
	if len(c.args) < fn.min || (fn.max >= 0 && len(c.args) > fn.max) {
		return nil, p.errf(name.pos, "%s takes %s, got %d", low, fn.arity(), len(c.args))
	}
	if fn.regexArg > 0 {
		lit, ok := c.args[fn.regexArg].(*literal)
		s, isStr := "", false
		if ok {
			s, isStr = lit.v.(string)
		}
		if !isStr {
			return nil, p.errf(c.args[fn.regexArg].position(), "%s: the pattern must be a quoted string", low)
		}
		if len(s) > maxRegex {
			return nil, p.errf(lit.p, "%s: the pattern is longer than %d bytes", low, maxRegex)
		}
		re, err := regexp.Compile(s)
		if err != nil {
			return nil, p.errf(lit.p, "%s: %v", low, err)
		}
		c.re = re
	}
	return c.register(p), nil
}

// register gives aggregates and stateful calls their slot in the query.
func (c *callExpr) register(p *parser) Expr {
	switch c.fn.kind {
	case kindAggregate:
		c.slot = len(p.q.aggs)
		p.q.aggs = append(p.q.aggs, c)
	case kindState:
		c.slot = len(p.q.states)
		p.q.states = append(p.q.states, c)
	}
	return c
}
