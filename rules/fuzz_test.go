package rules

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fieldgate/fieldgate/bus"
)

// seedSQL is every golden case's SQL plus a few hostile ones.
func seedSQL(f *testing.F) []string {
	files, _ := filepath.Glob("testdata/golden/*.yaml")
	var out []string
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var c goldenCase
		if err := yaml.Unmarshal(data, &c); err != nil {
			f.Fatal(err)
		}
		out = append(out, c.SQL)
	}
	return append(out,
		`SELECT ((((((((1)))))))) FROM "t"`,
		`SELECT regex_match(payload, '(a+)+$') FROM "#"`,
		`SELECT 'unterminated FROM "t"`,
		`FOREACH split(payload, ',') DO item AS x FROM "t/#"`,
		`SELECT -9223372036854775808 div -1 as x, 1/0 as y FROM "t"`,
		"SELECT a -- comment\nFROM \"t\" WHERE a IS NOT NULL",
	)
}

// FuzzParse parses arbitrary SQL; what parses is run on a few payloads.
// Neither may panic, and an error must carry a position.
func FuzzParse(f *testing.F) {
	for _, s := range seedSQL(f) {
		f.Add(s, []byte(`{"v":1,"a":[1,2,{"b":"x"}],"s":"t"}`))
	}
	f.Fuzz(func(t *testing.T, sql string, payload []byte) {
		// a hang (a window loop once ran forever on an overflowed
		// duration) becomes a crash with its input
		tm := time.AfterFunc(30*time.Second, func() { panic(fmt.Sprintf("HANG %q %q", sql, payload)) })
		defer tm.Stop()
		q, err := Parse(sql)
		if err != nil {
			if _, ok := err.(*SyntaxError); !ok {
				t.Fatalf("error %v is not a *SyntaxError", err)
			}
			return
		}
		now := t0
		p := compile(q, "gw", 10, func() time.Time { return now })
		for i := range 3 {
			now = now.Add(time.Duration(i) * 7 * time.Second)
			_, _, _ = p.process(bus.Message{Topic: "t/a/b", Payload: payload, Time: now}, "")
		}
		_ = p.tick(now.Add(time.Hour))
	})
}

// FuzzTemplate parses arbitrary templates and renders them on a row.
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"alarms/${topic}", `{"t": ${t}, "at": ${timestamp}}`, "${*}", "${a.b[2].c}", "${", "${}", "x${a}y${b}z", "${payload.arr[1]}"} {
		f.Add(s)
	}
	row := Row{"t": 1.5, "a": map[string]any{"b": []any{1, map[string]any{"c": "deep"}}}, "payload": `{"arr":[7]}`}
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := ParseTemplate(s)
		if err != nil {
			return
		}
		out := tm.Render(row, func(n string) (any, bool) { return "meta-" + n, true })
		if len(out) > maxTemplate {
			t.Fatalf("output of %d bytes", len(out))
		}
	})
}
