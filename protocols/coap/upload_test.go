package coap

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
)

// blockReq is one Block1 request as libcoap sends it: its own token and
// message ID, the block, Size1 and Request-Tag.
func blockReq(t *testing.T, mid uint16, token byte, tag string, path string, num int64, more bool, payload []byte) message.Message {
	t.Helper()
	block, err := blockwise.EncodeBlockOption(blockwise.SZX64, num, more)
	if err != nil {
		t.Fatal(err)
	}
	opts := message.Options{{ID: message.URIPath, Value: []byte("ps")}, {ID: message.URIPath, Value: []byte(path)}}
	opts = append(opts, blockOption(message.Block1, block), blockOption(message.Size1, 320))
	if tag != "" {
		opts = append(opts, message.Option{ID: optRequestTag, Value: []byte(tag)})
	}
	return message.Message{Type: message.Confirmable, Code: codes.PUT, MessageID: int32(mid), Token: []byte{token, 0, 0, 3}, Options: opts, Payload: payload}
}

// exchange sends m and reads the piggybacked answer.
func (p *rawPeer) exchange(m message.Message) message.Message {
	p.t.Helper()
	p.send(m)
	a := p.read()
	if a.Type != message.Acknowledgement || a.MessageID != m.MessageID || !bytes.Equal(a.Token, m.Token) {
		p.t.Fatalf("answer %v to %v", a.String(), m.String())
	}
	return a
}

func block1Of(t *testing.T, m message.Message) (int64, bool) {
	t.Helper()
	for _, o := range m.Options {
		if o.ID == message.Block1 {
			v, _, err := message.DecodeUint32(o.Value)
			if err != nil {
				t.Fatal(err)
			}
			_, num, more, err := blockwise.DecodeBlockOption(v)
			if err != nil {
				t.Fatal(err)
			}
			return num, more
		}
	}
	t.Fatalf("no Block1 in %v", m.String())
	return 0, false
}

