package setcmd

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in, id, v string
		expires   int64
		err       string
	}{
		{in: `21.5`, v: `21.5`},
		{in: ` true `, v: `true`},
		{in: `"on"`, v: `"on"`},
		{in: `{"id":"a1","v":7,"expires":1700000000000}`, id: `"a1"`, v: `7`, expires: 1700000000000},
		{in: `{"id":3,"v":[1,2]}`, id: `3`, v: `[1,2]`},
		{in: `{"id":"x"}`, id: `"x"`, err: `has no "v"`},
		{in: `{"id":"x","v":1,"expires":1.5}`, id: `"x"`, err: "not milliseconds"},
		{in: `{"v":`, err: "bad command object"},
		{in: `1 2`, err: "data after the JSON value"},
		{in: ``, err: "not a JSON value"},
	} {
		id, v, expires, err := Parse([]byte(c.in))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want %q", c.in, err, c.err)
			}
		} else if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if string(id) != c.id {
			t.Errorf("%q: id %s, want %s", c.in, id, c.id)
		}
		if c.err == "" {
			got, _ := json.Marshal(v)
			if string(got) != c.v || expires != c.expires {
				t.Errorf("%q: v %s expires %d, want %s %d", c.in, got, expires, c.v, c.expires)
			}
		}
	}
}

func TestCheckExpiry(t *testing.T) {
	now := time.UnixMilli(1_700_000_010_000)
	if err := CheckExpiry(now, 0, time.Time{}, 0); err != nil {
		t.Fatal(err)
	}
	if err := CheckExpiry(now, 1_700_000_000_000, time.Time{}, 0); err == nil || !strings.Contains(err.Error(), "10000 ms ago") {
		t.Fatalf("past expires: %v", err)
	}
	if err := CheckExpiry(now, 1_700_000_020_000, now.Add(-3*time.Second), 2*time.Second); err == nil {
		t.Fatal("past the message expiry interval accepted")
	}
	if err := CheckExpiry(now, 1_700_000_020_000, now.Add(-time.Second), 2*time.Second); err != nil {
		t.Fatal(err)
	}
}

// FuzzParse: a set payload comes from any MQTT client the ACL lets write.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`21.5`, `{"id":"a","v":1,"expires":1}`, `{"v":{"a":[1,"x",null]}}`, `{"id":`, `"\u00e9"`, `1e400`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		id, v, _, err := Parse(data)
		if err != nil {
			return
		}
		if id != nil && !json.Valid(id) {
			t.Fatalf("id %q is not JSON", id)
		}
		if _, err := json.Marshal(v); err != nil {
			t.Fatalf("accepted value does not marshal: %v", err)
		}
	})
}
