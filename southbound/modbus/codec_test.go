package modbus

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func TestCodecOrders(t *testing.T) {
	// The value's bytes, most significant first, are A B C D (E F G H).
	tests := []struct {
		typ, order string
		wire       string // hex, as read from the registers
		want       string // the value as JSON
	}{
		{TypeInt16, OrderABCD, "ff85", "-123"},
		{TypeInt16, OrderCDAB, "ff85", "-123"},
		{TypeInt16, OrderDCBA, "85ff", "-123"},
		{TypeInt16, OrderBADC, "85ff", "-123"},
		{TypeUint16, OrderABCD, "ff85", "65413"},
		{TypeInt32, OrderABCD, "01020304", "16909060"},
		{TypeInt32, OrderDCBA, "04030201", "16909060"},
		{TypeInt32, OrderBADC, "02010403", "16909060"},
		{TypeInt32, OrderCDAB, "03040102", "16909060"},
		{TypeInt32, OrderABCD, "fffffffe", "-2"},
		{TypeUint32, OrderCDAB, "fffeffff", "4294967294"},
		{TypeInt64, OrderABCD, "0102030405060708", "72623859790382856"},
		{TypeInt64, OrderDCBA, "0807060504030201", "72623859790382856"},
		{TypeInt64, OrderBADC, "0201040306050807", "72623859790382856"},
		{TypeInt64, OrderCDAB, "0708050603040102", "72623859790382856"},
		{TypeInt64, OrderABCD, "8000000000000000", "-9223372036854775808"},
		{TypeUint64, OrderABCD, "ffffffffffffffff", "18446744073709551615"},
		{TypeFloat32, OrderABCD, "41460000", "12.375"},
		{TypeFloat32, OrderCDAB, "00004146", "12.375"},
		{TypeFloat32, OrderDCBA, "00004641", "12.375"},
		{TypeFloat32, OrderBADC, "46410000", "12.375"},
		{TypeFloat64, OrderABCD, "c028c00000000000", "-12.375"},
		{TypeFloat64, OrderCDAB, "00000000c000c028", "-12.375"},
		{TypeFloat64, OrderDCBA, "0000000000c028c0", "-12.375"},
		{TypeFloat64, OrderBADC, "28c000c000000000", "-12.375"},
	}
	for _, tt := range tests {
		t.Run(tt.typ+"/"+tt.order+"/"+tt.wire, func(t *testing.T) {
			c := newCodec(Point{Register: RegHolding, Type: tt.typ, ByteOrder: tt.order, Scale: 1})
			wire, _ := hex.DecodeString(tt.wire)
			v, err := c.Decode(wire)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got := string(v.AppendJSON(nil)); got != tt.want {
				t.Fatalf("decode = %s, want %s", got, tt.want)
			}
			raw, _, err := c.Encode(json.Number(tt.want))
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if !bytes.Equal(raw, wire) {
				t.Fatalf("encode = %x, want %s", raw, tt.wire)
			}
		})
	}
}

