package opcua

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"
)

// Values travel as JSON as follows (docs/southbound.md repeats it):
//
//   - Boolean: true/false. SByte…UInt64: a JSON number, also for Int64 and
//     UInt64 (exact in the JSON text; a reader that decodes numbers as
//     float64 loses digits beyond 2^53, as with Modbus INT64).
//   - Float: the shortest decimal that reads back to the same 32 bits
//     (21.3, not 21.299999237060547); Double as encoding/json writes it.
//     With scale, offset or decimals a number becomes a float, rounded to
//     15 significant digits (or to decimals places) so that no binary
//     noise shows. NaN and infinities have no JSON form: the value is
//     published as bad with the status "NaN" or "Infinity".
//   - String, XmlElement: a string. LocalizedText: its text. Guid: its
//     upper-case 8-4-4-4-12 form. NodeId: its ns=…;x=… form. QualifiedName:
//     "ns:Name". StatusCode: its name (BadOutOfRange).
//   - DateTime: an RFC 3339 string in UTC with milliseconds
//     ("2026-12-06T02:30:00.123Z"); the OPC UA minimum date is null.
//   - ByteString: standard base64.
//   - Arrays (and matrices): JSON arrays of the above.
//   - A structure (ExtensionObject) the client library decodes: a JSON
//     object of its fields; one it does not: null, published as bad.

// conv is a point's value conversion, built from its config.
type conv struct {
	scale, offset float64
	scaled        bool // scale != 1 or offset != 0
	decimals      int  // places to round a float to; -1: 15 significant digits
}

func newConv(p Point) conv {
	c := conv{scale: p.Scale, offset: p.Offset, decimals: -1}
	if c.scale == 0 {
		c.scale = 1
	}
	c.scaled = c.scale != 1 || c.offset != 0
	if p.Decimals != nil {
		c.decimals = *p.Decimals
	}
	return c
}

// errNotFinite marks a NaN or infinite value.
var errNotFinite = errors.New("not a finite number")

// appendVariant appends v's value as JSON.
func (c conv) appendVariant(b []byte, v *ua.Variant) ([]byte, error) {
	if v == nil {
		return append(b, "null"...), nil
	}
	return c.appendAny(b, v.Type(), v.Value())
}

// appendAny appends one value of built-in type typ (or an array of them).
func (c conv) appendAny(b []byte, typ ua.TypeID, val any) ([]byte, error) {
	switch x := val.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case int8:
		return c.appendInt(b, int64(x)), nil
	case int16:
		return c.appendInt(b, int64(x)), nil
	case int32:
		return c.appendInt(b, int64(x)), nil
	case int64:
		return c.appendInt(b, x), nil
	case uint8:
		return c.appendUint(b, uint64(x)), nil
	case uint16:
		return c.appendUint(b, uint64(x)), nil
	case uint32:
		return c.appendUint(b, uint64(x)), nil
	case uint64:
		return c.appendUint(b, x), nil
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return b, errNotFinite
		}
		f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(x), 'g', -1, 32), 64)
		return c.appendFloat(b, f, true)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return b, errNotFinite
		}
		return c.appendFloat(b, x, c.scaled || c.decimals >= 0)
	case string:
		return appendString(b, x), nil
	case ua.XMLElement:
		return appendString(b, string(x)), nil
	case []byte:
		if typ == ua.TypeIDByteString {
			return appendString(b, base64.StdEncoding.EncodeToString(x)), nil
		}
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = c.appendUint(b, uint64(e))
		}
		return append(b, ']'), nil
	case time.Time:
		if x.IsZero() || x.Year() < 1601 || x.Equal(time.Date(1601, 1, 1, 0, 0, 0, 0, time.UTC)) {
			return append(b, "null"...), nil
		}
		return appendString(b, x.UTC().Format("2006-01-02T15:04:05.000Z07:00")), nil
	case *ua.GUID:
		if x == nil || len(x.Data4) != 8 {
			return append(b, "null"...), nil
		}
		return appendString(b, x.String()), nil
	case *ua.LocalizedText:
		if x == nil {
			return append(b, "null"...), nil
		}
		return appendString(b, x.Text), nil
	case *ua.QualifiedName:
		if x == nil {
			return append(b, "null"...), nil
		}
		return appendString(b, formatBrowseName(x)), nil
	case *ua.NodeID:
		if x == nil {
			return append(b, "null"...), nil
		}
		return appendString(b, formatNodeID(x)), nil
	case *ua.ExpandedNodeID:
		if x == nil || x.NodeID == nil {
			return append(b, "null"...), nil
		}
		return appendString(b, formatNodeID(x.NodeID)), nil
	case ua.StatusCode:
		return appendString(b, statusName(x)), nil
	case *ua.Variant:
		if x == nil {
			return append(b, "null"...), nil
		}
		return c.appendAny(b, x.Type(), x.Value())
	case *ua.DataValue:
		if x == nil || x.Value == nil {
			return append(b, "null"...), nil
		}
		return c.appendAny(b, x.Value.Type(), x.Value.Value())
	case *ua.ExtensionObject:
		if x == nil || x.Value == nil {
			return b, errors.New("structure of a type the client does not know")
		}
		j, err := json.Marshal(x.Value)
		if err != nil {
			return b, fmt.Errorf("structure: %w", err)
		}
		return append(b, j...), nil
	case *ua.DiagnosticInfo:
		return append(b, "null"...), nil
	}
	rv := reflect.ValueOf(val)
	if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
		return b, fmt.Errorf("value of Go type %T has no JSON form", val)
	}
	b = append(b, '[')
	for i := range rv.Len() {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = c.appendAny(b, typ, rv.Index(i).Interface()); err != nil {
			return b, err
		}
	}
	return append(b, ']'), nil
}

