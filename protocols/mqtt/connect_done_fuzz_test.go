package mqtt

import "testing"

// FuzzConnectDone checks clientConn's record of a client that is done
// sending (it decides whether Close lingers): after a stream of whole
// packets fed in arbitrary cuts, done is doneDisconnect exactly when the
// last packet was a DISCONNECT, whatever came before; any byte after the
// DISCONNECT clears it.
func FuzzConnectDone(f *testing.F) {
	f.Add([]byte{1, 2, 3}, []byte{1}, true, uint8(0))
	f.Add([]byte{}, []byte{}, true, uint8(2))
	f.Add(make([]byte, 300), []byte{7, 1}, false, uint8(1))
	f.Add([]byte{0xE0, 0x00, 0xE0}, []byte{2}, true, uint8(3))
	f.Fuzz(func(t *testing.T, data, cuts []byte, bye bool, tail uint8) {
		stream := secConnectPkt(5, "fuzz", "", "")
		for rest := data; len(rest) > 0; {
			take := min(len(rest), 1+int(rest[0]))
			if rest[0]%3 == 0 {
				stream = append(stream, 0xC0, 0x00) // PINGREQ
			} else {
				stream = append(stream, secPublishPkt(5, "t", 0, 0, rest[:take])...)
			}
			rest = rest[take:]
		}
		want := doneNot
		if bye {
			stream = append(stream, 0xE0, 0x00) // DISCONNECT
			want = doneDisconnect
		}
		if n := int(tail % 4); n > 0 {
			// A packet, or the start of one, after the last packet.
			stream = append(stream, []byte{0xC0, 0x00, 0xE0}[:min(n, 3)]...)
			want = doneNot
		}
		c := newClientConn(nil, 0)
		for _, chunk := range secCut(stream, cuts) {
			if k, err := c.scan(chunk); err != nil {
				t.Fatalf("valid stream refused at offset %d of a chunk: %v", k, err)
			}
		}
		if got := c.done.Load(); got != want {
			t.Fatalf("done = %d after the stream (DISCONNECT last: %v, tail %d), want %d", got, bye, tail%4, want)
		}
	})
}
