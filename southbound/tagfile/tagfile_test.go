package tagfile

import (
	"errors"
	"strings"
	"testing"
)

var cols = Columns{Known: []string{"name", "address", "unit"}, Ignored: []string{"group"}, Required: []string{"name", "address"}}

func TestRead(t *testing.T) {
	in := "\xef\xbb\xbfName;Address;Group\n\"a\";40001;x\n;;\n b ;40002\n"
	var got []string
	err := Read(strings.NewReader(in), cols, func(line int, cell func(string) string) {
		got = append(got, strings.Join([]string{cell("name"), cell("address"), cell("unit"), cell("group")}, "|")+"@"+string(rune('0'+line)))
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "a|40001||x@2 b|40002||@4"; strings.Join(got, " ") != want {
		t.Fatalf("rows %q, want %q", strings.Join(got, " "), want)
	}
}

func TestReadRefuses(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"name,address,colour\n", `unknown column "colour"`},
		{"name,name,address\n", "twice"},
		{"name,unit\n", "lacks the address column"},
		{"", "no header line"},
		{"name,address\n\"a,1\n", "line 2"},
		{strings.Repeat("x", MaxBytes+1), "over"},
		{"name,address\n" + strings.Repeat("a,1\n", MaxRows+1), "over 10000 rows"},
	} {
		err := Read(strings.NewReader(c.in), cols, func(int, func(string) string) {})
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.40q: %v, want %q", c.in, err, c.want)
		}
	}
}

// FuzzRead: a tag file is uploaded from the page.
func FuzzRead(f *testing.F) {
	f.Add("name,address,unit\na,1,V\n")
	f.Add("name;address\n\"x\"\"y\";2\n\n")
	f.Fuzz(func(t *testing.T, in string) {
		last := 1
		_ = Read(strings.NewReader(in), cols, func(line int, cell func(string) string) {
			if line <= last {
				t.Fatalf("line %d after %d", line, last)
			}
			last = line
			_ = cell("name") + cell("nope")
		})
	})
}
