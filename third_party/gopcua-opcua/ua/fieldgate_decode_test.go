package ua

// Tests of the fieldgate patch (bounded arrays): a declared count the
// bytes cannot back is refused before anything is allocated.

import (
	"encoding/binary"
	"testing"
)

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func TestFieldgateVariantDimensionsBounded(t *testing.T) {
	// Int32 array of one element, then 2^31-1 dimensions in 4 bytes.
	b := []byte{byte(TypeIDInt32) | VariantArrayValues | VariantArrayDimensions}
	b = append(b, le32(1)...)
	b = append(b, le32(7)...)
	b = append(b, le32(0x7fffffff)...)
	b = append(b, le32(1)...)
	allocs := testing.AllocsPerRun(1, func() {
		if _, err := new(Variant).Decode(b); err == nil {
			t.Fatal("decoded 2^31-1 dimensions from 4 bytes")
		}
	})
	if allocs > 20 {
		t.Fatalf("%v allocations for a refused variant", allocs)
	}
}

func TestFieldgateVariantDimensionsOverflow(t *testing.T) {
	// No elements, dimensions 65536 × 65536 × 65536: the int32 product
	// wraps to 0, which matched the empty array and made split loop
	// 2^32 times.
	b := []byte{byte(TypeIDInt32) | VariantArrayValues | VariantArrayDimensions}
	b = append(b, le32(0)...)
	b = append(b, le32(3)...)
	for range 3 {
		b = append(b, le32(65536)...)
	}
	if _, err := new(Variant).Decode(b); err == nil {
		t.Fatal("wrapped dimensions accepted")
	}
}

func TestFieldgateVariantArrayLengthBounded(t *testing.T) {
	// 65,535 Variant elements declared in 1 byte.
	b := []byte{byte(TypeIDVariant) | VariantArrayValues}
	b = append(b, le32(0xffff)...)
	b = append(b, 0)
	if _, err := new(Variant).Decode(b); err == nil {
		t.Fatal("65,535 elements decoded from 1 byte")
	}
}

func TestFieldgateSliceBounded(t *testing.T) {
	// A ReadRequest whose NodesToRead declares 100,000,000 elements in
	// the last 4 bytes of the message.
	req := &ReadRequest{RequestHeader: &RequestHeader{AuthenticationToken: NewTwoByteNodeID(0), AdditionalHeader: NewExtensionObject(nil)}}
	b, err := Encode(req)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b[:len(b)-4], le32(100_000_000)...)
	allocs := testing.AllocsPerRun(1, func() {
		if _, err := Decode(b, new(ReadRequest)); err == nil {
			t.Fatal("100,000,000 elements decoded")
		}
	})
	if allocs > 200 {
		t.Fatalf("%v allocations for a refused array", allocs)
	}
}

func TestFieldgateArraysStillDecode(t *testing.T) {
	v := MustVariant([][]int32{{1, 2, 3}, {4, 5, 6}})
	b, err := v.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got := new(Variant)
	if _, err := got.Decode(b); err != nil {
		t.Fatal(err)
	}
	if a := got.Value().([][]int32); len(a) != 2 || a[1][2] != 6 {
		t.Fatalf("got %v", got.Value())
	}
}
