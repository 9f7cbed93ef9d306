package opcua

import (
	"encoding/csv"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/southbound/tagfile"
)

// A server's points travel as CSV in the format of the Modbus tag files
// (southbound/modbus, ImportTags), one row per point:
//
//	name,address,data_type,scale,offset,unit,access,description,deadband,deadband_type,decimals,sampling_interval,mode
//	temp,ns=2;s=Press4.Temp,Double,,,°C,RO,Press temperature,0.2,,,,
//	level,2:Tank/2:Level,,,,%,RO,,,,1,500ms,poll
//
// address is the point's NodeId (ns=2;s=…, ns=3;i=1001, g=, b=) or its
// browse path from Objects (2:Tank/2:Level); data_type is optional, an OPC
// UA built-in type name (Double, Int32, …) or a Modbus or Kepware name
// (FLOAT32, Short, …); access is RO or RW. The Modbus columns byte_order and
// group are accepted and ignored, so a Modbus file's header reads here too.
// Only name and address are required; ';' separated files and decimal
// commas are accepted.

// TagColumns are the CSV columns, in the order ExportTags writes them.
var TagColumns = []string{"name", "address", "data_type", "scale", "offset", "unit", "access", "description", "deadband", "deadband_type", "decimals", "sampling_interval", "mode"}

// ignoredColumns are Modbus columns accepted on import and ignored.
var ignoredColumns = []string{"byte_order", "group"}

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

// otherTypes maps Modbus and Kepware data type names to OPC UA's.
var otherTypes = map[string]string{
	"BOOL": "Boolean", "BIT": "Boolean", "INT16": "Int16", "UINT16": "UInt16", "INT32": "Int32",
	"UINT32": "UInt32", "INT64": "Int64", "UINT64": "UInt64", "FLOAT32": "Float", "FLOAT64": "Double",
	"SHORT": "Int16", "WORD": "UInt16", "LONG": "Int32", "DWORD": "UInt32", "LLONG": "Int64",
	"QWORD": "UInt64", "CHAR": "SByte", "DATE": "DateTime",
}

// ImportTags parses a tag CSV file. The file is refused as a whole (an
// error wrapping ErrTagFile) when it is over 1 MiB or 10,000 rows, is not
// CSV or lacks a required column; otherwise every row is parsed on its own
// and its problems are listed by line. The points are not yet validated
// against a server: see CheckTags.
func ImportTags(r io.Reader) (ImportResult, error) {
	var res ImportResult
	cols := tagfile.Columns{Known: TagColumns, Ignored: ignoredColumns, Required: []string{"name", "address"}}
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

// isNodeIDForm reports whether an address is meant as a NodeId rather than
// a browse path.
func isNodeIDForm(s string) bool {
	if strings.HasPrefix(s, "ns=") || strings.HasPrefix(s, "nsu=") {
		return true
	}
	return len(s) >= 2 && s[1] == '=' && strings.ContainsRune("isgb", rune(s[0]))
}

// parseTagRow turns one row's cells into a point.
func parseTagRow(cell func(string) string) (Point, []RowError) {
	var errs []RowError
	bad := func(column, format string, args ...any) {
		errs = append(errs, RowError{Column: column, Err: fmt.Sprintf(format, args...)})
	}
	p := Point{Name: cell("name"), Unit: cell("unit"), Description: cell("description")}
	if p.Name == "" {
		bad("name", "every point needs a name")
	}
	addr := cell("address")
	switch {
	case addr == "":
		bad("address", "every point needs an address: a NodeId (ns=2;s=Boiler.Temp) or a browse path (2:Boiler/2:Temp)")
	case isNodeIDForm(addr):
		if _, err := ParseNodeID(addr); err != nil {
			bad("address", "%v", err)
		}
		p.Node = addr
	default:
		if _, err := ParseBrowsePath(addr); err != nil {
			bad("address", "%v", err)
		}
		p.BrowsePath = addr
	}
	if typ := cell("data_type"); typ != "" {
		if b, ok := typeByName(typ); ok {
			p.Type = b.name
		} else if t, ok := otherTypes[strings.ToUpper(typ)]; ok {
			p.Type = t
		} else if strings.HasPrefix(strings.ToUpper(typ), "STRING") {
			p.Type = "String"
		} else {
			bad("data_type", "%q is not an OPC UA built-in type (e.g. Double, Int32, Boolean, String)", typ)
		}
	}
	p.Scale = number(cell("scale"), "scale", bad)
	p.Offset = number(cell("offset"), "offset", bad)
	p.Deadband = number(cell("deadband"), "deadband", bad)
	p.DeadbandType = strings.ToLower(cell("deadband_type"))
	if d := cell("decimals"); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 || n > maxDecimals {
			bad("decimals", "must be a whole number from 0 to %d, got %q", maxDecimals, d)
		} else {
			p.Decimals = &n
		}
	}
	if si := cell("sampling_interval"); si != "" {
		d, err := parseDuration(si)
		if err != nil {
			bad("sampling_interval", "must be a duration like 500ms or 2s (or milliseconds), got %q", si)
		}
		p.SamplingInterval = d
	}
	p.Mode = strings.ToLower(cell("mode"))
	switch strings.ToUpper(strings.ReplaceAll(cell("access"), " ", "")) {
	case "", "RO", "R", "READONLY", "READ":
	case "RW", "R/W", "W", "READ/WRITE", "READWRITE", "WRITE":
		p.Writable = true
	default:
		bad("access", "must be RO (read only) or RW (read/write), got %q", cell("access"))
	}
	return p, errs
}

