package modbus

import (
	"encoding/csv"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/fieldgate/fieldgate/southbound/tagfile"
)

// A device's points travel as CSV ("tags", as Kepware, Neuron and the
// other gateways a technician knows call them), one row per point:
//
//	name,address,data_type,byte_order,scale,offset,unit,access,group,description,deadband
//	voltage,30001,FLOAT32,ABCD,1,0,V,RO,default,Line to neutral voltage,0.5
//
// address is the Modicon reference the device manual prints (40001 is
// holding register 0; 6 digits reach 65536), with ".N" for bit N of a
// register (40001.3 is a BIT); data_type is ours (INT16, FLOAT32, STRING(10)
// for 10 registers) or Kepware's (Short, Word, Long, DWord, Float, Double,
// LLong, QWord, Boolean, String); access is RO or RW. Only name, address
// and data_type are required; a ';' separated file (as spreadsheets write
// in countries with a decimal comma) and decimal commas are accepted.

// TagColumns are the CSV columns, in the order ExportTags writes them.
var TagColumns = []string{"name", "address", "data_type", "byte_order", "scale", "offset", "unit", "access", "group", "description", "deadband"}

// A RowError is one problem of an imported CSV file (tagfile.RowError).
type RowError = tagfile.RowError

// An ImportResult is what an import found: the points of the rows without
// errors (Lines[i] is the line of Points[i]) and every row's problems.
type ImportResult struct {
	Points []Point
	Lines  []int
	Errors []RowError
}

// ErrTagFile is wrapped by the errors that refuse a whole file (too big,
// not CSV, no usable header).
var ErrTagFile = tagfile.ErrRefused

// kepwareTypes maps the data type names of Kepware exports to ours.
var kepwareTypes = map[string]string{
	"BOOLEAN": TypeBool, "SHORT": TypeInt16, "WORD": TypeUint16, "LONG": TypeInt32,
	"DWORD": TypeUint32, "FLOAT": TypeFloat32, "DOUBLE": TypeFloat64,
	"LLONG": TypeInt64, "QWORD": TypeUint64, "STRING": TypeString,
}

var stringType = regexp.MustCompile(`^STRING\s*\(\s*(\d{1,4})\s*\)$`)

// ImportTags parses a tag CSV file. The file is refused as a whole (an
// error wrapping ErrTagFile) when it is over 1 MiB or 10,000 rows, is not
// CSV or lacks a required column; otherwise every row is parsed on its own
// and its problems are listed by line, so that the good rows can be
// applied. The points are not yet validated against a device: see
// CheckTags.
func ImportTags(r io.Reader) (ImportResult, error) {
	var res ImportResult
	cols := tagfile.Columns{Known: TagColumns, Ignored: nil, Required: []string{"name", "address", "data_type"}}
	err := tagfile.Read(r, cols, func(line int, cell func(string) string) {
		p, errs := parseTagRow(cell)
		for _, e := range errs {
			e.Line = line
			res.Errors = append(res.Errors, e)
		}
		if len(errs) == 0 {
			res.Points = append(res.Points, p)
			res.Lines = append(res.Lines, line)
		}
	})
	if err != nil {
		return ImportResult{}, err
	}
	return res, nil
}

// parseTagRow turns one row's cells into a point.
func parseTagRow(cell func(string) string) (Point, []RowError) {
	var errs []RowError
	bad := func(column, format string, args ...any) {
		errs = append(errs, RowError{Column: column, Err: fmt.Sprintf(format, args...)})
	}
	p := Point{Name: cell("name"), Unit: cell("unit"), Group: cell("group"), Description: cell("description")}
	if p.Name == "" {
		bad("name", "every point needs a name")
	}

	addr := cell("address")
	ref, bit, hasBit := strings.Cut(addr, ".")
	switch reg, a, err := ParseRef(ref); {
	case addr == "":
		bad("address", "every point needs an address, e.g. 40001")
	case err != nil:
		bad("address", "%v", err)
	default:
		p.Register, p.Address = reg, a
	}

	typ := strings.ToUpper(cell("data_type"))
	if m := stringType.FindStringSubmatch(typ); m != nil {
		typ = TypeString
		p.Length, _ = strconv.Atoi(m[1])
	} else if k, ok := kepwareTypes[typ]; ok {
		typ = k
	}
	switch {
	case typ == "":
		bad("data_type", "every point needs a data type, e.g. INT16 or FLOAT32")
	case hasBit:
		n, err := strconv.Atoi(bit)
		if err != nil || n < 0 || n > 15 {
			bad("address", "the bit after the dot must be 0 to 15, got %q", bit)
		}
		if typ != TypeBool && typ != TypeBit {
			bad("data_type", "a bit address (%s) holds a BIT, not %s", addr, typ)
		}
		p.Type, p.Bit = TypeBit, n
	default:
		p.Type = typ
		if p.Type == TypeBool && (p.Register == RegHolding || p.Register == RegInput) {
			p.Type = TypeBit // bit 0 of the register
		}
	}
	if p.Type == TypeString && p.Length == 0 {
		bad("data_type", "a STRING needs its length in registers, e.g. STRING(10)")
	}

	p.ByteOrder = strings.ToUpper(cell("byte_order"))
	p.Scale = number(cell("scale"), "scale", bad)
	p.Offset = number(cell("offset"), "offset", bad)
	p.Deadband = number(cell("deadband"), "deadband", bad)
	switch strings.ToUpper(strings.ReplaceAll(cell("access"), " ", "")) {
	case "", "RO", "R", "READONLY", "READ":
	case "RW", "R/W", "W", "READ/WRITE", "READWRITE", "WRITE":
		p.Writable = true
	default:
		bad("access", "must be RO (read only) or RW (read/write), got %q", cell("access"))
	}
	return p, errs
}