func (c conv) appendInt(b []byte, i int64) []byte {
	if !c.scaled {
		return strconv.AppendInt(b, i, 10)
	}
	b, _ = c.appendFloat(b, float64(i), true)
	return b
}

func (c conv) appendUint(b []byte, u uint64) []byte {
	if !c.scaled {
		return strconv.AppendUint(b, u, 10)
	}
	b, _ = c.appendFloat(b, float64(u), true)
	return b
}

// appendFloat appends f*scale+offset, rounded when round is set.
func (c conv) appendFloat(b []byte, f float64, round bool) ([]byte, error) {
	f = f*c.scale + c.offset
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, errNotFinite
	}
	if round {
		f = c.round(f)
	}
	return appendJSONFloat(b, f), nil
}

// round rounds to the point's decimals, or to 15 significant digits.
func (c conv) round(f float64) float64 {
	if c.decimals >= 0 {
		p := math.Pow10(c.decimals)
		if r := math.Round(f*p) / p; !math.IsInf(r, 0) && !math.IsNaN(r) {
			f = r
		}
	}
	r, err := strconv.ParseFloat(strconv.FormatFloat(f, 'g', 15, 64), 64)
	if err != nil {
		return f
	}
	return r
}

// appendJSONFloat appends f as encoding/json writes a float64.
func appendJSONFloat(b []byte, f float64) []byte {
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		n := len(b)
		b = strconv.AppendFloat(b, f, 'e', -1, 64)
		// clean up e-09 to e-9, as encoding/json does
		if m := len(b) - n; m >= 4 && b[len(b)-4] == 'e' && b[len(b)-3] == '-' && b[len(b)-2] == '0' {
			b[len(b)-2] = b[len(b)-1]
			b = b[:len(b)-1]
		}
		return b
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

// appendString appends s as a JSON string, without escaping <, > and &.
func appendString(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// statusName is a status code's name without the "Status" prefix
// (BadOutOfRange), or its hex form when unknown. Info bits are ignored
// in the lookup.
func statusName(sc ua.StatusCode) string {
	if sc == ua.StatusOK {
		return "Good"
	}
	for _, k := range []ua.StatusCode{sc, sc & 0xFFFF0000} {
		if d, ok := ua.StatusCodes[k]; ok && d.Name != "" {
			return strings.TrimPrefix(d.Name, "Status")
		}
	}
	return fmt.Sprintf("0x%08X", uint32(sc))
}

// Status code severity.
func isGood(sc ua.StatusCode) bool      { return sc&0xC0000000 == 0 }
func isUncertain(sc ua.StatusCode) bool { return sc&0xC0000000 == 0x40000000 }

// quality maps a status code to a published quality: Good and Uncertain
// are "good" (Uncertain carries its status), Bad is "bad".
func quality(sc ua.StatusCode) string {
	if isGood(sc) || isUncertain(sc) {
		return QualityGood
	}
	return QualityBad
}

// errTypeMismatch wraps the refusals of a set value of the wrong type.
var errTypeMismatch = errors.New("type mismatch")

// toVariant converts a set command's JSON value (numbers as json.Number)
// to a Variant of the built-in type typ, undoing scale and offset. A JSON
// array makes an array of typ. The errors say in words what is wrong and
// wrap errTypeMismatch.
func (c conv) toVariant(in any, typ builtin) (*ua.Variant, error) {
	if arr, ok := in.([]any); ok {
		return c.toArray(arr, typ)
	}
	v, err := c.toScalar(in, typ)
	if err != nil {
		return nil, err
	}
	return ua.NewVariant(v)
}

// toArray builds a typed slice of typ from a JSON array.
func (c conv) toArray(arr []any, typ builtin) (*ua.Variant, error) {
	if len(arr) > 1<<16 {
		return nil, fmt.Errorf("%w: an array of at most 65536 elements, got %d", errTypeMismatch, len(arr))
	}
	var et reflect.Type
	elems := make([]reflect.Value, len(arr))
	for i, e := range arr {
		if _, nested := e.([]any); nested {
			return nil, fmt.Errorf("%w: nested arrays (matrices) cannot be written", errTypeMismatch)
		}
		v, err := c.toScalar(e, typ)
		if err != nil {
			return nil, fmt.Errorf("element %d: %w", i, err)
		}
		elems[i] = reflect.ValueOf(v)
		et = elems[i].Type()
	}
	if et == nil {
		zero, err := c.toScalar(zeroJSON(typ), typ)
		if err != nil {
			return nil, err
		}
		et = reflect.TypeOf(zero)
	}
	s := reflect.MakeSlice(reflect.SliceOf(et), len(arr), len(arr))
	for i, e := range elems {
		s.Index(i).Set(e)
	}
	return ua.NewVariant(s.Interface())
}

// zeroJSON is a JSON value that converts to typ, to learn its Go type.
func zeroJSON(typ builtin) any {
	switch typ.id {
	case ua.TypeIDBoolean:
		return false
	case ua.TypeIDString, ua.TypeIDLocalizedText, ua.TypeIDXMLElement, ua.TypeIDByteString:
		return ""
	case ua.TypeIDGUID:
		return "00000000-0000-0000-0000-000000000000"
	case ua.TypeIDDateTime:
		return json.Number("0")
	}
	return json.Number("0")
}

// jsonKind names the JSON type of a decoded value, for errors.
func jsonKind(in any) string {
	switch in.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case string:
		return "a text"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", in)
}

// numberOf reads a number from a JSON number or a number typed as text
// ("21,5" with a decimal comma too).
func numberOf(in any, typ builtin) (string, error) {
	switch x := in.(type) {
	case json.Number:
		return string(x), nil
	case string:
		s := strings.TrimSpace(x)
		if strings.Count(s, ",") == 1 && !strings.Contains(s, ".") {
			s = strings.Replace(s, ",", ".", 1)
		}
		if _, err := strconv.ParseFloat(s, 64); err != nil || s == "" || strings.ContainsAny(s, "xXpP_") || strings.Contains(strings.ToLower(s), "inf") || strings.EqualFold(s, "nan") {
			return "", fmt.Errorf("%w: %s needs a number, got the text %q", errTypeMismatch, typ.name, x)
		}
		return s, nil
	}
	return "", fmt.Errorf("%w: %s needs a number, got %s", errTypeMismatch, typ.name, jsonKind(in))
}

// intRanges are the ranges of the integer built-in types.
var intRanges = map[ua.TypeID][2]*big.Int{
	ua.TypeIDSByte:  {big.NewInt(math.MinInt8), big.NewInt(math.MaxInt8)},
	ua.TypeIDByte:   {big.NewInt(0), big.NewInt(math.MaxUint8)},
	ua.TypeIDInt16:  {big.NewInt(math.MinInt16), big.NewInt(math.MaxInt16)},
	ua.TypeIDUint16: {big.NewInt(0), big.NewInt(math.MaxUint16)},
	ua.TypeIDInt32:  {big.NewInt(math.MinInt32), big.NewInt(math.MaxInt32)},
	ua.TypeIDUint32: {big.NewInt(0), big.NewInt(math.MaxUint32)},
	ua.TypeIDInt64:  {big.NewInt(math.MinInt64), big.NewInt(math.MaxInt64)},
	ua.TypeIDUint64: {big.NewInt(0), new(big.Int).SetUint64(math.MaxUint64)},
}

// toScalar converts one JSON value to the Go value of typ.
func (c conv) toScalar(in any, typ builtin) (any, error) {
	switch typ.id {
	case ua.TypeIDBoolean:
		switch x := in.(type) {
		case bool:
			return x, nil
		case json.Number:
			if x == "0" || x == "1" {
				return x == "1", nil
			}
		}
		return nil, fmt.Errorf("%w: Boolean needs true or false, got %s", errTypeMismatch, jsonKind(in))
	case ua.TypeIDSByte, ua.TypeIDByte, ua.TypeIDInt16, ua.TypeIDUint16, ua.TypeIDInt32, ua.TypeIDUint32, ua.TypeIDInt64, ua.TypeIDUint64:
		if b, ok := in.(bool); ok && !c.scaled {
			in = json.Number("0")
			if b {
				in = json.Number("1")
			}
		}
		s, err := numberOf(in, typ)
		if err != nil {
			return nil, err
		}
		n, err := c.rawInteger(s, typ)
		if err != nil {
			return nil, err
		}
		r := intRanges[typ.id]
		if n.Cmp(r[0]) < 0 || n.Cmp(r[1]) > 0 {
			return nil, fmt.Errorf("%w: %s is out of range for %s (%s to %s)", errTypeMismatch, s, typ.name, c.published(r[0]), c.published(r[1]))
		}
		switch typ.id {
		case ua.TypeIDSByte:
			return int8(n.Int64()), nil
		case ua.TypeIDByte:
			return uint8(n.Uint64()), nil
		case ua.TypeIDInt16:
			return int16(n.Int64()), nil
		case ua.TypeIDUint16:
			return uint16(n.Uint64()), nil
		case ua.TypeIDInt32:
			return int32(n.Int64()), nil
		case ua.TypeIDUint32:
			return uint32(n.Uint64()), nil
		case ua.TypeIDInt64:
			return n.Int64(), nil
		default:
			return n.Uint64(), nil
		}
	case ua.TypeIDFloat, ua.TypeIDDouble:
		s, err := numberOf(in, typ)
		if err != nil {
			return nil, err
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %s is out of range for %s", errTypeMismatch, s, typ.name)
		}
		f = (f - c.offset) / c.scale
		if typ.id == ua.TypeIDFloat {
			if math.Abs(f) > math.MaxFloat32 {
				return nil, fmt.Errorf("%w: %s is out of range for Float (±3.4e38)", errTypeMismatch, s)
			}
			return float32(f), nil
		}
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("%w: %s is out of range for Double", errTypeMismatch, s)
		}
		return f, nil
	case ua.TypeIDString, ua.TypeIDLocalizedText, ua.TypeIDXMLElement:
		s, ok := in.(string)
		if !ok {
			return nil, fmt.Errorf("%w: %s needs a text, got %s", errTypeMismatch, typ.name, jsonKind(in))
		}
		switch typ.id {
		case ua.TypeIDLocalizedText:
			return ua.NewLocalizedText(s), nil
		case ua.TypeIDXMLElement:
			return ua.XMLElement(s), nil
		}
		return s, nil
	case ua.TypeIDByteString:
		s, ok := in.(string)
		if !ok {
			return nil, fmt.Errorf("%w: ByteString needs a base64 text, got %s", errTypeMismatch, jsonKind(in))
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: ByteString needs standard base64, got %q", errTypeMismatch, s)
		}
		return b, nil
	case ua.TypeIDGUID:
		s, ok := in.(string)
		if !ok || !guidPattern.MatchString(s) {
			return nil, fmt.Errorf("%w: Guid needs a text like 72962B91-FA75-4AE6-8D28-B404DC7DAF63, got %s", errTypeMismatch, jsonKind(in))
		}
		return ua.NewGUID(s), nil
	case ua.TypeIDDateTime:
		switch x := in.(type) {
		case string:
			t, err := time.Parse(time.RFC3339Nano, x)
			if err != nil {
				return nil, fmt.Errorf("%w: DateTime needs an RFC 3339 text (2026-12-06T02:30:00Z) or milliseconds since 1970, got %q", errTypeMismatch, x)
			}
			return t.UTC(), nil
		case json.Number:
			ms, err := x.Int64()
			if err != nil || ms < -11644473600000 || ms > 253402300799999 {
				return nil, fmt.Errorf("%w: DateTime needs whole milliseconds since 1970 between the years 1601 and 9999, got %s", errTypeMismatch, x)
			}
			return time.UnixMilli(ms).UTC(), nil
		}
		return nil, fmt.Errorf("%w: DateTime needs an RFC 3339 text or milliseconds since 1970, got %s", errTypeMismatch, jsonKind(in))
	case ua.TypeIDNodeID:
		s, ok := in.(string)
		if !ok {
			return nil, fmt.Errorf("%w: NodeId needs a text like ns=2;s=Name, got %s", errTypeMismatch, jsonKind(in))
		}
		id, err := ParseNodeID(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errTypeMismatch, err)
		}
		return id, nil
	}
	return nil, fmt.Errorf("%w: writing a %s is not supported", errTypeMismatch, typ.name)
}