func TestCodecScaleStringBit(t *testing.T) {
	c := newCodec(Point{Register: RegInput, Type: TypeInt16, ByteOrder: OrderABCD, Scale: 0.1, Offset: -40})
	v, err := c.Decode([]byte{0x02, 0x6c}) // 620 * 0.1 - 40 = 22
	if err != nil || v.Kind != KindFloat || v.Float < 21.999 || v.Float > 22.001 {
		t.Fatalf("scaled = %+v, %v", v, err)
	}
	raw, _, err := c.Encode(json.Number("22"))
	if err != nil || !bytes.Equal(raw, []byte{0x02, 0x6c}) {
		t.Fatalf("encode scaled = %x, %v", raw, err)
	}
	if _, _, err := c.Encode(json.Number("4000")); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Fatalf("encode 4000 in INT16*0.1: %v, want out of range", err)
	}

	s := newCodec(Point{Register: RegHolding, Type: TypeString, Length: 3, ByteOrder: OrderBADC, Scale: 1})
	v, err = s.Decode([]byte("BADCE\x00"))
	if err != nil || v.Str != "ABCD" {
		t.Fatalf("string = %q, %v", v.Str, err)
	}
	raw, _, err = s.Encode("ABCDE")
	if err != nil || string(raw) != "BADC\x00E" {
		t.Fatalf("encode string = %q, %v", raw, err)
	}
	if _, _, err := s.Encode("ABCDEFG"); err == nil {
		t.Fatal("a 7-byte string fits in 3 registers?")
	}

	b := newCodec(Point{Register: RegHolding, Type: TypeBit, Bit: 9, ByteOrder: OrderABCD, Scale: 1})
	if v, _ := b.Decode([]byte{0x02, 0x00}); !v.Bool {
		t.Fatal("bit 9 of 0x0200 is not set?")
	}

	f := newCodec(Point{Register: RegHolding, Type: TypeFloat32, ByteOrder: OrderABCD, Scale: 1})
	if _, err := f.Decode([]byte{0x7f, 0xc0, 0, 0}); err == nil {
		t.Fatal("NaN decoded without error")
	}
	for _, in := range []any{json.Number("1e39"), "x", true, nil} {
		if _, _, err := f.Encode(in); err == nil {
			t.Errorf("FLOAT32 encoded %v", in)
		}
	}
	u := newCodec(Point{Register: RegHolding, Type: TypeUint16, ByteOrder: OrderABCD, Scale: 1})
	for _, in := range []any{json.Number("-1"), json.Number("65536"), json.Number("1.5")} {
		if _, _, err := u.Encode(in); err == nil {
			t.Errorf("UINT16 encoded %v", in)
		}
	}
	coil := newCodec(Point{Register: RegCoil, Type: TypeBool, ByteOrder: OrderABCD, Scale: 1})
	if _, on, err := coil.Encode(json.Number("1")); err != nil || !on {
		t.Fatalf("coil 1 = %v, %v", on, err)
	}
	if _, _, err := coil.Encode(json.Number("2")); err == nil {
		t.Fatal("coil took 2")
	}
}

// FuzzCodec decodes arbitrary register bytes with every type and order and
// checks that encoding the decoded value gives the same registers back.
func FuzzCodec(f *testing.F) {
	f.Add(byte(0), byte(0), []byte{1, 2, 3, 4, 5, 6, 7, 8})
	f.Add(byte(7), byte(3), []byte{0x41, 0x46, 0, 0})
	f.Add(byte(9), byte(1), []byte("hello world"))
	types := []string{TypeInt16, TypeUint16, TypeInt32, TypeUint32, TypeInt64, TypeUint64, TypeFloat32, TypeFloat64, TypeBit, TypeString}
	orders := []string{OrderABCD, OrderDCBA, OrderBADC, OrderCDAB}
	f.Fuzz(func(t *testing.T, ti, oi byte, data []byte) {
		typ := types[int(ti)%len(types)]
		order := orders[int(oi)%len(orders)]
		p := Point{Register: RegHolding, Type: typ, ByteOrder: order, Scale: 1, Bit: int(oi) % 16}
		if typ == TypeString {
			p.Length = min(max(len(data)/2, 1), 125)
			if order == OrderDCBA || order == OrderCDAB {
				p.ByteOrder = OrderABCD
			}
		}
		if typ == TypeBit {
			p.ByteOrder = OrderABCD
		}
		c := newCodec(p)
		n := 2 * c.Words()
		if len(data) < n {
			return
		}
		wire := data[:n]
		v, err := c.Decode(wire)
		if err != nil {
			if typ == TypeFloat32 || typ == TypeFloat64 {
				return // NaN and infinities are refused
			}
			t.Fatalf("decode %s %s %x: %v", typ, order, wire, err)
		}
		if typ == TypeBit {
			return // one bit of a register: not writable
		}
		js := v.AppendJSON(nil)
		var in any
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.UseNumber()
		if err := dec.Decode(&in); err != nil {
			t.Fatalf("value JSON %s: %v", js, err)
		}
		raw, _, err := c.Encode(in)
		if typ == TypeString {
			// NULs end a string and invalid UTF-8 is replaced: only the
			// decoded text must survive a round trip.
			if err != nil {
				if len(v.Str) > n {
					return // replacement characters made it longer
				}
				t.Fatalf("encode string %q: %v", v.Str, err)
			}
			v2, _ := c.Decode(raw)
			if v2.Str != v.Str {
				t.Fatalf("string round trip %q -> %q", v.Str, v2.Str)
			}
			return
		}
		if err != nil {
			t.Fatalf("encode %s %s %s: %v", typ, order, js, err)
		}
		if !bytes.Equal(raw, wire) {
			// -0 and 0 are the same JSON number.
			v2, _ := c.Decode(raw)
			if v2 != v && !(v.Kind == KindFloat && v.Float == 0 && v2.Float == 0) {
				t.Fatalf("%s %s: %x -> %s -> %x", typ, order, wire, js, raw)
			}
		}
	})
}

