package web

import (
	"testing"
)

// TestRuleTestEndpoint runs rules on sample messages through POST
// /api/v1/rules/test: the outputs of a rule, none when WHERE refuses, and
// each kind of mistake as a 400 naming its field (and, in the SQL, its
// line and column).
func TestRuleTestEndpoint(t *testing.T) {
	h := start(t, testConfig(), nil)
	c := h.setUp()
	tests := []struct {
		name      string
		body      map[string]string
		code      int
		outputs   []map[string]any
		field     string
		line, col float64
	}{
		{name: "threshold passes",
			body: map[string]string{"sql": "SELECT payload.v AS t, topic, gateway_id AS gw\nFROM \"southbound/boiler/temp\"\nWHERE payload.v > 80", "topic": "southbound/boiler/temp", "payload": `{"v": 90.5}`},
			code: 200, outputs: []map[string]any{{"t": 90.5, "topic": "southbound/boiler/temp", "gw": "plant-7"}}},
		{name: "threshold refuses",
			body: map[string]string{"sql": "SELECT payload.v AS t FROM \"t/#\" WHERE payload.v > 80", "topic": "t/1", "payload": `{"v": 20}`},
			code: 200, outputs: []map[string]any{}},
		{name: "foreach makes one output per item",
			body: map[string]string{"sql": `FOREACH payload.list DO item.x AS x INCASE item.x > 1 FROM "t/#"`, "topic": "t/1", "payload": `{"list": [{"x": 1}, {"x": 2}, {"x": 3}]}`},
			code: 200, outputs: []map[string]any{{"x": 2.0}, {"x": 3.0}}},
		{name: "unknown function at its position",
			body: map[string]string{"sql": "SELECT payload.v AS t,\n  avgg(payload.v) AS a\nFROM \"t/#\"", "topic": "t/1", "payload": `{"v": 1}`},
			code: 400, field: "sql", line: 2, col: 3},
		{name: "syntax error at its position",
			body: map[string]string{"sql": "SELECT payload.v\nFROM \"t/#\"\nWHERE payload.v >", "topic": "t/1", "payload": `{"v": 1}`},
			code: 400, field: "sql", line: 3},
		{name: "topic outside FROM",
			body: map[string]string{"sql": `SELECT * FROM "t/#"`, "topic": "other/1", "payload": "x"},
			code: 400, field: "topic"},
		{name: "wildcard topic",
			body: map[string]string{"sql": `SELECT * FROM "t/#"`, "topic": "t/+", "payload": "x"},
			code: 400, field: "topic"},
		{name: "no SQL",
			body: map[string]string{"sql": " ", "topic": "t/1"},
			code: 400, field: "sql"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, _ := c.do("POST", "/api/v1/rules/test", tt.body)
			if code != tt.code {
				t.Fatalf("code %d, want %d: %v", code, tt.code, body)
			}
			if tt.code == 200 {
				outs, _ := body["outputs"].([]any)
				if len(outs) != len(tt.outputs) {
					t.Fatalf("outputs %v, want %v", body["outputs"], tt.outputs)
				}
				for i, want := range tt.outputs {
					got := outs[i].(map[string]any)
					for k, v := range want {
						if got[k] != v {
							t.Errorf("output %d: %s = %v, want %v (%v)", i, k, got[k], v, got)
						}
					}
				}
				return
			}
			fields, _ := body["fields"].([]any)
			if len(fields) != 1 || fields[0].(map[string]any)["field"] != tt.field {
				t.Fatalf("fields %v, want one on %q", body["fields"], tt.field)
			}
			if tt.line != 0 && body["line"] != tt.line {
				t.Errorf("line %v, want %v: %v", body["line"], tt.line, body["error"])
			}
			if tt.col != 0 && body["col"] != tt.col {
				t.Errorf("col %v, want %v: %v", body["col"], tt.col, body["error"])
			}
		})
	}
}

// TestRuleTestNeedsCSRF: the test endpoint is a change route like the
// others (admin scope, CSRF token with a session).
func TestRuleTestNeedsCSRF(t *testing.T) {
	h := start(t, testConfig(), nil)
	c := h.setUp()
	c.csrf = ""
	code, body, _ := c.do("POST", "/api/v1/rules/test", map[string]string{"sql": `SELECT * FROM "t/#"`, "topic": "t/1"})
	if code != 403 {
		t.Fatalf("without CSRF: %d %v, want 403", code, body)
	}
}

// TestRulesSectionAndStats saves rules through PUT /api/v1/config/rules
// (as the page does), refuses a bad one with its path and position, and
// shows the rules' counters in GET /api/v1/status.
func TestRulesSectionAndStats(t *testing.T) {
	h := start(t, testConfig(), nil)
	c := h.setUp()
	good := []map[string]any{{"id": "hot", "enabled": true, "sql": `SELECT payload.v AS t FROM "t/#" WHERE payload.v > 80`,
		"actions": []map[string]any{{"republish": map[string]any{"topic": "alarms/${topic}", "qos": 1}}, {"log": map[string]any{}}}}}
	if code, body, _ := c.do("PUT", "/api/v1/config/rules", good); code != 200 {
		t.Fatalf("PUT rules: %d %v", code, body)
	}
	bad := []map[string]any{{"id": "hot", "enabled": true, "sql": "SELECT payload.v AS t\nFROM \"t/#\" WHERE avgg(payload.v) > 1", "actions": []map[string]any{{"log": map[string]any{}}}}}
	code, body, _ := c.do("PUT", "/api/v1/config/rules", bad)
	if code != 400 {
		t.Fatalf("PUT bad rule: %d %v, want 400", code, body)
	}
	fields, _ := body["fields"].([]any)
	if len(fields) == 0 || fields[0].(map[string]any)["field"] != "rules[0].sql" {
		t.Fatalf("bad rule fields %v, want rules[0].sql", body["fields"])
	}
	if msg, _ := fields[0].(map[string]any)["error"].(string); !sqlPos.MatchString(msg) {
		t.Fatalf("bad rule error %q has no position", msg)
	}
	_, st, _ := c.do("GET", "/api/v1/status", nil)
	rs, _ := st["rules"].(map[string]any)
	list, _ := rs["rules"].([]any)
	acts, _ := rs["actions"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["id"] != "hot" || len(acts) != 2 {
		t.Fatalf("status rules %v, want rule hot with two actions", st["rules"])
	}
}
