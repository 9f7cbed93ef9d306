package serial

import (
	"errors"
	"strings"
	"testing"
)

func TestRegexParse(t *testing.T) {
	p, err := newRegexParser(
		`^T=(?P<temp>\S+) H=(?P<hum>\S+) P=(?P<press>\S+) ALARM=(?P<alarm>\S+) ID=(?P<id>\S+)(?: FW=(?P<fw>\S+))?$`,
		[]Field{
			{Name: "temp"}, // float by default
			{Name: "hum", Type: TypeFloat, Scale: 0.1},
			{Name: "press", Type: TypeInt, Scale: 10, Offset: -3},
			{Name: "alarm", Type: TypeBool},
			{Name: "id", Type: TypeString},
			// fw is not listed: a string
		})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		line string
		want map[string]any
	}{
		{
			"T=21.5 H=455 P=1013 ALARM=off ID=abc FW=1.2",
			map[string]any{"temp": 21.5, "hum": 45.5, "press": int64(10127), "alarm": false, "id": "abc", "fw": "1.2"},
		},
		{
			// The optional group did not take part: no fw field.
			"T=-4 H=1000 P=+7 ALARM=YES ID=007",
			map[string]any{"temp": -4.0, "hum": 100.0, "press": int64(67), "alarm": true, "id": "007"},
		},
		{
			// 217 × 0.1 is 21.700000000000003 in float64: published as 21.7.
			"T=1 H=217 P=1 ALARM=0 ID=x",
			map[string]any{"temp": 1.0, "hum": 21.7, "press": int64(7), "alarm": false, "id": "x"},
		},
	}
	for _, tt := range tests {
		got, err := p.parse(tt.line)
		if err != nil {
			t.Errorf("parse(%q): %v", tt.line, err)
			continue
		}
		if !equalFields(got, tt.want) {
			t.Errorf("parse(%q)\n got %#v\nwant %#v", tt.line, got, tt.want)
		}
	}
}

func TestRegexRefused(t *testing.T) {
	p, err := newRegexParser(`^(?P<f>\S+) (?P<i>\S+) (?P<b>\S+)$`, []Field{
		{Name: "f", Type: TypeFloat, Scale: 1e300},
		{Name: "i", Type: TypeInt, Scale: 1e10},
		{Name: "b", Type: TypeBool},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		line, msg string
	}{
		{"no match", "does not match"},
		{"x 1 true", `field f: "x" is not a finite number`},
		{"NaN 1 true", "field f"},
		{"Inf 1 true", "field f"},
		{"1e10 1 true", "field f: \"1e10\" scaled is out of range"},
		{"1 1.5 true", `field i: "1.5" is not a decimal integer`},
		{"1 0x10 true", "field i"},
		{"1 99999999999 true", "field i: \"99999999999\" scaled is out of the integer range"},
		{"1 99999999999999999999 true", "field i"},
		{"1 1 maybe", "field b"},
	}
	for _, tt := range tests {
		got, err := p.parse(tt.line)
		if err == nil {
			t.Errorf("parse(%q) = %v, want an error", tt.line, got)
			continue
		}
		if !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("parse(%q) error %q, want it to mention %q", tt.line, err, tt.msg)
		}
	}
	if _, err := p.parse("nope"); !errors.Is(err, errNoMatch) {
		t.Errorf("no match: error %v, want errNoMatch", err)
	}
}

func TestNewRegexParserErrors(t *testing.T) {
	if _, err := newRegexParser(`(`, nil); err == nil {
		t.Error("bad regex accepted")
	}
	if _, err := newRegexParser(`(\d+)`, nil); err == nil {
		t.Error("regex without named groups accepted")
	}
	if _, err := newRegexParser(`(?P<a>\d+)`, []Field{{Name: "b"}}); err == nil {
		t.Error("field that is not a group accepted")
	}
}
