package modbus

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Register types.
const (
	RegCoil     = "coil"
	RegDiscrete = "discrete"
	RegHolding  = "holding"
	RegInput    = "input"
)

// Data types.
const (
	TypeBool    = "BOOL"
	TypeBit     = "BIT"
	TypeInt16   = "INT16"
	TypeUint16  = "UINT16"
	TypeInt32   = "INT32"
	TypeUint32  = "UINT32"
	TypeInt64   = "INT64"
	TypeUint64  = "UINT64"
	TypeFloat32 = "FLOAT32"
	TypeFloat64 = "FLOAT64"
	TypeString  = "STRING"
)

// Byte orders: the letters name the bytes of the value, most significant
// first (A), in the order they travel on the wire.
const (
	OrderABCD = "ABCD" // big-endian
	OrderDCBA = "DCBA" // little-endian
	OrderBADC = "BADC" // big-endian words, bytes swapped in each word
	OrderCDAB = "CDAB" // little-endian words, big-endian bytes in each word
)

// maxStringRegisters is the longest STRING (one read).
const maxStringRegisters = 125

// Kind says which field of a Value holds it.
type Kind uint8

// Value kinds.
const (
	KindNone Kind = iota // no value (a failed read)
	KindBool
	KindInt
	KindUint
	KindFloat
	KindString
)

// Value is a decoded point value. Only the field of its Kind is meaningful.
// It is a plain struct so that decoding and comparing allocate nothing.
type Value struct {
	Kind  Kind
	Bool  bool
	Int   int64
	Uint  uint64
	Float float64
	Str   string
}

// Float64 returns a numeric value as a float64 (bool: 0 or 1).
func (v Value) Float64() float64 {
	switch v.Kind {
	case KindBool:
		if v.Bool {
			return 1
		}
	case KindInt:
		return float64(v.Int)
	case KindUint:
		return float64(v.Uint)
	case KindFloat:
		return v.Float
	}
	return 0
}

// AppendJSON appends the value as JSON (null for KindNone).
func (v Value) AppendJSON(b []byte) []byte {
	switch v.Kind {
	case KindBool:
		return strconv.AppendBool(b, v.Bool)
	case KindInt:
		return strconv.AppendInt(b, v.Int, 10)
	case KindUint:
		return strconv.AppendUint(b, v.Uint, 10)
	case KindFloat:
		return appendFloat(b, v.Float)
	case KindString:
		s, _ := json.Marshal(v.Str) // a string always marshals
		return append(b, s...)
	}
	return append(b, "null"...)
}

// appendFloat appends f as encoding/json writes a float64: plain decimal
// (123456789.1, 0.001) and an exponent only below 1e-6 or from 1e21 on.
func appendFloat(b []byte, f float64) []byte {
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		return strconv.AppendFloat(b, f, 'e', -1, 64)
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

// MarshalJSON implements json.Marshaler.
func (v Value) MarshalJSON() ([]byte, error) { return v.AppendJSON(nil), nil }

// Codec turns the raw bytes of one point into a Value and back. It is built
// once per point at config time (newCodec) and is immutable.
type Codec struct {
	typ    string
	order  string
	words  int // registers covered (0 for coils and discrete inputs)
	bit    int
	scale  float64
	offset float64
	scaled bool // scale != 1 or offset != 0: the value is a float
	// decimals is how many decimal places raw*scale+offset can have when
	// raw is an integer: the most of scale's and offset's shortest
	// decimal forms (0.1 → 1, 0.25 → 2). -1 when that is not a small
	// number (e.g. scale 1/3), then 15 significant digits are kept.
	decimals int
}

// newCodec builds the codec of a validated point (after withDefaults).
func newCodec(p Point) Codec {
	c := Codec{typ: p.Type, order: p.ByteOrder, bit: p.Bit, scale: p.Scale, offset: p.Offset}
	if c.typ == TypeBit {
		c.typ = TypeBool
	}
	if c.scale == 0 {
		c.scale = 1
	}
	c.scaled = c.scale != 1 || c.offset != 0
	c.decimals = max(decimalPlaces(c.scale), decimalPlaces(c.offset))
	if decimalPlaces(c.scale) < 0 || decimalPlaces(c.offset) < 0 {
		c.decimals = -1
	}
	if p.Register == RegHolding || p.Register == RegInput {
		c.words = typeWords(c.typ, p.Length)
	}
	return c
}

// typeWords is how many 16-bit registers a data type covers (0: unknown).
func typeWords(typ string, length int) int {
	switch typ {
	case TypeBool, TypeBit, TypeInt16, TypeUint16:
		return 1
	case TypeInt32, TypeUint32, TypeFloat32:
		return 2
	case TypeInt64, TypeUint64, TypeFloat64:
		return 4
	case TypeString:
		return length
	}
	return 0
}

// RegisterBit reports whether the codec is a BOOL/BIT inside a 16-bit
// register, and which bit (0 = least significant).
func (c Codec) RegisterBit() (uint, bool) {
	return uint(c.bit), c.typ == TypeBool && c.words == 1
}

// Words is the number of registers the point covers; 0 for a bit register.
func (c Codec) Words() int { return c.words }

// Numeric reports whether the codec's values are numbers (deadband applies).
func (c Codec) Numeric() bool { return c.typ != TypeBool && c.typ != TypeString }

// order puts bytes in wire order into big-endian order (or back: every
// order is its own inverse) in place.
func reorder(b []byte, order string) {
	switch order {
	case OrderDCBA:
		for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
			b[i], b[j] = b[j], b[i]
		}
	case OrderBADC:
		for i := 0; i+1 < len(b); i += 2 {
			b[i], b[i+1] = b[i+1], b[i]
		}
	case OrderCDAB:
		for i, j := 0, len(b)-2; i < j; i, j = i+2, j-2 {
			b[i], b[i+1], b[j], b[j+1] = b[j], b[j+1], b[i], b[i+1]
		}
	}
}

