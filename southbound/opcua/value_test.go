package opcua

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/southbound/setcmd"
	"github.com/gopcua/opcua/ua"
)

func intp(i int) *int { return &i }

func TestAppendVariant(t *testing.T) {
	cases := []struct {
		name string
		p    Point
		v    any
		want string
	}{
		{"bool", Point{}, true, `true`},
		{"int16", Point{}, int16(-5), `-5`},
		{"uint64 exact", Point{}, uint64(math.MaxUint64), `18446744073709551615`},
		{"int64", Point{}, int64(math.MinInt64), `-9223372036854775808`},
		{"float32 shortest", Point{}, float32(21.3), `21.3`},
		{"float32 scaled", Point{Scale: 0.1}, float32(213), `21.3`},
		{"int scaled", Point{Scale: 0.1}, int16(213), `21.3`},
		{"int offset", Point{Offset: -273.15}, int32(300), `26.85`},
		{"double noise", Point{Scale: 3}, 0.1, `0.3`},
		{"decimals", Point{Decimals: intp(1)}, 2.718281828459045, `2.7`},
		{"decimals 0", Point{Decimals: intp(0)}, float32(2.5), `3`},
		{"double plain", Point{}, 2.718281828459045, `2.718281828459045`},
		{"tiny", Point{}, 1e-9, `1e-9`},
		{"string", Point{}, "a\"b", `"a\"b"`},
		{"time", Point{}, time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC), `"2024-05-06T07:08:09.123Z"`},
		{"time min", Point{}, time.Date(1601, 1, 1, 0, 0, 0, 0, time.UTC), `null`},
		{"bytestring", Point{}, []byte{0, 1, 0xfe, 0xff}, `"AAH+/w=="`},
		{"guid", Point{}, ua.NewGUID("72962b91-fa75-4ae6-8d28-b404dc7daf63"), `"72962B91-FA75-4AE6-8D28-B404DC7DAF63"`},
		{"localized", Point{}, ua.NewLocalizedTextWithLocale("Hallo", "de"), `"Hallo"`},
		{"qualified", Point{}, &ua.QualifiedName{NamespaceIndex: 2, Name: "a/b"}, `"2:a&/b"`},
		{"nodeid", Point{}, ua.NewStringNodeID(2, "x"), `"ns=2;s=x"`},
		{"status", Point{}, ua.StatusBadOutOfRange, `"BadOutOfRange"`},
		{"double array scaled", Point{Scale: 2}, []float64{1.5, -2.25}, `[3,-4.5]`},
		{"int array", Point{}, []int32{1, -2}, `[1,-2]`},
		{"string array", Point{}, []string{"a", "ç"}, `["a","ç"]`},
		{"matrix", Point{}, [][]int32{{1, 2}, {3, 4}}, `[[1,2],[3,4]]`},
		{"bytestring array", Point{}, [][]byte{{1}, {2}}, `["AQ==","Ag=="]`},
		{"nil", Point{}, nil, `null`},
	}
	for _, c := range cases {
		var v *ua.Variant
		if c.v != nil {
			var err error
			v, err = ua.NewVariant(c.v)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		got, err := newConv(c.p).appendVariant(nil, v)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if string(got) != c.want {
			t.Errorf("%s: got %s, want %s", c.name, got, c.want)
		}
		if !json.Valid(got) {
			t.Errorf("%s: %s is not JSON", c.name, got)
		}
	}
	// A Byte array is numbers, not base64.
	v := &ua.Variant{}
	if _, err := v.Decode([]byte{0x83, 2, 0, 0, 0, 7, 9}); err != nil { // Byte array [7, 9]
		t.Fatal(err)
	}
	if got, _ := newConv(Point{}).appendVariant(nil, v); string(got) != `[7,9]` {
		t.Errorf("byte array: %s", got)
	}
	for _, f := range []any{math.NaN(), float32(math.Inf(1))} {
		if _, err := newConv(Point{}).appendVariant(nil, ua.MustVariant(f)); !errors.Is(err, errNotFinite) {
			t.Errorf("%v: err = %v", f, err)
		}
	}
}

