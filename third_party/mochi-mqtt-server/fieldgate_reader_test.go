// fieldgate patch: tests of the idle memory patch (connReader) in
// PATCHES.md.

package mqtt

import (
	"bytes"
	"io"
	"math/rand"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

// TestConnReaderReadsWhatWasSent: mixed ReadByte and Read calls of many
// sizes through readers that return little, much, or data with the error,
// give back the bytes sent, then the error.
func TestConnReaderReadsWhatWasSent(t *testing.T) {
	data := make([]byte, 200_000)
	rnd := rand.New(rand.NewSource(1))
	rnd.Read(data)
	readers := map[string]func(io.Reader) io.Reader{
		"plain":   func(r io.Reader) io.Reader { return r },
		"onebyte": iotest.OneByteReader,
		"half":    iotest.HalfReader,
		"dataerr": iotest.DataErrReader,
		"timeout": iotest.TimeoutReader,
	}
	for name, wrap := range readers {
		t.Run(name, func(t *testing.T) {
			b := newConnReader(wrap(bytes.NewReader(data)), 1024)
			var got []byte
			for len(got) < len(data) {
				switch n := rnd.Intn(3000); {
				case n < 500:
					c, err := b.ReadByte()
					if err == iotest.ErrTimeout {
						continue
					}
					require.NoError(t, err)
					got = append(got, c)
				default:
					p := make([]byte, min(n, len(data)-len(got)))
					k, err := io.ReadFull(b, p)
					got = append(got, p[:k]...)
					if err == iotest.ErrTimeout {
						continue
					}
					require.NoError(t, err)
				}
			}
			require.Equal(t, data, got)
			_, err := b.ReadByte()
			if err == iotest.ErrTimeout {
				_, err = b.ReadByte()
			}
			require.ErrorIs(t, err, io.EOF)
		})
	}
}

// TestConnReaderReleasesLargeBuffer: the large buffer is taken when the
// client sends more than the small one holds and given back when the burst
// is over.
func TestConnReaderReleasesLargeBuffer(t *testing.T) {
	var src bytes.Buffer
	b := newConnReader(&src, 1024)
	src.Write(make([]byte, 10))
	_, err := b.ReadByte()
	require.NoError(t, err)
	require.Nil(t, b.big, "a small read needs no large buffer")
	_, err = io.ReadFull(b, make([]byte, 9))
	require.NoError(t, err)

	src.Write(make([]byte, 3000)) // a burst, read in small packets
	took := false
	for i := 0; i < 30; i++ {
		_, err = io.ReadFull(b, make([]byte, 100))
		require.NoError(t, err)
		took = took || b.big != nil
	}
	require.True(t, took, "a burst takes the large buffer")

	src.Write([]byte{1, 2})
	_, err = io.ReadFull(b, make([]byte, 2))
	require.NoError(t, err)
	src.Write([]byte{3})
	c, err := b.ReadByte()
	require.NoError(t, err)
	require.Equal(t, byte(3), c)
	require.Nil(t, b.big, "the large buffer went back once the burst was read")
}

// FuzzConnReader: whatever the bytes and however the calls are split, the
// reader gives back exactly the bytes it was given.
func FuzzConnReader(f *testing.F) {
	f.Add([]byte{0x30, 0x05, 0, 1, 'a', 'b', 'c'}, []byte{1, 200, 3})
	f.Add(make([]byte, 5000), []byte{255, 0, 128, 7})
	f.Fuzz(func(t *testing.T, data, sizes []byte) {
		b := newConnReader(iotest.HalfReader(bytes.NewReader(data)), 256)
		var got []byte
		for i := 0; len(got) < len(data); i++ {
			n := 1
			if len(sizes) > 0 {
				n = int(sizes[i%len(sizes)])
			}
			if n == 0 {
				c, err := b.ReadByte()
				if err != nil {
					t.Fatalf("ReadByte after %d of %d bytes: %v", len(got), len(data), err)
				}
				got = append(got, c)
				continue
			}
			p := make([]byte, min(n, len(data)-len(got)))
			k, err := io.ReadFull(b, p)
			got = append(got, p[:k]...)
			if err != nil {
				t.Fatalf("Read after %d of %d bytes: %v", len(got), len(data), err)
			}
		}
		if !bytes.Equal(data, got) {
			t.Fatal("bytes differ")
		}
		if _, err := b.ReadByte(); err != io.EOF {
			t.Fatalf("after the end: %v, want EOF", err)
		}
	})
}