// parseDuration reads a Go duration or a number of milliseconds.
func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return time.Duration(n) * time.Millisecond, nil
	}
	return time.ParseDuration(s)
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
	if err != nil || !finite(f) {
		bad(column, "must be a number, got %q", s)
		return 0
	}
	return f
}

// CheckTags checks imported points as points of server s (of section c):
// the problems of each point are added to res.Errors by line, and the
// points without problems are returned; the errors are in line order.
// Names that repeat a point of the file are reported on the later line.
func CheckTags(c Config, s Server, res ImportResult) ([]Point, []RowError) {
	errs := append([]RowError(nil), res.Errors...)
	var ok []Point
	seen := map[string]int{}
	for i, p := range res.Points {
		line := res.Lines[i]
		if first, dup := seen[p.Name]; dup {
			errs = append(errs, RowError{Line: line, Column: "name", Err: fmt.Sprintf("%q is already the name of line %d", p.Name, first)})
			continue
		}
		one := s
		one.Points = []Point{p}
		one = one.withDefaults()
		var v validator
		v.name(".points[0].name", p.Name)
		v.point(".points[0]", one.Points[0])
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

// tagColumn names the CSV column of a validation error's field path.
func tagColumn(field string) string {
	_, f, _ := strings.Cut(field, "].")
	switch f {
	case "node", "browse_path":
		return "address"
	case "type":
		return "data_type"
	case "writable":
		return "access"
	case "name", "scale", "offset", "unit", "description", "deadband", "deadband_type", "decimals", "sampling_interval", "mode":
		return f
	}
	return ""
}

// ExportTags writes the points of s as a tag CSV file that ImportTags
// reads back to the same points.
func ExportTags(w io.Writer, s Server) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(TagColumns); err != nil {
		return fmt.Errorf("export tags: %w", err)
	}
	for _, p := range s.Points {
		addr := p.Node
		if addr == "" {
			addr = p.BrowsePath
		}
		access := "RO"
		if p.Writable {
			access = "RW"
		}
		dec := ""
		if p.Decimals != nil {
			dec = strconv.Itoa(*p.Decimals)
		}
		si := ""
		if p.SamplingInterval > 0 {
			si = p.SamplingInterval.String()
		}
		scale := p.Scale
		if scale == 1 {
			scale = 0
		}
		row := []string{p.Name, addr, p.Type, fmtNum(scale), fmtNum(p.Offset), p.Unit, access, p.Description, fmtNum(p.Deadband), p.DeadbandType, dec, si, p.Mode}
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
const TagTemplateCSV = `name,address,data_type,scale,offset,unit,access,description,deadband,deadband_type,decimals,sampling_interval,mode
temp,ns=2;s=Press4.Temp,Double,,,°C,RO,Press temperature,0.2,absolute,,,
setpoint,ns=2;s=Press4.Setpoint,Double,,,°C,RW,Temperature setpoint,,,,,
level,2:Tank/2:Level,Float,,,%,RO,Tank level,,,1,500ms,poll
`
