package modbus

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/bus"
)

func csvDevice() Device {
	return Device{Name: "plc", TCP: &TCP{Address: "127.0.0.1:502"}}
}

// TestImportTags200: the case: 200 points, two bad rows reported
// by line number, the other 198 applied.
func TestImportTags200(t *testing.T) {
	var b strings.Builder
	b.WriteString("name,address,data_type,byte_order,scale,offset,unit,access,group,description,deadband\n")
	for i := 0; i < 200; i++ {
		switch i {
		case 57: // line 59: a FLOAT32 on a coil
			fmt.Fprintf(&b, "p%d,%05d,FLOAT32,,,,,RO,,coil as a float,\n", i, 1+i)
		case 142: // line 144: no name
			fmt.Fprintf(&b, ",%d,INT16,,,,,,,,\n", 40001+2*i)
		default:
			fmt.Fprintf(&b, "p%d,%d,FLOAT32,ABCD,\"0,1\",,°C,RO,,point %d,0.5\n", i, 40001+2*i, i)
		}
	}
	res, err := ImportTags(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	ok, errs := CheckTags(DefaultConfig(), csvDevice(), res)
	if len(ok) != 198 {
		t.Errorf("%d points applied, want 198", len(ok))
	}
	want := []RowError{
		{Line: 59, Column: "data_type", Err: "a coil holds one bit: type must be BOOL (or BIT), got FLOAT32"},
		{Line: 144, Column: "name", Err: "every point needs a name"},
	}
	slices.SortFunc(errs, func(a, b RowError) int { return a.Line - b.Line })
	if !slices.Equal(errs, want) {
		t.Fatalf("errors:\n got %v\nwant %v", errs, want)
	}
	if p := ok[1]; p.Name != "p1" || p.Register != RegHolding || p.Address != 2 || p.Scale != 0.1 || p.Unit != "°C" || p.Deadband != 0.5 || p.Description != "point 1" {
		t.Errorf("row 3 = %+v", p)
	}
}

// TestImportTagsForms: Kepware's types, bit addresses, strings, ';' files
// with decimal commas, access words, a UTF-8 mark.
func TestImportTagsForms(t *testing.T) {
	in := "\xef\xbb\xbfName;Address;Data Type;Scale;Access\n" +
		"a;400001;Short;0,5;Read/Write\n" +
		"b;40002.7;Boolean;;RO\n" +
		"c;30010;Float;;\n" +
		"d;40100;STRING(8);;R/W\n" +
		"e;00017;Boolean;;RW\n" +
		";;;;\n" // a blank row is skipped
	res, err := ImportTags(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	ok, errs := CheckTags(DefaultConfig(), csvDevice(), res)
	if len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	want := []Point{
		{Name: "a", Register: RegHolding, Address: 0, Type: TypeInt16, Scale: 0.5, Writable: true},
		{Name: "b", Register: RegHolding, Address: 1, Type: TypeBit, Bit: 7},
		{Name: "c", Register: RegInput, Address: 9, Type: TypeFloat32},
		{Name: "d", Register: RegHolding, Address: 99, Type: TypeString, Length: 8, Writable: true},
		{Name: "e", Register: RegCoil, Address: 16, Type: TypeBool, Writable: true},
	}
	if !slices.Equal(ok, want) {
		t.Fatalf("points:\n got %+v\nwant %+v", ok, want)
	}
}

// TestImportTagsRowErrors: each bad cell is reported with its line and
// column, in words, and the good rows survive.
func TestImportTagsRowErrors(t *testing.T) {
	in := `name,address,data_type,byte_order,scale,access
ok,40001,INT16,,,
addr,50001,INT16,,,
bit,40001.16,BIT,,,
bittype,40001.2,FLOAT32,,,
str,40001,STRING,,,
scale,40001,INT16,,abc,
access,40001,INT16,,,maybe
order,40001,INT16,XYZW,,
ro,30001,INT16,,,RW
ok,40002,INT16,,,
`
	res, err := ImportTags(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	ok, errs := CheckTags(DefaultConfig(), csvDevice(), res)
	if len(ok) != 1 || ok[0].Name != "ok" {
		t.Errorf("kept %+v, want only the first ok", ok)
	}
	want := map[int]string{
		3:  "address: reference \"50001\": the first digit names the table",
		4:  "address: the bit after the dot must be 0 to 15",
		5:  "data_type: a bit address (40001.2) holds a BIT, not FLOAT32",
		6:  "data_type: a STRING needs its length in registers",
		7:  "scale: must be a number, got \"abc\"",
		8:  "access: must be RO (read only) or RW (read/write)",
		9:  "byte_order: must be one of ABCD",
		10: "access: input registers are read-only",
		11: "name: \"ok\" is already the name of line 2",
	}
	got := map[int]string{}
	for _, e := range errs {
		got[e.Line] = e.Column + ": " + e.Err
	}
	for line, w := range want {
		if !strings.HasPrefix(got[line], w) {
			t.Errorf("line %d: got %q, want %q", line, got[line], w)
		}
	}
	if len(errs) != len(want) {
		t.Errorf("%d errors, want %d: %v", len(errs), len(want), errs)
	}
}

// TestImportTagsFileRefused: a file that is not a tag list is refused as a
// whole with a clear reason.
func TestImportTagsFileRefused(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"empty", "", "no header line"},
		{"unknown column", "name,address,data_type,colour\n", `unknown column "colour"`},
		{"no address", "name,data_type\n", "lacks the address column"},
		{"twice", "name,address,data_type,Name\n", `column "Name" twice`},
		{"bad quote", "name,address,data_type\n\"a,40001,INT16\n", "line 2"},
		{"too big", "name,address,data_type\n" + strings.Repeat("a,40001,INT16\n", 80000), "over 1048576 bytes"},
		{"too many rows", "name,address,data_type\n" + strings.Repeat(",,\n", 10001), "over 10000 rows"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ImportTags(strings.NewReader(tt.in))
			if !errors.Is(err, ErrTagFile) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

// TestExportImportRoundTrip: what is exported imports back to the same
// points, and the downloadable template imports without errors.
func TestExportImportRoundTrip(t *testing.T) {
	d := csvDevice()
	d.Points = []Point{
		{Name: "f", Register: RegHolding, Address: 0, Type: TypeFloat32, ByteOrder: OrderCDAB, Scale: 0.1, Offset: -40, Unit: "°C", Description: "with, a comma", Deadband: 0.2},
		{Name: "bit", Register: RegHolding, Address: 9999, Type: TypeBit, Bit: 3, ByteOrder: OrderABCD, Scale: 1},
		{Name: "s", Register: RegInput, Address: 65535, Type: TypeString, Length: 1, ByteOrder: OrderBADC, Scale: 1},
		{Name: "relay", Register: RegCoil, Address: 4, Type: TypeBool, ByteOrder: OrderABCD, Scale: 1, Writable: true},
	}
	var buf bytes.Buffer
	if err := ExportTags(&buf, d); err != nil {
		t.Fatal(err)
	}
	res, err := ImportTags(&buf)
	if err != nil {
		t.Fatal(err)
	}
	ok, errs := CheckTags(DefaultConfig(), d, res)
	if len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	for i := range ok {
		if ok[i].Scale == 0 {
			ok[i].Scale = 1
		}
		if ok[i].ByteOrder == "" {
			ok[i].ByteOrder = OrderABCD
		}
	}
	if !slices.Equal(ok, d.Points) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", ok, d.Points)
	}

	res, err = ImportTags(strings.NewReader(TagTemplateCSV))
	if err != nil {
		t.Fatal(err)
	}
	if ok, errs := CheckTags(DefaultConfig(), csvDevice(), res); len(errs) != 0 || len(ok) != 3 {
		t.Fatalf("the template: %d points, errors %v", len(ok), errs)
	}
}

// FuzzImportTags: no input panics, and what is imported without errors
// exports and imports back to the same points.
func FuzzImportTags(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/tags/*.csv")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(TagTemplateCSV))
	f.Fuzz(func(t *testing.T, in []byte) {
		res, err := ImportTags(bytes.NewReader(in))
		if err != nil {
			return
		}
		ok, _ := CheckTags(DefaultConfig(), csvDevice(), res)
		d := csvDevice()
		d.Points = ok
		d = Config{Devices: []Device{d}}.withDefaults().Devices[0]
		var buf bytes.Buffer
		if err := ExportTags(&buf, d); err != nil {
			t.Fatal(err)
		}
		back, err := ImportTags(&buf)
		if err != nil {
			t.Fatalf("export of %d points does not import: %v", len(ok), err)
		}
		again, errs := CheckTags(DefaultConfig(), csvDevice(), back)
		if len(errs) != 0 || len(again) != len(ok) {
			t.Fatalf("round trip: %d of %d points, errors %v", len(again), len(ok), errs)
		}
	})
}

// TestBuiltinTemplates: every shipped template makes a valid device, on TCP
// and on a serial line.
func TestBuiltinTemplates(t *testing.T) {
	ts, err := BuiltinTemplates()
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) < 2 {
		t.Fatalf("%d built-in templates", len(ts))
	}
	for _, tpl := range ts {
		if tpl.Source == "" || tpl.Description == "" {
			t.Errorf("%s: no source or description", tpl.Name)
		}
		for _, at := range []Endpoint{{Host: "10.0.0.5", UnitID: -1}, {Port: "/dev/ttyUSB0", UnitID: 7}} {
			d, err := tpl.NewDevice("dev1", at)
			if err != nil {
				t.Fatal(err)
			}
			if err := (Config{Devices: []Device{d}}).Validate(); err != nil {
				t.Errorf("%s at %+v: %v", tpl.Name, at, err)
			}
		}
	}
	if _, err := ts[0].NewDevice("x", Endpoint{UnitID: -1}); err == nil {
		t.Error("a device with no endpoint")
	}
}

// TestUserTemplates: a saved template is validated like a device's points,
// and may not take a built-in's name.
func TestUserTemplates(t *testing.T) {
	d := csvDevice()
	d.Points = []Point{{Name: "t", Ref: "30001", Type: TypeFloat32}}
	good := TemplateFrom("my-meter", d)
	if good.TCPPort != 502 || len(good.Points) != 1 {
		t.Fatalf("TemplateFrom = %+v", good)
	}
	c := Config{Templates: []Template{good}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := good
	bad.Name = "eastron-sdm120"
	bad.Points = []Point{{Name: "t", Register: RegCoil, Type: TypeFloat32}}
	err := Config{Templates: []Template{good, bad, good}}.Validate()
	for _, w := range []string{
		`templates[1].name: "eastron-sdm120" is the name of a built-in template`,
		"templates[1].points[0].type: a coil holds one bit",
		`templates[2].name: "my-meter" is already the name of templates[0]`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in %v", w, err)
		}
	}
}

// TestTemplateDeviceReads: a device made from the SDM120 template reads a
// slave that holds the meter's registers, and publishes the values.
func TestTemplateDeviceReads(t *testing.T) {
	bk := newBank()
	f32reg := func(addr uint16, v float32) {
		var b [4]byte
		u := math.Float32bits(v)
		b[0], b[1], b[2], b[3] = byte(u>>24), byte(u>>16), byte(u>>8), byte(u)
		bk.setBytes(bk.input, addr, b[:])
	}
	for a := uint16(0); a < 0x160; a += 2 {
		f32reg(a, 0)
	}
	f32reg(0x0000, 230.1) // voltage
	f32reg(0x000c, 1234.5)
	f32reg(0x0046, 49.98)
	f32reg(0x0156, 10234.7)
	slave := startTCPSlave(t, bk, "")

	ts, err := BuiltinTemplates()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(ts, func(t Template) bool { return t.Name == "eastron-sdm120" })
	d, err := ts[i].NewDevice("meter", Endpoint{Host: slave.addr, UnitID: -1})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Devices = []Device{d}
	b := bus.NewMemory(nil)
	rec := record(t, b, "southbound/meter/#")
	s := newService(t, cfg, b, Options{Now: func() time.Time { return fixedNow }})
	runService(t, s)
	msgs := rec.waitFor(t, "the meter's values", 5*time.Second, func(m []bus.Message) bool {
		return count(m, "southbound/meter/total_energy") > 0 && count(m, "southbound/meter/voltage") > 0
	})
	for topic, v := range map[string]string{
		"southbound/meter/voltage":      `"v":230.1,`,
		"southbound/meter/active_power": `"v":1234.5,`,
		"southbound/meter/frequency":    `"v":49.98,`,
		"southbound/meter/total_energy": `"v":10234.7,`,
	} {
		m, ok := last(msgs, topic)
		if !ok || !strings.Contains(string(m.Payload), v) {
			t.Errorf("%s = %s, want %s", topic, m.Payload, v)
		}
	}
	st := s.Stats()[0]
	if st.RoundTripP50 <= 0 || st.RoundTripP99 < st.RoundTripP50 || st.Requests == 0 {
		t.Errorf("stats: %d requests, round trip p50 %v p99 %v", st.Requests, st.RoundTripP50, st.RoundTripP99)
	}
}