// TestUploadNewTokenPerBlock uploads as libcoap does: a new token for every
// block, the body tied together by Request-Tag (RFC 7959 lets the token
// change; RFC 9175 §3). go-coap's blockwise keys transfers by token and
// published only the last block.
func TestUploadNewTokenPerBlock(t *testing.T) {
	e := startEnv(t, nil, func(c *Config) { c.MaxPayload = 1000 })
	msgs := e.capture("blk")
	body := numbered(300) // blocks 0-3 of 64 bytes, block 4 of 44
	blk := func(i int) []byte { return body[i*64 : min((i+1)*64, len(body))] }

	t.Run("interleaved bodies, retransmissions", func(t *testing.T) {
		p := newRawPeer(t, e.addr)
		other := numbered(600)[300:] // another body, same endpoint and URI, another Request-Tag
		oblk := func(i int) []byte { return other[i*64 : min((i+1)*64, len(other))] }
		mid := uint16(1000)
		next := func() uint16 { mid++; return mid }
		for i := range 4 {
			for _, r := range []message.Message{
				blockReq(t, next(), byte(10+i), "tagA", "blk", int64(i), true, blk(i)),
				blockReq(t, next(), byte(20+i), "tagB", "blk", int64(i), true, oblk(i)),
			} {
				a := p.exchange(r)
				if a.Code != codes.Continue {
					t.Fatalf("block %d: %v", i, a.String())
				}
				if num, more := block1Of(t, a); num != int64(i) || !more {
					t.Fatalf("2.31 echoes block %d more %v", num, more)
				}
				if i == 1 {
					// The ACK got lost: the same message again is acknowledged
					// again and appended once.
					if a := p.exchange(r); a.Code != codes.Continue {
						t.Fatalf("retransmitted block: %v", a.String())
					}
				}
			}
		}
		a := p.exchange(blockReq(t, next(), 14, "tagA", "blk", 4, false, blk(4)))
		if a.Code != codes.Changed {
			t.Fatalf("final block: %v (%s)", a.String(), a.Payload)
		}
		if num, more := block1Of(t, a); num != 4 || more {
			t.Fatalf("final answer echoes block %d more %v", num, more)
		}
		if m := recv(t, msgs); !bytes.Equal(m.Payload, body) {
			t.Fatalf("published %d bytes %q", len(m.Payload), m.Payload)
		}
		if a := p.exchange(blockReq(t, next(), 24, "tagB", "blk", 4, false, oblk(4))); a.Code != codes.Changed {
			t.Fatalf("final block B: %v", a.String())
		}
		if m := recv(t, msgs); !bytes.Equal(m.Payload, other) {
			t.Fatalf("published %d bytes", len(m.Payload))
		}
	})
	t.Run("gap", func(t *testing.T) {
		p := newRawPeer(t, e.addr)
		if a := p.exchange(blockReq(t, 2001, 1, "g", "blk", 0, true, blk(0))); a.Code != codes.Continue {
			t.Fatalf("block 0: %v", a.String())
		}
		if a := p.exchange(blockReq(t, 2002, 2, "g", "blk", 2, true, blk(2))); a.Code != codes.RequestEntityIncomplete {
			t.Fatalf("block 2 after 0: %v, want 4.08", a.String())
		}
		// The upload is gone: its last block alone is not a body.
		if a := p.exchange(blockReq(t, 2003, 3, "g", "blk", 4, false, blk(4))); a.Code != codes.RequestEntityIncomplete {
			t.Fatalf("last block of a dropped upload: %v, want 4.08", a.String())
		}
		if a := p.exchange(blockReq(t, 2004, 4, "never", "blk", 3, true, blk(3))); a.Code != codes.RequestEntityIncomplete {
			t.Fatalf("middle block of an unknown upload: %v, want 4.08", a.String())
		}
	})
	t.Run("too large", func(t *testing.T) {
		p := newRawPeer(t, e.addr)
		chunk := bytes.Repeat([]byte("x"), 64)
		var a message.Message
		for i := range 16 {
			if a = p.exchange(blockReq(t, uint16(3000+i), byte(i), "big", "blk", int64(i), true, chunk)); a.Code != codes.Continue {
				break
			}
		}
		if a.Code != codes.RequestEntityTooLarge {
			t.Fatalf("1024 bytes with max_payload 1000: %v", a.String())
		}
	})
	t.Run("short middle block", func(t *testing.T) {
		p := newRawPeer(t, e.addr)
		if a := p.exchange(blockReq(t, 4001, 1, "s", "blk", 0, true, []byte("short"))); a.Code != codes.BadRequest {
			t.Fatalf("5 bytes in a 64-byte block: %v, want 4.00", a.String())
		}
	})
	noMessage(t, msgs, 50*time.Millisecond)
}

// TestUploadExpires forgets an upload whose next block does not come
// within block_timeout.
func TestUploadExpires(t *testing.T) {
	e := startEnv(t, nil, func(c *Config) { c.BlockTimeout = time.Second })
	p := newRawPeer(t, e.addr)
	body := numbered(128)
	if a := p.exchange(blockReq(t, 1, 1, "x", "exp", 0, true, body[:64])); a.Code != codes.Continue {
		t.Fatalf("block 0: %v", a.String())
	}
	eventually(t, "upload expired", func() bool {
		e.g.uploads.mu.Lock()
		defer e.g.uploads.mu.Unlock()
		return len(e.g.uploads.m) == 0
	})
	if a := p.exchange(blockReq(t, 2, 2, "x", "exp", 1, false, body[64:])); a.Code != codes.RequestEntityIncomplete {
		t.Fatalf("last block after expiry: %v, want 4.08", a.String())
	}
}

// fuzzByte is the byte at offset off of the body uploaded under key k in
// FuzzBlock1: every block a step sends carries the bytes of its offset, so
// a reassembled body must read back exactly this sequence.
func fuzzByte(k int, off int64) byte { return byte(off*7 + off>>8 + int64(k)*13) }