func TestStatusName(t *testing.T) {
	for sc, want := range map[ua.StatusCode]string{
		ua.StatusOK: "Good", ua.StatusBadSensorFailure: "BadSensorFailure", ua.StatusBadNotWritable | 0x0400: "BadNotWritable",
		0x80FF0000 + 0xAB: "0x80FF00AB", ua.StatusUncertainLastUsableValue: "UncertainLastUsableValue",
	} {
		if got := statusName(sc); got != want {
			t.Errorf("statusName(%#x) = %s, want %s", uint32(sc), got, want)
		}
	}
	if quality(ua.StatusUncertainLastUsableValue) != QualityGood || quality(ua.StatusBadSensorFailure) != QualityBad || quality(ua.StatusOK) != QualityGood {
		t.Error("quality mapping")
	}
}

func decodeJSON(t testing.TB, s string) any {
	var v any
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return v
}

func TestToVariant(t *testing.T) {
	cases := []struct {
		typ  string
		p    Point
		in   string
		want any
	}{
		{"Boolean", Point{}, `true`, true},
		{"Boolean", Point{}, `1`, true},
		{"SByte", Point{}, `-128`, int8(-128)},
		{"Byte", Point{}, `255`, uint8(255)},
		{"Int16", Point{}, `"12"`, int16(12)},
		{"Int16", Point{}, `true`, int16(1)},
		{"UInt16", Point{}, `65535`, uint16(65535)},
		{"Int32", Point{}, `2e3`, int32(2000)},
		{"UInt32", Point{}, `4294967295`, uint32(4294967295)},
		{"Int64", Point{}, `-9223372036854775808`, int64(math.MinInt64)},
		{"UInt64", Point{}, `18446744073709551615`, uint64(math.MaxUint64)},
		{"Int16", Point{Scale: 0.1}, `21.3`, int16(213)},
		{"Int16", Point{Offset: 10}, `"21,0"`, int16(11)},
		{"Float", Point{}, `21.3`, float32(21.3)},
		{"Double", Point{Scale: 2, Offset: 1}, `5`, 2.0},
		{"String", Point{}, `"héllo"`, "héllo"},
		{"LocalizedText", Point{}, `"x"`, ua.NewLocalizedText("x")},
		{"ByteString", Point{}, `"AAH+/w=="`, []byte{0, 1, 0xfe, 0xff}},
		{"Guid", Point{}, `"72962B91-FA75-4AE6-8D28-B404DC7DAF63"`, ua.NewGUID("72962B91-FA75-4AE6-8D28-B404DC7DAF63")},
		{"DateTime", Point{}, `"2024-05-06T07:08:09.123Z"`, time.Date(2024, 5, 6, 7, 8, 9, 123e6, time.UTC)},
		{"DateTime", Point{}, `1715000000000`, time.UnixMilli(1715000000000).UTC()},
		{"NodeId", Point{}, `"ns=2;i=5"`, ua.NewNumericNodeID(2, 5)},
		{"Double", Point{}, `[1.5,2]`, []float64{1.5, 2}},
		{"Int32", Point{}, `[]`, []int32{}},
		{"String", Point{}, `["a","b"]`, []string{"a", "b"}},
	}
	for _, c := range cases {
		typ, _ := typeByName(c.typ)
		v, err := newConv(c.p).toVariant(decodeJSON(t, c.in), typ)
		if err != nil {
			t.Errorf("%s %s: %v", c.typ, c.in, err)
			continue
		}
		if !reflect.DeepEqual(v.Value(), c.want) {
			t.Errorf("%s %s: got %#v, want %#v", c.typ, c.in, v.Value(), c.want)
		}
		if _, err := v.Encode(); err != nil {
			t.Errorf("%s %s: encode: %v", c.typ, c.in, err)
		}
	}
	bad := []struct{ typ, in, want string }{
		{"Boolean", `"yes"`, "Boolean needs true or false, got a text"},
		{"Int16", `32768`, "out of range for Int16 (-32768 to 32767)"},
		{"Int16", `1.5`, "needs a whole number"},
		{"Byte", `-1`, "out of range for Byte"},
		{"Int32", `"abc"`, `needs a number, got the text "abc"`},
		{"Int32", `null`, "needs a number, got null"},
		{"Float", `1e39`, "out of range for Float"},
		{"Double", `"NaN"`, "needs a number"},
		{"String", `5`, "String needs a text, got a number"},
		{"ByteString", `"!"`, "standard base64"},
		{"Guid", `"x"`, "Guid needs a text like"},
		{"DateTime", `"yesterday"`, "RFC 3339"},
		{"Double", `[1,[2]]`, "nested arrays"},
		{"Double", `{"a":1}`, "needs a number, got an object"},
		{"ExtensionObject", `1`, "writing a ExtensionObject is not supported"},
	}
	for _, c := range bad {
		typ, _ := typeByName(c.typ)
		_, err := newConv(Point{}).toVariant(decodeJSON(t, c.in), typ)
		if err == nil || !errors.Is(err, errTypeMismatch) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: err = %v, want %q", c.typ, c.in, err, c.want)
		}
	}
	typ, _ := typeByName("Int16")
	if _, err := newConv(Point{Scale: 0.1}).toVariant(decodeJSON(t, `21.35`), typ); err == nil || !strings.Contains(err.Error(), "multiple of the scale") {
		t.Errorf("scaled fraction: %v", err)
	}
	if _, err := newConv(Point{Scale: 0.1}).toVariant(decodeJSON(t, `4000`), typ); err == nil || !strings.Contains(err.Error(), "-3276.8 to 3276.7") {
		t.Errorf("scaled range: %v", err)
	}
}

