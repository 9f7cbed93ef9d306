package rules

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/bus"
)

// Every syntax error names its line and column.
func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ sql, want string }{
		{"SELECT\n  payload.v, avgg(payload.v) FROM \"t\"", `line 2, col 14: unknown function "avgg"`},
		{`SELECT x FROM t`, `line 1, col 15: expected a quoted topic filter after FROM, found "t"`},
		{`SELECT x FROM "a/#/b"`, `line 1, col 15: "a/#/b" is not a valid MQTT topic filter`},
		{`SELECT x FROM "$events/nope"`, `line 1, col 15: unknown event "$events/nope"`},
		{`SELECT avg(x) FROM "t"`, `line 1, col 8: aggregate function "avg" needs GROUP BY`},
		{`SELECT x FROM "t" WHERE avg(x) > 1 GROUP BY TUMBLINGWINDOW(ss, 1)`, `line 1, col 25: aggregate avg is only allowed in SELECT`},
		{`SELECT x FROM "t" GROUP BY x`, `GROUP BY needs a TUMBLINGWINDOW or HOPPINGWINDOW`},
		{`SELECT x FROM "t" GROUP BY TUMBLINGWINDOW(yy, 1)`, `line 1, col 43: expected a time unit`},
		{`SELECT x FROM "t" GROUP BY HOPPINGWINDOW(ss, 10, 3)`, `must be a multiple of the hop`},
		{`SELECT x FROM "t" GROUP BY TUMBLINGWINDOW(dd, 8)`, `longer than 168h0m0s`},
		{`SELECT regex_match(x, y) FROM "t"`, `line 1, col 23: regex_match: the pattern must be a quoted string`},
		{`SELECT regex_match(x, '(') FROM "t"`, `line 1, col 23: regex_match: error parsing regexp`},
		{`SELECT abs(1, 2) FROM "t"`, `line 1, col 8: abs takes 1 argument(s), got 2`},
		{`SELECT 'abc FROM "t"`, `line 1, col 8: unterminated string`},
		{`SELECT x FROM "t" WHERE`, `line 1, col 24: unexpected end of input`},
		{`SELECT CASE END FROM "t"`, `line 1, col 13: unexpected "END"`},
		{`SELECT x ~ 1 FROM "t"`, `line 1, col 10: unexpected character '~'`},
		{`UPDATE t`, `line 1, col 1: expected SELECT or FOREACH`},
		{`SELECT ` + strings.Repeat("(", 100) + `1` + strings.Repeat(")", 100) + ` FROM "t"`, `nested more than 64 deep`},
		{`FOREACH x FROM "t" GROUP BY TUMBLINGWINDOW(ss, 1)`, `GROUP BY cannot be used with FOREACH`},
	} {
		_, err := Parse(c.sql)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want %q", c.sql, err, c.want)
		}
	}
}

func TestParseWindows(t *testing.T) {
	q, err := Parse(`SELECT count(*) FROM "t" GROUP BY HOPPINGWINDOW(mi, 60, 10)`)
	if err != nil {
		t.Fatal(err)
	}
	if w := q.Window; w.Kind != "hopping" || w.Size != time.Hour || w.Hop != 10*time.Minute {
		t.Fatalf("window %+v", w)
	}
}