// number parses a number cell; a decimal comma is accepted ("0,1").
func number(s, column string, bad func(string, string, ...any)) float64 {
	if s == "" {
		return 0
	}
	if strings.Count(s, ",") == 1 && !strings.Contains(s, ".") {
		s = strings.Replace(s, ",", ".", 1)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		bad(column, "must be a number, got %q", s)
		return 0
	}
	return f
}

// CheckTags checks imported points as the points of device d (which gives
// the poll groups, the line and the limits of c): the problems of each
// point are added to res.Errors by line, and the points without problems
// are returned; the errors are in line order. Names that repeat a point of the file are reported on the
// later line.
func CheckTags(c Config, d Device, res ImportResult) ([]Point, []RowError) {
	errs := append([]RowError(nil), res.Errors...)
	var ok []Point
	seen := map[string]int{}
	for i, p := range res.Points {
		line := res.Lines[i]
		if first, dup := seen[p.Name]; dup {
			errs = append(errs, RowError{Line: line, Column: "name", Err: fmt.Sprintf("%q is already the name of line %d", p.Name, first)})
			continue
		}
		one := d
		one.Points = []Point{p}
		cc := c
		cc.Devices = []Device{one}
		cc.Templates = nil
		cc = cc.withDefaults()
		var v validator
		cc.validateDevice(&v, "", cc.Devices[0])
		if err := v.Err(); err != nil {
			for _, e := range strings.Split(err.Error(), "\n") {
				field, msg, _ := strings.Cut(e, ": ")
				errs = append(errs, RowError{Line: line, Column: tagColumn(field), Err: msg})
			}
			continue
		}
		seen[p.Name] = line
		ok = append(ok, p)
	}
	slices.SortStableFunc(errs, func(a, b RowError) int { return a.Line - b.Line })
	return ok, errs
}

// tagColumn names the CSV column of a validation error's field path
// (".points[0].byte_order" → "byte_order").
func tagColumn(field string) string {
	_, f, _ := strings.Cut(field, "].")
	switch f {
	case "register", "address", "bit", "ref":
		return "address"
	case "type", "length":
		return "data_type"
	case "writable", "read_back":
		return "access"
	case "name", "byte_order", "scale", "offset", "unit", "group", "description", "deadband":
		return f
	}
	return ""
}

// ExportTags writes the points of d as a tag CSV file that ImportTags reads
// back to the same points.
func ExportTags(w io.Writer, d Device) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(TagColumns); err != nil {
		return fmt.Errorf("export tags: %w", err)
	}
	for _, p := range d.Points {
		addr := FormatRef(p.Register, p.Address)
		typ := p.Type
		switch {
		case typ == TypeBit || (typ == TypeBool && (p.Register == RegHolding || p.Register == RegInput)):
			addr += "." + strconv.Itoa(p.Bit)
			typ = TypeBit
		case typ == TypeString:
			typ = fmt.Sprintf("STRING(%d)", p.Length)
		}
		access := "RO"
		if p.Writable {
			access = "RW"
		}
		row := []string{p.Name, addr, typ, p.ByteOrder, fmtNum(p.Scale), fmtNum(p.Offset), p.Unit, access, p.Group, p.Description, fmtNum(p.Deadband)}
		if err := cw.Write(row); err != nil {
			return fmt.Errorf("export tags: %w", err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("export tags: %w", err)
	}
	return nil
}

func fmtNum(f float64) string {
	if f == 0 {
		return ""
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// TagTemplateCSV is the file offered as a template to fill in: the header
// and three example rows.
const TagTemplateCSV = `name,address,data_type,byte_order,scale,offset,unit,access,group,description,deadband
temperature,30001,INT16,ABCD,0.1,,°C,RO,default,Boiler temperature,0.2
setpoint,40011,FLOAT32,ABCD,,,°C,RW,default,Temperature setpoint,
pump_running,10001,BOOL,,,,,RO,default,Pump running feedback,
`