// TestCodecNoFloatNoise: scaled values are published as a person writes
// them (issue 14: 217 × 0.1 was published as 21.700000000000003).
func TestCodecNoFloatNoise(t *testing.T) {
	tests := []struct {
		name  string
		point Point
		raw   []byte
		want  string // the JSON published
	}{
		{"int16 × 0.1", Point{Register: RegInput, Type: TypeInt16, Scale: 0.1}, []byte{0x00, 0xd9}, "21.7"},
		{"int16 × 0.1 + 0.05", Point{Register: RegInput, Type: TypeInt16, Scale: 0.1, Offset: 0.05}, []byte{0x00, 0xd9}, "21.75"},
		{"uint16 × 0.01 − 40", Point{Register: RegInput, Type: TypeUint16, Scale: 0.01, Offset: -40}, []byte{0x17, 0x70}, "20"},
		{"int32 × 0.001", Point{Register: RegHolding, Type: TypeInt32, Scale: 0.001}, []byte{0xff, 0xff, 0xfe, 0x0c}, "-0.5"},
		{"uint16 × 1/3", Point{Register: RegInput, Type: TypeUint16, Scale: 1.0 / 3}, []byte{0x00, 0x07}, "2.33333333333333"},
		{"float32 unscaled", Point{Register: RegHolding, Type: TypeFloat32}, f32(21.7), "21.7"},
		{"float32 × 0.1", Point{Register: RegHolding, Type: TypeFloat32, Scale: 0.1}, f32(217), "21.7"},
		{"float32 × 10", Point{Register: RegHolding, Type: TypeFloat32, Scale: 10}, f32(2.17), "21.7"},
		{"large int × 0.1", Point{Register: RegHolding, Type: TypeInt64, Scale: 0.1}, []byte{0, 0, 0, 0, 0x49, 0x96, 0x02, 0xd3}, "123456789.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.point
			p.ByteOrder = OrderABCD
			if p.Scale == 0 {
				p.Scale = 1
			}
			v, err := newCodec(p).Decode(tt.raw)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(v.AppendJSON(nil)); got != tt.want {
				t.Fatalf("published %s, want %s", got, tt.want)
			}
		})
	}
}

func f32(f float32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], math.Float32bits(f))
	return b[:]
}

// TestEncodeTypedNumbers: a number typed as text, with a decimal comma, is
// written; errors say what is wrong in words, with the range (issue 14).
func TestEncodeTypedNumbers(t *testing.T) {
	sp := newCodec(Point{Register: RegHolding, Type: TypeInt16, ByteOrder: OrderABCD, Scale: 0.1})
	for _, in := range []any{"21,5", " 21.5 ", json.Number("21.5")} {
		raw, _, err := sp.Encode(in)
		if err != nil || !bytes.Equal(raw, []byte{0x00, 0xd7}) {
			t.Errorf("Encode(%q) = %x, %v; want 00d7", in, raw, err)
		}
	}
	for _, tt := range []struct {
		in   any
		want string
	}{
		{"abc", `encode INT16: needs a number, got the text "abc"`},
		{"1,2,3", `got the text "1,2,3"`},
		{"0x10", `got the text "0x10"`},
		{"NaN", `got the text "NaN"`},
		{json.Number("4000"), "encode INT16: 4000 is out of range (-3276.8 to 3276.7)"},
		{nil, "encode INT16: needs a number, got null"},
	} {
		_, _, err := sp.Encode(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Encode(%v) = %v, want %q", tt.in, err, tt.want)
		}
	}
	u := newCodec(Point{Register: RegHolding, Type: TypeUint16, ByteOrder: OrderABCD, Scale: 1})
	if _, _, err := u.Encode(json.Number("70000")); err == nil || !strings.Contains(err.Error(), "out of range (0 to 65535)") {
		t.Errorf("UINT16 70000: %v", err)
	}
}
