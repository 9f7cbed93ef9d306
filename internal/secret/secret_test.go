package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"unicode"

	"go.yaml.in/yaml/v3"
)

const clearValue = "hunter2-clear-value"

// holder is a config-like struct with a secret in it.
type holder struct {
	Name string `yaml:"name" json:"name"`
	Key  String `yaml:"key" json:"key"`
}

// TestNeverShown checks every way of showing a secret: fmt verbs, slog
// (text and JSON, as a value and inside a struct), JSON, YAML and text
// encoding.
func TestNeverShown(t *testing.T) {
	s := New(clearValue)
	h := holder{Name: "x", Key: s}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10s", "%-10v"} {
		out = append(out, fmt.Sprintf(verb, s), fmt.Sprintf(verb, h), fmt.Sprintf(verb, &h), fmt.Sprintf(verb, []String{s}))
	}
	out = append(out, fmt.Sprint(s, h), fmt.Sprintln(s, h), s.String(), s.GoString())
	var logs bytes.Buffer
	for _, l := range []*slog.Logger{slog.New(slog.NewTextHandler(&logs, nil)), slog.New(slog.NewJSONHandler(&logs, nil))} {
		l.Info("config", "key", s, "holder", h, "ptr", &h, slog.Any("any", s))
		l.With("key", s).Info("with")
		l.WithGroup("g").Info("group", "holder", h)
	}
	out = append(out, logs.String())
	for _, v := range []any{s, h, &h, []holder{h}, map[string]String{"k": s}} {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		y, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(j), string(y))
	}
	txt, _ := s.MarshalText()
	out = append(out, string(txt))
	all := strings.Join(out, "\n")
	if strings.Contains(all, clearValue) || strings.Contains(all, fmt.Sprintf("%x", clearValue)) {
		t.Fatalf("clearValue value shown:\n%s", all)
	}
	if !strings.Contains(all, Redacted) {
		t.Fatalf("no %s in:\n%s", Redacted, all)
	}
	if s.Reveal() != clearValue {
		t.Fatalf("Reveal: %q", s.Reveal())
	}
}

// TestEmptyShowsEmpty: an unset secret shows as "" (it tells only that it
// is not set), so the page can say "not set".
func TestEmptyShowsEmpty(t *testing.T) {
	var s String
	if !s.IsZero() || s.String() != "" || fmt.Sprint(s) != "" {
		t.Fatalf("empty secret shown as %q", s.String())
	}
	j, _ := json.Marshal(s)
	if string(j) != `""` {
		t.Fatalf("json: %s", j)
	}
}

// TestDecode: the clearValue value decodes from YAML and JSON; Redacted decodes
// to a Kept placeholder, which shows as Redacted and reveals nothing.
func TestDecode(t *testing.T) {
	tests := []struct {
		name, yaml, json string
		want             string
		kept             bool
	}{
		{"clearValue", "key: " + clearValue, `{"key":"` + clearValue + `"}`, clearValue, false},
		{"redacted", "key: <redacted>", `{"key":"<redacted>"}`, "", true},
		{"quoted redacted", `key: "<redacted>"`, `{"key":"<redacted>"}`, "", true},
		{"empty", `key: ""`, `{"key":""}`, "", false},
		{"number", "key: 1234", `{"key":"1234"}`, "1234", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hy, hj holder
			if err := yaml.Unmarshal([]byte(tc.yaml), &hy); err != nil {
				t.Fatalf("yaml: %v", err)
			}
			if err := json.Unmarshal([]byte(tc.json), &hj); err != nil {
				t.Fatalf("json: %v", err)
			}
			for _, h := range []holder{hy, hj} {
				if h.Key.Reveal() != tc.want || h.Key.Kept() != tc.kept {
					t.Errorf("got %q kept=%v, want %q kept=%v", h.Key.Reveal(), h.Key.Kept(), tc.want, tc.kept)
				}
			}
			if hy != hj {
				t.Errorf("yaml and json differ")
			}
		})
	}
	var h holder
	if err := json.Unmarshal([]byte(`{"key": 5}`), &h); err == nil {
		t.Fatal("a JSON number was taken as a secret")
	}
	if err := yaml.Unmarshal([]byte("key: [a, b]"), &h); err == nil {
		t.Fatal("a YAML list was taken as a secret")
	}
}

// FuzzDecode: any JSON or YAML value decodes without panic, and whatever
// decodes never shows its clear value.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"key":"abc"}`, `{"key":"<redacted>"}`, `{"key":""}`, "key: abc", "key: <redacted>", "key: [1]", "key: !!binary aGk=", `{"key":"\u003credacted\u003e"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, decode := range []func([]byte, any) error{json.Unmarshal, yaml.Unmarshal} {
			var h holder
			if decode(data, &h) != nil || h.Key.IsZero() {
				continue
			}
			v := h.Key.Reveal()
			if h.Key.Kept() != (v == "") {
				t.Fatalf("kept=%v with value %q", h.Key.Kept(), v)
			}
			j, _ := json.Marshal(h)
			y, _ := yaml.Marshal(h)
			shown := fmt.Sprintf("%v %+v %s %q", h, h, h.Key, h.Key) + string(j) + string(y)
			// What may be shown: the marker (JSON escapes its < and >) and
			// the field names, around punctuation.
			rest := strings.NewReplacer(`\u003credacted\u003e`, " ", Redacted, " ", "Name", " ", "name", " ", "Key", " ", "key", " ").Replace(shown)
			if strings.ContainsFunc(v, unicode.IsLetter) || strings.ContainsFunc(v, unicode.IsDigit) {
				if strings.Contains(rest, v) {
					t.Fatalf("clear value %q shown: %s", v, shown)
				}
			}
		}
	})
}