// ErrNotFinite is returned for a float register holding NaN or an infinity.
var ErrNotFinite = errors.New("not a finite number")

// DecodeBit decodes the value of a coil or discrete input.
func (c Codec) DecodeBit(on bool) Value { return Value{Kind: KindBool, Bool: on} }

// Decode decodes the point from its registers' bytes as read (2 bytes per
// register, wire order). raw must hold exactly Words()*2 bytes.
func (c Codec) Decode(raw []byte) (Value, error) {
	if len(raw) != 2*c.words {
		return Value{}, fmt.Errorf("decode %s: got %d bytes, want %d", c.typ, len(raw), 2*c.words)
	}
	if c.typ == TypeString {
		return c.decodeString(raw), nil
	}
	var buf [8]byte
	b := buf[:len(raw)]
	copy(b, raw)
	if c.typ != TypeBool { // a bit is read from the register as sent
		reorder(b, c.order)
	}
	var v Value
	switch c.typ {
	case TypeBool:
		reg := binary.BigEndian.Uint16(b)
		return Value{Kind: KindBool, Bool: reg>>c.bit&1 == 1}, nil
	case TypeInt16:
		v = Value{Kind: KindInt, Int: int64(int16(binary.BigEndian.Uint16(b)))}
	case TypeUint16:
		v = Value{Kind: KindUint, Uint: uint64(binary.BigEndian.Uint16(b))}
	case TypeInt32:
		v = Value{Kind: KindInt, Int: int64(int32(binary.BigEndian.Uint32(b)))}
	case TypeUint32:
		v = Value{Kind: KindUint, Uint: uint64(binary.BigEndian.Uint32(b))}
	case TypeInt64:
		v = Value{Kind: KindInt, Int: int64(binary.BigEndian.Uint64(b))}
	case TypeUint64:
		v = Value{Kind: KindUint, Uint: binary.BigEndian.Uint64(b)}
	case TypeFloat32:
		v = Value{Kind: KindFloat, Float: float32Decimal(math.Float32frombits(binary.BigEndian.Uint32(b)))}
	case TypeFloat64:
		v = Value{Kind: KindFloat, Float: math.Float64frombits(binary.BigEndian.Uint64(b))}
	default:
		return Value{}, fmt.Errorf("decode: unknown type %q", c.typ)
	}
	if v.Kind == KindFloat && (math.IsNaN(v.Float) || math.IsInf(v.Float, 0)) {
		return Value{}, fmt.Errorf("decode %s: %w", c.typ, ErrNotFinite)
	}
	if c.scaled {
		f := v.Float64()*c.scale + c.offset
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return Value{}, fmt.Errorf("decode %s: scaled value: %w", c.typ, ErrNotFinite)
		}
		v = Value{Kind: KindFloat, Float: c.round(v, f)}
	}
	return v, nil
}

