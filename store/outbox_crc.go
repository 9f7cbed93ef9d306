package store

// Telling a damaged key from a damaged value. A record's checksum covers its
// key and its value (recordCRC), so a failed checksum alone does not say
// which was hit. CRC-32C is linear: for two messages of equal length that
// differ by e, crc(a) ^ crc(b) = raw(e), the register of the bare polynomial
// division of e (no initial value, no final xor). An error confined to the
// 8-byte key, followed by the n bytes of the value that the checksum covers,
// gives raw(e ‖ 0ⁿ) = shiftₙ(raw(e)). keyDamaged computes the syndrome of a
// record and checks whether one changed key byte (8 × 255 candidates)
// explains it; shiftₙ is built with zlib's crc32_combine matrices, so the
// test costs a few thousand word operations whatever the value's size.
// A false match needs a 32-bit coincidence among 2,040 candidates (about
// 1 in 2 million bad records): it could only turn a "checksum" count into a
// "corrupt" one, never keep or lose a record.

import "hash/crc32"

// castagnoliPoly is CRC-32C's polynomial in the reflected form crc32 uses.
const castagnoliPoly = 0x82F63B78

// keyDamaged reports whether the record (key, value) fails its checksum
// because exactly one byte of its key changed, the value being intact.
func keyDamaged(key, value []byte) bool {
	if len(key) != 8 || len(value) < recHeaderSize {
		return false
	}
	syndrome := be.Uint32(value) ^ recordCRC(key, value)
	if syndrome == 0 {
		return false // the record checks
	}
	// basis[8p+b] = shiftₙ(raw(e)) for e a single bit b of key byte p.
	n := int64(len(value) - 4)
	op := zeroShift(n)
	var basis [64]uint32
	var e [8]byte
	for p := range 8 {
		for b := range 8 {
			e = [8]byte{}
			e[p] = 1 << b
			basis[8*p+b] = gf2Times(op, rawCRC(e[:]))
		}
	}
	for p := range 8 {
		for x := 1; x < 256; x++ {
			var d uint32
			for b := range 8 {
				if x&(1<<b) != 0 {
					d ^= basis[8*p+b]
				}
			}
			if d == syndrome {
				return true
			}
		}
	}
	return false
}

// rawCRC is the CRC-32C register of p from a zero register, without the
// final xor: the linear part of crc32.Checksum.
func rawCRC(p []byte) uint32 {
	return ^crc32.Update(^uint32(0), castagnoli, p)
}

// gf2Times multiplies the 32×32 GF(2) matrix mat (one column per bit) by vec.
func gf2Times(mat *[32]uint32, vec uint32) uint32 {
	var sum uint32
	for i := 0; vec != 0; i, vec = i+1, vec>>1 {
		if vec&1 != 0 {
			sum ^= mat[i]
		}
	}
	return sum
}

// gf2Square sets square to mat × mat.
func gf2Square(square, mat *[32]uint32) {
	for i := range 32 {
		square[i] = gf2Times(mat, mat[i])
	}
}

// zeroShift returns the operator that advances a raw CRC-32C register over
// n zero bytes (zlib's crc32_combine construction).
func zeroShift(n int64) *[32]uint32 {
	var odd, even, result [32]uint32
	for i := range 32 {
		result[i] = 1 << i // identity
	}
	odd[0] = castagnoliPoly // the operator for one zero bit
	row := uint32(1)
	for i := 1; i < 32; i++ {
		odd[i] = row
		row <<= 1
	}
	gf2Square(&even, &odd) // two zero bits
	gf2Square(&odd, &even) // four zero bits
	mul := func(op *[32]uint32) {
		var next [32]uint32
		for i := range 32 {
			next[i] = gf2Times(op, result[i])
		}
		result = next
	}
	for n > 0 {
		gf2Square(&even, &odd) // one zero byte, then 4, 16, ... bytes
		if n&1 != 0 {
			mul(&even)
		}
		n >>= 1
		if n == 0 {
			break
		}
		gf2Square(&odd, &even)
		if n&1 != 0 {
			mul(&odd)
		}
		n >>= 1
	}
	return &result
}
