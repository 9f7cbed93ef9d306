package opcua

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/southbound/tagfile"
)

func TestImportExportTags(t *testing.T) {
	in := "\xef\xbb\xbfname;address;data_type;scale;offset;unit;access;description;deadband;deadband_type;decimals;sampling_interval;mode;byte_order;group\n" +
		"temp;ns=2;s=Press4.Temp;Double;;;°C;RO;Press temperature;0,2;;;;;\n" // ';' separated: the NodeId's ';' needs quotes
	res, err := ImportTags(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Errors) == 0 {
		t.Error("an unquoted NodeId in a ';' file should not parse silently")
	}

	in = `name,address,data_type,scale,offset,unit,access,description,deadband,deadband_type,decimals,sampling_interval,mode
temp,"ns=2;s=Press4.Temp",Double,,,°C,RO,Press temperature,0.2,absolute,,,
setpoint,"ns=2;s=Press4.Setpoint",FLOAT32,0.1,-5,°C,RW,,,,1,500ms,poll
level,2:Tank/2:Level,,,,%,RW,,10,percent,,250,

bad1,,Double,,,,RO,,,,,,
bad2,"ns=x;i=1",Quux,abc,,,maybe,,,,99,soon,
`
	res, err = ImportTags(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	two := 1
	want := []Point{
		{Name: "temp", Node: "ns=2;s=Press4.Temp", Type: "Double", Unit: "°C", Description: "Press temperature", Deadband: 0.2, DeadbandType: "absolute"},
		{Name: "setpoint", Node: "ns=2;s=Press4.Setpoint", Type: "Float", Scale: 0.1, Offset: -5, Unit: "°C", Writable: true, Decimals: &two, SamplingInterval: 500 * time.Millisecond, Mode: "poll"},
		{Name: "level", BrowsePath: "2:Tank/2:Level", Unit: "%", Writable: true, Deadband: 10, DeadbandType: "percent", SamplingInterval: 250 * time.Millisecond},
	}
	if !reflect.DeepEqual(res.Points, want) {
		t.Errorf("points:\n%+v\nwant\n%+v", res.Points, want)
	}
	if !reflect.DeepEqual(res.Lines, []int{2, 3, 4}) {
		t.Errorf("lines = %v", res.Lines)
	}
	cols := map[string]bool{}
	for _, e := range res.Errors {
		cols[e.Column] = true
		if e.Line != 6 && e.Line != 7 {
			t.Errorf("error on line %d: %v", e.Line, e)
		}
	}
	for _, c := range []string{"address", "data_type", "scale", "access", "decimals", "sampling_interval"} {
		if !cols[c] {
			t.Errorf("no error for column %s: %v", c, res.Errors)
		}
	}

	// Export reads back to the same points.
	var buf bytes.Buffer
	if err := ExportTags(&buf, Server{Points: want}); err != nil {
		t.Fatal(err)
	}
	again, err := ImportTags(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again.Points, want) || len(again.Errors) > 0 {
		t.Errorf("round trip:\n%+v\n%v", again.Points, again.Errors)
	}
	tmpl, err := ImportTags(strings.NewReader(TagTemplateCSV))
	if err != nil || len(tmpl.Errors) > 0 || len(tmpl.Points) != 3 {
		t.Errorf("template: %v %v", err, tmpl.Errors)
	}
}

func TestImportTagsRefused(t *testing.T) {
	for _, in := range []string{
		"",
		"name,register\nx,1\n",
		"name,data_type\nx,Double\n",
		"name,address,name\n",
		"name,address\n\"x,1\n",
		strings.Repeat("x", tagfile.MaxBytes+1),
	} {
		if _, err := ImportTags(strings.NewReader(in)); !errors.Is(err, ErrTagFile) {
			t.Errorf("%.40q: err = %v", in, err)
		}
	}
}

func TestCheckTags(t *testing.T) {
	res, err := ImportTags(strings.NewReader(`name,address,deadband,deadband_type,mode
a,i=2258,,,
a,i=2259,,,
status,i=2259,,,
p,i=2259,150,percent,
q,i=2259,5,percent,poll
`))
	if err != nil {
		t.Fatal(err)
	}
	ok, errs := CheckTags(DefaultConfig(), Server{Name: "plc", Endpoint: "opc.tcp://127.0.0.1:4840"}, res)
	if len(ok) != 1 || ok[0].Name != "a" {
		t.Errorf("ok = %+v", ok)
	}
	want := []RowError{
		{Line: 3, Column: "name", Err: `"a" is already the name of line 2`},
		{Line: 4, Column: "name", Err: `"status" is reserved for a topic of its own`},
		{Line: 5, Column: "deadband", Err: "a percent deadband must be between 0 and 100, got 150"},
		{Line: 6, Column: "deadband_type", Err: "a percent deadband needs mode subscribe (the server applies it)"},
	}
	if !reflect.DeepEqual(errs, want) {
		t.Errorf("errors:\n%+v\nwant\n%+v", errs, want)
	}
}

// FuzzImportTags feeds arbitrary files to the tag import: it never
// panics, and every point it accepts exports and imports back the same.
func FuzzImportTags(f *testing.F) {
	f.Add(TagTemplateCSV)
	f.Add("name,address\nx,\"ns=1;i=5\"\n")
	f.Add("name;address;scale\nx;2:a/2:b;0,5\n")
	f.Add("name,address,decimals,sampling_interval\nx,i=1,3,1s\n")
	f.Fuzz(func(t *testing.T, in string) {
		res, err := ImportTags(strings.NewReader(in))
		if err != nil {
			return
		}
		if len(res.Points) != len(res.Lines) {
			t.Fatalf("%d points, %d lines", len(res.Points), len(res.Lines))
		}
		var buf bytes.Buffer
		if err := ExportTags(&buf, Server{Points: res.Points}); err != nil {
			t.Fatal(err)
		}
		again, err := ImportTags(&buf)
		if err != nil {
			t.Fatalf("export does not import: %v\n%s", err, buf.String())
		}
		if len(again.Points) != len(res.Points) {
			t.Fatalf("%d points export and import as %d: %v\n%s", len(res.Points), len(again.Points), again.Errors, buf.String())
		}
	})
}
