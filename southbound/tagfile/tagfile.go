// Package tagfile reads the CSV tag files of the southbound drivers (one
// row per point, as Kepware, Neuron and the other gateways a technician
// knows export them): the file's limits, its header, a spreadsheet's UTF-8
// mark, ';' separated files, blank rows, and every row's line number. What
// a row means is the driver's (southbound/modbus, southbound/opcua: their
// tagcsv.go).
package tagfile

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Limits of one file.
const (
	MaxBytes = 1 << 20
	MaxRows  = 10000
)

// ErrRefused is wrapped by the errors that refuse a whole file (too big,
// not CSV, no usable header).
var ErrRefused = errors.New("tag file refused")

// A RowError is one problem of a row: its line in the file (the header is
// line 1), the column at fault (empty for the whole row) and what is wrong,
// in words.
type RowError struct {
	Line   int    `json:"line"`
	Column string `json:"column,omitempty"`
	Err    string `json:"error"`
}

// Error is "line N, column: what is wrong".
func (e RowError) Error() string {
	if e.Column == "" {
		return fmt.Sprintf("line %d: %s", e.Line, e.Err)
	}
	return fmt.Sprintf("line %d, %s: %s", e.Line, e.Column, e.Err)
}

// Columns says which header names a file may have: Known are the driver's
// columns (listed in the error for an unknown one), Ignored are accepted
// and not read, Required must be there.
type Columns struct {
	Known, Ignored, Required []string
}

// Read reads a tag file from r and calls row for every row that is not
// blank, with its line and a cell function that gives a column's trimmed
// value ("" when the row or the file lacks it). Header names are compared
// in lower case with spaces as '_'. The file is refused as a whole, with an
// error wrapping ErrRefused, when it is over MaxBytes or MaxRows, is not
// CSV, or its header has an unknown or repeated column or lacks a required
// one; row problems are the caller's to collect.
func Read(r io.Reader, cols Columns, row func(line int, cell func(column string) string)) error {
	data, err := io.ReadAll(io.LimitReader(r, MaxBytes+1))
	if err != nil {
		return fmt.Errorf("%w: read: %v", ErrRefused, err)
	}
	if len(data) > MaxBytes {
		return fmt.Errorf("%w: over %d bytes", ErrRefused, MaxBytes)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a spreadsheet's UTF-8 mark
	cr := csv.NewReader(bytes.NewReader(data))
	cr.Comma = delimiter(data)
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if err != nil {
		return fmt.Errorf("%w: no header line: %v", ErrRefused, err)
	}
	col := map[string]int{}
	for i, h := range header {
		name := strings.ReplaceAll(strings.ToLower(strings.TrimSpace(h)), " ", "_")
		if !slices.Contains(cols.Known, name) && !slices.Contains(cols.Ignored, name) {
			return fmt.Errorf("%w: unknown column %q (the columns are %s)", ErrRefused, h, strings.Join(cols.Known, ", "))
		}
		if _, dup := col[name]; dup {
			return fmt.Errorf("%w: column %q twice", ErrRefused, h)
		}
		col[name] = i
	}
	for _, need := range cols.Required {
		if _, ok := col[need]; !ok {
			return fmt.Errorf("%w: the header lacks the %s column", ErrRefused, need)
		}
	}
	rows := 0
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return fmt.Errorf("%w: line %d: %v", ErrRefused, pe.StartLine, pe.Err)
			}
			return fmt.Errorf("%w: %v", ErrRefused, err)
		}
		line, _ := cr.FieldPos(0)
		if rows++; rows > MaxRows {
			return fmt.Errorf("%w: over %d rows", ErrRefused, MaxRows)
		}
		if blank(rec) {
			continue
		}
		row(line, func(name string) string {
			if i, ok := col[name]; ok && i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		})
	}
}

// delimiter picks ';' for a file whose header line has semicolons and no
// commas (as spreadsheets write in countries with a decimal comma), else ','.
func delimiter(data []byte) rune {
	first, _, _ := bytes.Cut(data, []byte("\n"))
	if bytes.Contains(first, []byte(";")) && !bytes.Contains(first, []byte(",")) {
		return ';'
	}
	return ','
}

func blank(rec []string) bool {
	for _, f := range rec {
		if strings.TrimSpace(f) != "" {
			return false
		}
	}
	return true
}