// round removes the binary noise of raw*scale+offset (217 × 0.1 is
// 21.700000000000003 in float64): an integer raw value is rounded to the
// decimal places its scale and offset allow, which is exact; a float raw
// value, or a scale with no short decimal form, to 15 significant digits,
// the most a float64 always holds exactly.
func (c Codec) round(raw Value, f float64) float64 {
	if raw.Kind != KindFloat && c.decimals >= 0 {
		p := math.Pow10(c.decimals)
		if r := math.Round(f*p) / p; !math.IsInf(r, 0) && !math.IsNaN(r) {
			return r
		}
		return f
	}
	r, err := strconv.ParseFloat(strconv.FormatFloat(f, 'g', 15, 64), 64)
	if err != nil {
		return f
	}
	return r
}

// decimalPlaces is the number of digits after the point in x's shortest
// decimal form, or -1 when that is more than 9 (no short decimal form).
func decimalPlaces(x float64) int {
	s := strconv.FormatFloat(math.Abs(x), 'f', -1, 64)
	i := strings.IndexByte(s, '.')
	if i < 0 {
		return 0
	}
	if n := len(s) - i - 1; n <= 9 {
		return n
	}
	return -1
}

// float32Decimal widens a FLOAT32 register to the float64 nearest its
// shortest decimal form, so 21.7 sent as a float32 is published as 21.7
// and not as 21.700000762939453, the exact value of the float32.
func float32Decimal(f float32) float64 {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return float64(f)
	}
	r, err := strconv.ParseFloat(strconv.FormatFloat(float64(f), 'g', -1, 32), 64)
	if err != nil {
		return float64(f)
	}
	return r
}

