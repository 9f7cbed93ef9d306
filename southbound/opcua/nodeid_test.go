package opcua

import (
	"testing"

	"github.com/gopcua/opcua/ua"
)

func TestParseNodeID(t *testing.T) {
	good := []struct{ in, want string }{
		{"ns=2;s=Boiler.Temp", "ns=2;s=Boiler.Temp"},
		{"ns=3;i=1001", "ns=3;i=1001"},
		{"i=85", "i=85"},
		{"s=x;y=z", "s=x;y=z"},
		{"ns=65535;i=4294967295", "ns=65535;i=4294967295"},
		{"ns=1;g=72962b91-fa75-4ae6-8d28-b404dc7daf63", "ns=1;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63"},
		{"ns=1;b=AAH+/w==", "ns=1;b=AAH+/w=="},
		{"ns=2;s=with spaces and ünïcode", "ns=2;s=with spaces and ünïcode"},
	}
	for _, c := range good {
		id, err := ParseNodeID(c.in)
		if err != nil {
			t.Errorf("ParseNodeID(%q): %v", c.in, err)
			continue
		}
		if got := formatNodeID(id); got != c.want {
			t.Errorf("ParseNodeID(%q) = %s, want %s", c.in, got, c.want)
		}
		again, err := ParseNodeID(formatNodeID(id))
		if err != nil || !again.Equal(id) {
			t.Errorf("%q does not read back: %v", c.in, err)
		}
	}
	bad := []string{"", "ns=2", "ns=2;", "ns=x;i=1", "ns=65536;i=1", "ns=-1;i=1", "ns=+1;i=1", "i=", "i=-1",
		"i=4294967296", "i=+5", "s=", "g=xyz", "g=72962b91fa754ae68d28b404dc7daf63", "b=!!", "b=", "x=1",
		"nsu=urn:x;s=a", "svr=1;i=1", "Boiler.Temp", "ns=2;S=a", "\xff"}
	for _, in := range bad {
		if id, err := ParseNodeID(in); err == nil {
			t.Errorf("ParseNodeID(%q) = %v, want an error", in, id)
		}
	}
}

func TestParseBrowsePath(t *testing.T) {
	got, err := ParseBrowsePath("/2:Boiler/Objects/3:a&/b&:c&&d/2:x:y")
	if err != nil {
		t.Fatal(err)
	}
	want := []ua.QualifiedName{{NamespaceIndex: 2, Name: "Boiler"}, {Name: "Objects"}, {NamespaceIndex: 3, Name: "a/b:c&d"}, {NamespaceIndex: 2, Name: "x:y"}}
	if len(got) != len(want) {
		t.Fatalf("got %d elements, want %d", len(got), len(want))
	}
	for i := range want {
		if *got[i] != want[i] {
			t.Errorf("element %d = %+v, want %+v", i, *got[i], want[i])
		}
	}
	if s := formatBrowseName(got[2]); s != "3:a&/b&:c&&d" {
		t.Errorf("formatBrowseName = %q", s)
	}
	for _, in := range []string{"", "/", "2:a//b", "x:a", "2:", "a&", "70000:a", "2:a/"} {
		if _, err := ParseBrowsePath(in); err == nil {
			t.Errorf("ParseBrowsePath(%q): want an error", in)
		}
	}
}

func FuzzParseNodeID(f *testing.F) {
	for _, s := range []string{"ns=2;s=Boiler.Temp", "ns=3;i=1001", "i=85", "ns=1;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63", "ns=1;b=AAH+/w==", "ns=;i=", "s=a;b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseNodeID(s)
		if err != nil {
			return
		}
		again, err := ParseNodeID(formatNodeID(id))
		if err != nil {
			t.Fatalf("%q formats as %q, which does not parse: %v", s, formatNodeID(id), err)
		}
		if !again.Equal(id) {
			t.Fatalf("%q: %s does not read back", s, formatNodeID(id))
		}
		if _, err := id.Encode(); err != nil {
			t.Fatalf("%q does not encode: %v", s, err)
		}
	})
}

func FuzzParseBrowsePath(f *testing.F) {
	for _, s := range []string{"2:Boiler/2:Temp", "/Objects/3:a&/b", "1:Test/1:Tree", "&", "2:/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		names, err := ParseBrowsePath(s)
		if err != nil {
			return
		}
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = formatBrowseName(n)
		}
		again, err := ParseBrowsePath(joinPath(parts))
		if err != nil || len(again) != len(names) {
			t.Fatalf("%q does not read back: %v", s, err)
		}
		for i := range names {
			if *again[i] != *names[i] {
				t.Fatalf("%q: element %d %+v reads back as %+v", s, i, *names[i], *again[i])
			}
		}
	})
}

func joinPath(parts []string) string {
	s := ""
	for i, p := range parts {
		if i > 0 {
			s += "/"
		}
		s += p
	}
	return s
}
