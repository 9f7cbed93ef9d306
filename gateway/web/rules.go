package web

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/fieldgate/fieldgate/rules"
)

// ruleTestRequest is the body of POST /api/v1/rules/test: a rule's SQL and
// one sample message.
type ruleTestRequest struct {
	SQL     string `json:"sql"`
	Topic   string `json:"topic"`
	Payload string `json:"payload"`
}

// ruleTestError is the 400 answer of a rule test: the error, the field it
// belongs to (sql or topic) and, for an error in the SQL, its position.
type ruleTestError struct {
	Error  string       `json:"error"`
	Fields []FieldError `json:"fields"`
	Line   int          `json:"line,omitempty"`
	Col    int          `json:"col,omitempty"`
}

// sqlPos finds "line L, col C" in a rules error (rules.Pos.String).
var sqlPos = regexp.MustCompile(`line (\d+), col (\d+)`)

// testRule runs a rule's SQL on one sample message, as the page's test
// panel does, and returns each output; nothing is published. An error
// (in the SQL, in its evaluation, a topic FROM does not match) is a 400
// with the field and, when it has one, the position in the SQL.
func (s *Server) testRule(w http.ResponseWriter, r *http.Request) {
	var req ruleTestRequest
	if !readJSON(w, r, &req) {
		return
	}
	if strings.TrimSpace(req.SQL) == "" {
		writeJSON(w, http.StatusBadRequest, ruleTestError{Error: "invalid rule test", Fields: []FieldError{{Field: "sql", Error: "required"}}})
		return
	}
	if req.Topic == "" {
		writeJSON(w, http.StatusBadRequest, ruleTestError{Error: "invalid rule test", Fields: []FieldError{{Field: "topic", Error: "required"}}})
		return
	}
	gw := s.b.Config().Gateway.ID
	if s.opts.GatewayID != nil {
		gw = s.opts.GatewayID()
	}
	rows, err := rules.Test(req.SQL, req.Topic, []byte(req.Payload), gw)
	if err == nil {
		var data []byte
		if rows == nil {
			rows = []rules.Row{}
		}
		if data, err = json.Marshal(rows); err == nil {
			writeJSON(w, http.StatusOK, map[string]json.RawMessage{"outputs": data})
			return
		}
	}
	msg := strings.TrimPrefix(err.Error(), "rules: test: ")
	out := ruleTestError{Error: msg}
	field := "sql"
	if m := sqlPos.FindStringSubmatch(msg); m != nil {
		out.Line, _ = strconv.Atoi(m[1])
		out.Col, _ = strconv.Atoi(m[2])
	} else if strings.Contains(msg, "is not a topic name") || strings.Contains(msg, "matches none of FROM") {
		field = "topic"
	}
	out.Fields = []FieldError{{Field: field, Error: msg}}
	writeJSON(w, http.StatusBadRequest, out)
}