// rawInteger turns a published number into the raw integer: undoes scale
// and offset, and refuses a fraction that would be lost.
func (c conv) rawInteger(s string, typ builtin) (*big.Int, error) {
	if !c.scaled {
		if n, ok := new(big.Int).SetString(s, 10); ok {
			return n, nil
		}
		f, _, err := big.ParseFloat(s, 10, 256, big.ToNearestEven)
		if err != nil {
			return nil, fmt.Errorf("%w: %s needs a number, got %q", errTypeMismatch, typ.name, s)
		}
		if !f.IsInt() {
			return nil, fmt.Errorf("%w: %s needs a whole number, got %s", errTypeMismatch, typ.name, s)
		}
		if f.IsInf() {
			return nil, fmt.Errorf("%w: %s is out of range for %s", errTypeMismatch, s, typ.name)
		}
		n, _ := f.Int(nil)
		return n, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is out of range for %s", errTypeMismatch, s, typ.name)
	}
	raw := (f - c.offset) / c.scale
	r := math.Round(raw)
	if math.Abs(raw-r) > 1e-6*math.Max(1, math.Abs(raw)) {
		return nil, fmt.Errorf("%w: %s is not a multiple of the scale %v (raw %v is not whole)", errTypeMismatch, s, c.scale, raw)
	}
	if math.IsInf(r, 0) || math.Abs(r) > 1.9e19 {
		return nil, fmt.Errorf("%w: %s is out of range for %s", errTypeMismatch, s, typ.name)
	}
	n, _ := big.NewFloat(r).Int(nil)
	return n, nil
}

// published is a raw integer bound as a published number.
func (c conv) published(n *big.Int) string {
	if !c.scaled {
		return n.String()
	}
	f, _ := new(big.Float).SetInt(n).Float64()
	return string(appendJSONFloat(nil, c.round(f*c.scale+c.offset)))
}