// Evaluation semantics beyond the golden cases: nulls, errors, bounds.
func TestEvalSemantics(t *testing.T) {
	run := func(sql, payload string) ([]Row, error) { return Test(sql, "t/a/b", []byte(payload), "gw") }
	for _, c := range []struct{ sql, payload, want string }{
		{`SELECT payload.missing > 1 as x FROM "t/#"`, `{}`, `[{"x":false}]`},
		{`SELECT payload.missing IS NULL as x, coalesce(payload.m, 7) as y FROM "t/#"`, `{}`, `[{"x":true,"y":7}]`},
		{`SELECT 7 / 2 as a, 6 / 2 as b, 7 div 2 as c, 7 mod 2 as d, 'a' + 1 as e FROM "t/#"`, `{}`, `[{"a":3.5,"b":3,"c":3,"d":1,"e":"a1"}]`},
		{`SELECT topic =~ 't/+/b' as m FROM "t/#"`, `{}`, `[{"m":true}]`},
		{`SELECT CASE payload.s WHEN 'on' THEN 1 WHEN 'off' THEN 0 END as v FROM "t/#"`, `{"s":"off"}`, `[{"v":0}]`},
		{`SELECT payload.v * 2 as d FROM "t/#" WHERE d > 10`, `{"v":6}`, `[{"d":12}]`},
		{`SELECT payload.v * 2 as d FROM "t/#" WHERE d > 100`, `{"v":6}`, `[]`},
		{`SELECT json_decode(payload.inner).x as x FROM "t/#"`, `{"inner":"{\"x\":[1,2]}"}`, `[{"x":[1,2]}]`},
		{`SELECT payload.inner.x[2] as x FROM "t/#"`, `{"inner":"{\"x\":[1,2]}"}`, `[{"x":2}]`},
		{`SELECT payload.big as b FROM "t/#"`, `{"big":12345678901234567890123}`, `[{"b":1.2345678901234568e+22}]`},
		{`SELECT payload.big as b FROM "t/#"`, `{"big":9007199254740993}`, `[{"b":9007199254740993}]`},
		{`SELECT [1, 'a'] as arr, 1 as o.a, 2 as o.b FROM "t/#"`, `{}`, `[{"arr":[1,"a"],"o":{"a":1,"b":2}}]`},
	} {
		rows, err := run(c.sql, c.payload)
		if err != nil {
			t.Errorf("%s: %v", c.sql, err)
			continue
		}
		got, _ := EncodeRowList(rows)
		if got != c.want {
			t.Errorf("%s on %s = %s, want %s", c.sql, c.payload, got, c.want)
		}
	}
	for _, c := range []struct{ sql, payload, want string }{
		{`SELECT payload.v * 2 FROM "t/#"`, `{"v":"x"}`, `line 1, col 18: * of a string and an integer`},
		{`SELECT 1 / 0 FROM "t/#"`, `{}`, `division by zero`},
		{`SELECT sqrt(-1) FROM "t/#"`, `{}`, `sqrt: result is not a finite number`},
		{`SELECT x FROM "t/#" WHERE 1`, `{}`, `condition is an integer, not a boolean`},
		{`FOREACH payload.list FROM "t/#"`, `{"list":5}`, `FOREACH of an integer, not an array`},
		{`SELECT concat(payload.s, payload.s, payload.s, payload.s, payload.s) FROM "t/#"`, `{"s":"` + strings.Repeat("x", 20000) + `"}`, `result too large`},
	} {
		_, err := run(c.sql, c.payload)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s on %.40s: %v, want %q", c.sql, c.payload, err, c.want)
		}
	}
}

// EncodeRowList is the JSON of rows, for tests.
func EncodeRowList(rows []Row) (string, error) {
	if rows == nil {
		return "null", nil
	}
	var b strings.Builder
	b.WriteByte('[')
	for i, r := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		e, err := EncodeRow(r)
		if err != nil {
			return "", err
		}
		b.Write(e)
	}
	b.WriteByte(']')
	return b.String(), nil
}

