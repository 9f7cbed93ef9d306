package rules

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fieldgate/fieldgate/bus"
)

// goldenCase is one file of testdata/golden: a rule, the messages it gets
// (at offsets from a window-aligned t0) and the outputs it must produce, in
// order.
type goldenCase struct {
	Source string `yaml:"source"`
	SQL    string `yaml:"sql"`
	Input  []struct {
		Topic    string        `yaml:"topic"`
		Payload  string        `yaml:"payload"`
		QoS      byte          `yaml:"qos"`
		ClientID string        `yaml:"clientid"`
		At       time.Duration `yaml:"at"`
	} `yaml:"input"`
	// Flush closes the windows that ended by t0+Flush after the input.
	Flush  time.Duration `yaml:"flush"`
	Output []any         `yaml:"output"`
}

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/golden/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var c goldenCase
			if err := yaml.Unmarshal(data, &c); err != nil {
				t.Fatal(err)
			}
			q, err := Parse(c.SQL)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			now := t0
			p := compile(q, "gw1", 0, func() time.Time { return now })
			var got []any
			add := func(outs []output) {
				for _, o := range outs {
					got = append(got, roundTrip(t, o.row))
				}
			}
			for _, in := range c.Input {
				now = t0.Add(in.At)
				if !matchesAny(q.From, in.Topic) {
					continue
				}
				outs, _, err := p.process(bus.Message{Topic: in.Topic, Payload: []byte(in.Payload), QoS: in.QoS, Origin: in.ClientID, Time: now}, "")
				if err != nil {
					t.Fatalf("process %s %s: %v", in.Topic, in.Payload, err)
				}
				add(outs)
			}
			if c.Flush > 0 {
				add(p.tick(t0.Add(c.Flush)))
			}
			want := roundTrip(t, c.Output)
			if want == nil {
				want = []any{}
			}
			if got == nil {
				got = []any{}
			}
			if !reflect.DeepEqual(got, want) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(want)
				t.Fatalf("outputs differ\n got: %s\nwant: %s", g, w)
			}
		})
	}
}

func matchesAny(filters []string, topic string) bool {
	for _, f := range filters {
		if bus.Match(f, topic) {
			return true
		}
	}
	return false
}

// roundTrip normalises a value through JSON (numbers become float64).
func roundTrip(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode %v: %v", v, err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