// FuzzToVariant converts a set command's payload to a variant of every
// built-in type: it never panics, and what it accepts encodes.
func FuzzToVariant(f *testing.F) {
	for _, s := range []string{`1`, `-1.5`, `"21,5"`, `true`, `"AAH+/w=="`, `[1,2,3]`, `"2024-05-06T07:08:09Z"`, `{"v":1,"id":7}`, `1e400`, `"ns=2;s=x"`, `[]`, `null`} {
		f.Add(s, 0.1, 0.0)
		f.Add(s, 1.0, 0.0)
	}
	f.Fuzz(func(t *testing.T, payload string, scale, offset float64) {
		_, in, _, err := setcmd.Parse([]byte(payload))
		if err != nil {
			return
		}
		if !finite(scale) || !finite(offset) || scale == 0 {
			return
		}
		c := newConv(Point{Scale: scale, Offset: offset})
		for _, b := range builtins {
			v, err := c.toVariant(in, b)
			if err != nil {
				if !errors.Is(err, errTypeMismatch) {
					t.Fatalf("%s %q: error %v does not wrap errTypeMismatch", b.name, payload, err)
				}
				continue
			}
			if _, err := v.Encode(); err != nil {
				t.Fatalf("%s %q: accepted but does not encode: %v", b.name, payload, err)
			}
		}
	})
}

// FuzzVariantJSON decodes arbitrary bytes as a Variant (what a server
// sends) and checks that the JSON published for it is valid, whatever
// scale and decimals the point has.
func FuzzVariantJSON(f *testing.F) {
	for _, v := range []any{true, int16(-5), uint64(1 << 60), float32(21.3), 2.5, "x", []byte{1, 2}, []float64{1, 2},
		time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC), ua.NewLocalizedText("t"), ua.StatusBadOutOfRange, [][]int32{{1}, {2}}} {
		b, err := ua.MustVariant(v).Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, 0.1, 2)
	}
	f.Fuzz(func(t *testing.T, data []byte, scale float64, decimals int) {
		v := new(ua.Variant)
		if !decodeSafe(v, data) {
			return
		}
		if !finite(scale) || scale == 0 {
			scale = 1
		}
		p := Point{Scale: scale}
		if decimals >= 0 && decimals <= maxDecimals {
			p.Decimals = &decimals
		}
		b, err := newConv(p).appendVariant(nil, v)
		if err != nil {
			return
		}
		if !json.Valid(b) {
			t.Fatalf("%T %v gives invalid JSON %s", v.Value(), v.Value(), b)
		}
	})
}

// decodeSafe decodes data into v; a panic of the library's decoder counts
// as a refusal (it is not ours to fuzz).
func decodeSafe(v *ua.Variant, data []byte) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	_, err := v.Decode(data)
	return err == nil
}
