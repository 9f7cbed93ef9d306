// fieldgate patch: tests for the patches listed in PATCHES.md.

package packets

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// A Variable Byte Integer is at most 4 bytes and minimal [MQTT-1.5.5-1]
// (patch: memory bomb).
func TestDecodeLengthMinimal(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		n    int
		bu   int
		fail bool
	}{
		{in: []byte{0x00}, n: 0, bu: 1},
		{in: []byte{0x7F}, n: 127, bu: 1},
		{in: []byte{0x80, 0x01}, n: 128, bu: 2},
		{in: []byte{0xFF, 0x7F}, n: 16383, bu: 2},
		{in: []byte{0x80, 0x80, 0x01}, n: 16384, bu: 3},
		{in: []byte{0xFF, 0xFF, 0xFF, 0x7F}, n: 268435455, bu: 4},
		{in: []byte{0x80, 0x00}, fail: true},                         // 0 in two bytes
		{in: []byte{0xFF, 0x00}, fail: true},                         // 127 in two bytes
		{in: []byte{0x80, 0x80, 0x80, 0x00}, fail: true},             // 0 in four bytes
		{in: []byte{0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, fail: true},       // five bytes
		{in: []byte{0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x00}, fail: true}, // issue 17: 268,435,455 in six
		{in: []byte{0x80, 0x80, 0x80, 0x80, 0x01}, fail: true},
	} {
		n, bu, err := DecodeLength(bytes.NewReader(tc.in))
		if tc.fail {
			require.ErrorIs(t, err, ErrMalformedVariableByteInteger, "% x", tc.in)
			require.LessOrEqual(t, bu, 4)
			continue
		}
		require.NoError(t, err, "% x", tc.in)
		require.Equal(t, tc.n, n)
		require.Equal(t, tc.bu, bu)
	}
}
