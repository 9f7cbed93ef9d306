package rules

import (
	"os"
	"strings"
	"testing"
)

// TestDocsExamples: every SQL example of docs/rules.md parses, and those
// listed below give the output shown for a sample message.
func TestDocsExamples(t *testing.T) {
	b, err := os.ReadFile("../docs/rules.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for rest := string(b); ; {
		_, after, ok := strings.Cut(rest, "```sql\n")
		if !ok {
			break
		}
		sql, tail, _ := strings.Cut(after, "```")
		rest = tail
		if strings.Contains(sql, "<field>") { // the grammar, not an example
			continue
		}
		blocks = append(blocks, sql)
	}
	if len(blocks) < 10 {
		t.Fatalf("%d SQL examples found in docs/rules.md", len(blocks))
	}
	for _, sql := range blocks {
		if _, err := Parse(sql); err != nil {
			t.Errorf("docs/rules.md example does not parse: %v\n%s", err, sql)
		}
	}
	cases := []struct{ sql, topic, payload, want string }{
		{`SELECT round(payload.raw * 0.1 * 1.8 + 32, 1) AS temp_f FROM "modbus/+/temp"`, "modbus/d1/temp", `{"raw": 215}`, `{"temp_f":70.7}`},
		{`SELECT CASE WHEN payload.v > 90 THEN 'high' WHEN payload.v < 10 THEN 'low' ELSE 'ok' END AS level,
       topic(2) AS device
FROM "boiler/+/temp"
WHERE topic(2) IN ('b1', 'b2', 'b3')`, "boiler/b2/temp", `{"v": 95}`, `{"device":"b2","level":"high"}`},
		{`SELECT payload.site.name AS site, payload.values[1] AS first, nth(2, payload.values) AS second
FROM "plant/#"`, "plant/a", `{"site": {"name": "north"}, "values": [4, 5, 6]}`, `{"first":4,"second":5,"site":"north"}`},
		{`SELECT upper(topic(2)) AS device, concat(payload.unit, '/', str(payload.v)) AS label,
       regex_replace(payload.serial, '[^0-9]', '') AS serial
FROM "meters/+"
WHERE regex_match(payload.serial, '^SN-')`, "meters/m7", `{"unit": "kWh", "v": 12.5, "serial": "SN-00-42"}`, `{"device":"M7","label":"kWh/12.5","serial":"0042"}`},
		{`SELECT float(payload) * 2 AS double FROM "raw/+/v"`, "raw/s1/v", `23.5`, `{"double":47}`},
	}
	for _, c := range cases {
		if !strings.Contains(string(b), c.sql) {
			t.Errorf("not in docs/rules.md:\n%s", c.sql)
		}
		rows, err := Test(c.sql, c.topic, []byte(c.payload), "gw1")
		if err != nil {
			t.Errorf("%s: %v", c.sql, err)
			continue
		}
		if len(rows) != 1 {
			t.Errorf("%s: %d outputs", c.sql, len(rows))
			continue
		}
		got, _ := EncodeRow(rows[0])
		if string(got) != c.want {
			t.Errorf("%s:\ngot  %s\nwant %s", c.sql, got, c.want)
		}
	}
}