func TestTemplate(t *testing.T) {
	row := Row{"t": 90.5, "n": int64(3), "s": "x", "o": map[string]any{"a": []any{int64(1), "b"}}, "nil": nil}
	meta := func(n string) (any, bool) {
		if n == "gateway_id" {
			return "gw1", true
		}
		return nil, false
	}
	for _, c := range []struct{ tmpl, want string }{
		{"alarms/${s}", "alarms/x"},
		{`{"t": ${t}, "n": ${n}}`, `{"t": 90.5, "n": 3}`},
		{"${o}", `{"a":[1,"b"]}`},
		{"${o.a[2]}/${o.a[9]}/${missing}/${nil}", "b/null/null/null"},
		{"sites/${gateway_id}/x", "sites/gw1/x"},
		{"${ s }", "x"},
		{"plain", "plain"},
	} {
		tm, err := ParseTemplate(c.tmpl)
		if err != nil {
			t.Fatalf("%s: %v", c.tmpl, err)
		}
		if got := tm.Render(row, meta); got != c.want {
			t.Errorf("%s = %q, want %q", c.tmpl, got, c.want)
		}
	}
	star, _ := ParseTemplate("${*}")
	if got := star.Render(Row{"a": int64(1)}, nil); got != `{"a":1}` {
		t.Errorf("${*} = %s", got)
	}
	for _, bad := range []string{"${", "a${}", "${a[0]}", "${a..b}", "${a[x]}"} {
		if _, err := ParseTemplate(bad); err == nil {
			t.Errorf("ParseTemplate(%q) accepted", bad)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Rule{ID: "r", SQL: `SELECT * FROM "t"`, Actions: []Action{{Log: &LogAction{}}}}
	cfg := Config{
		ok,
		ok, // duplicate id
		{ID: "b", SQL: `SELECT * FROM "t"`},
		{ID: "c", SQL: `SELECT * FROM "t"`, Actions: []Action{
			{Republish: &RepublishAction{Topic: "a/+", QoS: 3}},
			{Uplink: &UplinkAction{Topic: "", QoS: 2}},
			{HTTP: &HTTPAction{URL: "ftp://x", Method: "GET", Headers: []string{"nocolon", "X: y"}, Body: "${", Timeout: -1, QueueMax: -1}},
			{Log: &LogAction{}, Uplink: &UplinkAction{Topic: "x"}},
		}},
	}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`[1].id: "r" is also the id of rules[0]`,
		`[2].actions: a rule needs at least one action`,
		`[3].actions[0].republish.topic: "a/+": a topic name has no wildcards`,
		`[3].actions[0].republish.qos: must be 0 to 2, got 3`,
		`[3].actions[1].uplink.topic: must not be empty`,
		`[3].actions[1].uplink.qos: must be 0 to 1, got 2`,
		`[3].actions[2].http.url: "ftp://x" must be an http:// or https:// URL`,
		`[3].actions[2].http.method: must be POST or PUT, got "GET"`,
		`[3].actions[2].http.headers[0]: must be "Name: value"`,
		`[3].actions[2].http.body: unclosed ${ at byte 1`,
		`[3].actions[2].http.timeout`,
		`[3].actions[2].http.queue_max`,
		`[3].actions[3]: an action sets exactly one`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

// A window keeps at most maxGroups groups; a message that would open one
// more is left out with ErrGroupsExceeded (and counted), and the others
// still come out.
func TestWindowGroupLimit(t *testing.T) {
	q, err := Parse(`SELECT topic(2) as d, count(*) as n FROM "d/+" GROUP BY topic(2), TUMBLINGWINDOW(ss, 10)`)
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	p := compile(q, "gw", 2, func() time.Time { return now })
	for i, d := range []string{"a", "b", "c", "a"} {
		_, _, err := p.process(msgAt("d/"+d, "{}", t0.Add(time.Duration(i)*time.Second)), "")
		if (d == "c") != errors.Is(err, ErrGroupsExceeded) {
			t.Fatalf("%s: %v", d, err)
		}
	}
	outs := p.tick(t0.Add(10 * time.Second))
	if len(outs) != 2 || outs[0].row["n"] != int64(2) || outs[1].row["d"] != "b" || p.win.Exceeded != 1 {
		t.Fatalf("outputs %v, exceeded %d", outs, p.win.Exceeded)
	}
	// changed/lag remember at most maxGroups topics too
	q, _ = Parse(`SELECT lag(payload) as prev FROM "d/+"`)
	p = compile(q, "gw", 1, func() time.Time { return now })
	if _, _, err := p.process(msgAt("d/a", "1", t0), ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.process(msgAt("d/b", "1", t0), ""); !errors.Is(err, ErrGroupsExceeded) {
		t.Fatalf("second topic: %v", err)
	}
}

// An event source: the event's fields come from its JSON payload.
func TestEventSource(t *testing.T) {
	rows, err := Test(`SELECT clientid, event FROM "$events/client_connected" WHERE clientid = 'c1'`,
		"$events/client_connected", []byte(`{"clientid":"c1","peername":"10.0.0.1:5555"}`), "gw")
	if err != nil || len(rows) != 1 || rows[0]["clientid"] != "c1" || rows[0]["event"] != "client.connected" {
		t.Fatalf("rows %v err %v", rows, err)
	}
}

func msgAt(topic, payload string, at time.Time) bus.Message {
	return bus.Message{Topic: topic, Payload: []byte(payload), Time: at}
}