// FuzzBlock1 drives the Block1 reassembler (uploads.add, uploads.expire)
// with a sequence of blocks read from the input, 5 bytes a step:
//
//	b0: bit 0-2 SZX (7 is BERT, refused), bit 3 M, bit 4 raw (b1 b3 b4
//	    form the Block1 value as is), bit 5 advance the clock past the
//	    timeout, bit 6-7 message ID
//	b1: block number
//	b2: upload key (256 bodies, more than maxUploads)
//	b3: payload length: < 0xc0 a whole block, else b3-0xc0 bytes
//	b4: Size1 hint, in units of 16 bytes
//
// It must never panic; it must answer each block with one of the codes of
// RFC 7959; what it accepted must stay accepted; a completed body must be
// exactly the blocks in order, never over the limit, and the number of
// uploads held never above maxUploads. The seeds (testdata/fuzz/FuzzBlock1)
// are named for the case they start from.
func FuzzBlock1(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 2000
		const timeout = time.Second
		us := uploads{m: make(map[string]*upload)}
		now := time.Unix(0, 0)
		for len(data) >= 5 {
			b := data[:5]
			data = data[5:]
			k := int(b[2])
			key := strconv.Itoa(k)
			var block uint32
			if b[0]&0x10 != 0 {
				block = uint32(b[1])<<16 | uint32(b[3])<<8 | uint32(b[4])
			} else {
				var err error
				block, err = blockwise.EncodeBlockOption(blockwise.SZX(b[0]&7), int64(b[1]), b[0]&8 != 0)
				if err != nil {
					t.Fatal(err)
				}
			}
			if b[0]&0x20 != 0 {
				now = now.Add(timeout + time.Millisecond)
				us.expire(now)
			}
			szx, num, more, err := blockwise.DecodeBlockOption(block)
			size := int64(16)
			if err == nil && szx <= blockwise.SZX1024 {
				size = szx.Size()
			}
			n := size
			if b[3] >= 0xc0 {
				n = int64(b[3] - 0xc0)
			}
			off := num * size
			payload := make([]byte, n)
			for i := range payload {
				payload[i] = fuzzByte(k, off+int64(i))
			}
			before := int64(-1)
			if u := us.m[key]; u != nil {
				before = int64(len(u.body))
			}
			r := us.add(key, int32(b[0]>>6), block, payload, int64(b[4])*16, limit, timeout, now)
			if len(us.m) > maxUploads {
				t.Fatalf("%d uploads held", len(us.m))
			}
			u := us.m[key]
			switch {
			case r.pass && r.body != nil:
				if int64(len(r.body)) != off+n || len(r.body) > limit {
					t.Fatalf("block %d+%d: body of %d bytes", off, n, len(r.body))
				}
				for i, c := range r.body {
					if c != fuzzByte(k, int64(i)) {
						t.Fatalf("body byte %d is %#x, want %#x", i, c, fuzzByte(k, int64(i)))
					}
				}
				if u != nil {
					t.Fatal("completed upload still held")
				}
			case r.pass:
				if !(num == 0 && !more) && before >= 0 {
					t.Fatalf("block %d of a held upload passed on without its body", num)
				}
			case r.code == codes.Continue:
				if !more || u == nil || int64(len(u.body)) < off+n {
					t.Fatalf("2.31 for block %d (more %v) without holding its bytes", num, more)
				}
				if num > 0 && int64(len(u.body)) < before {
					t.Fatalf("upload shrank from %d to %d bytes", before, len(u.body))
				}
				for i, c := range u.body {
					if c != fuzzByte(k, int64(i)) {
						t.Fatalf("held byte %d is %#x, want %#x", i, c, fuzzByte(k, int64(i)))
					}
				}
			case r.code == codes.BadOption, r.code == codes.BadRequest, r.code == codes.RequestEntityTooLarge,
				r.code == codes.ServiceUnavailable:
				if before >= 0 && (u == nil || int64(len(u.body)) != before) {
					t.Fatalf("refusal %v changed the upload held", r.code)
				}
			case r.code == codes.RequestEntityIncomplete:
			default:
				t.Fatalf("answer %v", r.code)
			}
		}
	})
}