// decodeString decodes a STRING: bytes up to the first NUL, invalid UTF-8
// replaced, trailing spaces kept.
func (c Codec) decodeString(raw []byte) Value {
	b := make([]byte, len(raw))
	copy(b, raw)
	if c.order == OrderBADC {
		reorder(b, OrderBADC)
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return Value{Kind: KindString, Str: strings.ToValidUTF8(string(b), "\uFFFD")}
}

// Encode turns a value received as JSON (decoded with UseNumber: a
// json.Number, bool or string) into the registers' bytes in wire order, or,
// for a coil, into a bit. It refuses values out of the type's range.
func (c Codec) Encode(in any) (raw []byte, bit bool, err error) {
	switch c.typ {
	case TypeBool:
		on, err := toBool(in)
		return nil, on, err
	case TypeString:
		s, ok := in.(string)
		if !ok {
			return nil, false, fmt.Errorf("encode STRING: want a JSON string, got %s", jsonKind(in))
		}
		if len(s) > 2*c.words {
			return nil, false, fmt.Errorf("encode STRING: %d bytes do not fit in %d registers", len(s), c.words)
		}
		if strings.IndexByte(s, 0) >= 0 {
			return nil, false, errors.New("encode STRING: NUL characters are not allowed")
		}
		raw = make([]byte, 2*c.words)
		copy(raw, s)
		if c.order == OrderBADC {
			reorder(raw, OrderBADC)
		}
		return raw, false, nil
	}
	num, ok := in.(json.Number)
	if !ok {
		b, isBool := in.(bool)
		text, isText := in.(string)
		switch {
		case isBool && !c.scaled && c.typ != TypeFloat32 && c.typ != TypeFloat64: // true/false for 1/0
			num = "0"
			if b {
				num = "1"
			}
		case isText:
			// A number typed as text, with a decimal point or comma
			// ("21,5"): what a person types in a form.
			n, ok := numberText(text)
			if !ok {
				return nil, false, fmt.Errorf("encode %s: needs a number, got the text %q", c.typ, text)
			}
			num = json.Number(n)
		default:
			return nil, false, fmt.Errorf("encode %s: needs a number, got %s", c.typ, jsonKind(in))
		}
	}
	raw = make([]byte, 2*c.words)
	if err := c.encodeNumber(raw, string(num)); err != nil {
		return nil, false, err
	}
	reorder(raw, c.order)
	return raw, false, nil
}

// rangeText says which published values an integer type can take: lo to
// hi raw, through scale and offset.
func (c Codec) rangeText(lo int64, hi uint64) string {
	a, b := float64(lo)*c.scale+c.offset, float64(hi)*c.scale+c.offset
	if a > b {
		a, b = b, a
	}
	return fmt.Sprintf("%s to %s", appendFloat(nil, c.round(Value{Kind: KindInt}, a)), appendFloat(nil, c.round(Value{Kind: KindInt}, b)))
}

// numberText turns a number typed as text into JSON number syntax: spaces
// trimmed, a single decimal comma read as a point ("21,5" → "21.5").
func numberText(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if strings.Count(s, ",") == 1 && !strings.Contains(s, ".") {
		s = strings.Replace(s, ",", ".", 1)
	}
	if _, err := strconv.ParseFloat(s, 64); err != nil || s == "" || strings.ContainsAny(s, "xXpP_") || strings.EqualFold(strings.TrimLeft(s, "+-"), "inf") || strings.EqualFold(strings.TrimLeft(s, "+-"), "infinity") || strings.EqualFold(s, "nan") {
		return "", false
	}
	return s, true
}

// encodeNumber writes the raw number for the published value s into b,
// big-endian.
func (c Codec) encodeNumber(b []byte, s string) error {
	if c.typ == TypeFloat32 || c.typ == TypeFloat64 {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("encode %s: %q is not a number", c.typ, s)
		}
		f = (f - c.offset) / c.scale
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("encode %s: %s is out of range", c.typ, s)
		}
		if c.typ == TypeFloat32 {
			if math.Abs(f) > math.MaxFloat32 {
				return fmt.Errorf("encode %s: %s is out of range", c.typ, s)
			}
			binary.BigEndian.PutUint32(b, math.Float32bits(float32(f)))
			return nil
		}
		binary.BigEndian.PutUint64(b, math.Float64bits(f))
		return nil
	}

	lo, hi, signed := intRange(c.typ)
	var i int64
	var u uint64
	if !c.scaled {
		// Exact integers, all 64 bits.
		var err error
		if signed {
			i, err = strconv.ParseInt(s, 10, 64)
		} else {
			u, err = strconv.ParseUint(s, 10, 64)
		}
		if err != nil {
			return fmt.Errorf("encode %s: %s is not an integer in range", c.typ, s)
		}
		if signed && (i < lo || i > int64(hi)) || !signed && u > hi {
			return fmt.Errorf("encode %s: %s is out of range (%s)", c.typ, s, c.rangeText(lo, hi))
		}
	} else {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("encode %s: %q is not a number", c.typ, s)
		}
		f = math.Round((f - c.offset) / c.scale)
		// limit is the exclusive upper bound; float64(MaxInt64) and
		// float64(MaxUint64) round up to 2^63 and 2^64, which is exact.
		limit := float64(hi) + 1
		if hi >= 1<<53 {
			limit = float64(hi)
		}
		if math.IsNaN(f) || f < float64(lo) || f >= limit {
			return fmt.Errorf("encode %s: %s is out of range (%s)", c.typ, s, c.rangeText(lo, hi))
		}
		if signed {
			i = int64(f)
		} else {
			u = uint64(f)
		}
	}
	if signed {
		u = uint64(i)
	}
	switch len(b) {
	case 2:
		binary.BigEndian.PutUint16(b, uint16(u))
	case 4:
		binary.BigEndian.PutUint32(b, uint32(u))
	case 8:
		binary.BigEndian.PutUint64(b, u)
	}
	return nil
}

// intRange returns the bounds of an integer type.
func intRange(typ string) (lo int64, hi uint64, signed bool) {
	switch typ {
	case TypeInt16:
		return math.MinInt16, math.MaxInt16, true
	case TypeUint16:
		return 0, math.MaxUint16, false
	case TypeInt32:
		return math.MinInt32, math.MaxInt32, true
	case TypeUint32:
		return 0, math.MaxUint32, false
	case TypeInt64:
		return math.MinInt64, math.MaxInt64, true
	}
	return 0, math.MaxUint64, false
}

// toBool accepts true/false and the numbers 0/1.
func toBool(in any) (bool, error) {
	switch v := in.(type) {
	case bool:
		return v, nil
	case json.Number:
		switch v {
		case "0":
			return false, nil
		case "1":
			return true, nil
		}
		return false, fmt.Errorf("encode BOOL: %s is out of range (0 or 1)", v)
	}
	return false, fmt.Errorf("encode BOOL: want true, false, 0 or 1, got %s", jsonKind(in))
}

// jsonKind names the JSON type of a decoded value for error messages.
func jsonKind(in any) string {
	switch v := in.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "the number " + string(v)
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", in)
}
