package coap

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// optRequestTag is the Request-Tag option (RFC 9175 §3): it tells apart
// the bodies a client uploads block-wise, whatever their tokens.
const optRequestTag message.OptionID = 292

// maxUploads bounds the block-wise uploads being reassembled at once (each
// up to max_payload bytes); beyond it a new upload gets 5.03.
const maxUploads = 64

// The gateway reassembles Block1 uploads (RFC 7959 §2.5) itself, in its
// request monitor, rather than leaving them to go-coap's blockwise layer:
// go-coap keys a transfer by its token, but RFC 7959 lets a client change
// the token on every block, and libcoap does (a new token per block, the
// body tied together by Request-Tag). go-coap then took every block for a
// new transfer and handed the last one alone to the handler. Here a
// transfer is keyed as RFC 7959 and RFC 9175 say: endpoint, method, URI and
// Request-Tag. Intermediate blocks are answered 2.31 Continue here and never
// reach go-coap; the final block is replaced by the whole body and goes on
// to the handler as one request.

// uploads are the block-wise uploads being reassembled.
type uploads struct {
	mu sync.Mutex
	m  map[string]*upload
}

// upload is one body being received.
type upload struct {
	body     []byte
	firstMID int32 // message ID of block 0, to tell its retransmission from a restart
	expires  time.Time
}

// assembledKey marks (in its context) a request whose body the monitor
// reassembled; the value is the Block1 option to echo in the response.
type assembledKey struct{}

// uploadKey identifies the body a Block1 request belongs to.
func uploadKey(remote string, m *pool.Message) string {
	var b bytes.Buffer
	b.WriteString(remote)
	b.WriteByte('|')
	b.WriteString(m.Code().String())
	for _, o := range m.Options() {
		switch o.ID {
		case message.URIPath, message.URIQuery, optRequestTag:
			b.WriteByte('|')
			b.WriteString(strconv.Itoa(int(o.ID)))
			b.WriteByte('=')
			b.WriteString(hex.EncodeToString(o.Value))
		}
	}
	return b.String()
}

// block1 handles a POST or PUT carrying a Block1 option; it returns true
// when the monitor answered the message and go-coap must drop it. The
// final block of an upload leaves with the whole body in place of its own.
func (g *Gateway) block1(cc *udpClient.Conn, m *pool.Message, block uint32) bool {
	limit := int64(g.cfg.MaxPayload)
	payload, err := readAll(m)
	if err != nil {
		g.answer(cc, m, codes.BadRequest, nil, "cannot read payload")
		return true
	}
	key := uploadKey(cc.RemoteAddr().String(), m)
	r := g.uploads.add(key, m.MessageID(), block, payload, sizeHint(m, limit), limit, g.cfg.BlockTimeout, time.Now())
	switch {
	case r.pass && r.body == nil:
		return false
	case r.pass:
		m.SetBody(bytes.NewReader(r.body))
		m.Remove(message.Block1)
		m.Remove(message.Size1)
		m.SetContext(context.WithValue(m.Context(), assembledKey{}, block))
		return false
	case r.code == codes.RequestEntityTooLarge:
		g.tooLarge(cc, m)
	case r.code == codes.Continue:
		g.answer(cc, m, codes.Continue, []message.Option{blockOption(message.Block1, block)}, "")
	default:
		g.answer(cc, m, r.code, nil, r.diag)
	}
	return true
}

// blockResult is what the reassembler makes of one Block1 request.
type blockResult struct {
	// pass: go-coap handles the request; body, when not nil, is the whole
	// reassembled upload and replaces the request's payload.
	pass bool
	body []byte
	// Otherwise code is the answer (2.31 Continue or an error) and diag
	// its diagnostic.
	code codes.Code
	diag string
}

// add takes one Block1 request of the upload key (message ID mid, raw
// Block1 option value block, its payload) and decides what becomes of it.
// hint is the capacity to reserve for a new body (Size1, or 0), limit the
// largest body accepted, timeout how long an upload waits for its next
// block. It is pure but for the map of uploads, so that it can be fuzzed
// without sockets.
func (us *uploads) add(key string, mid int32, block uint32, payload []byte, hint, limit int64, timeout time.Duration, now time.Time) blockResult {
	szx, num, more, err := blockwise.DecodeBlockOption(block)
	if err != nil || szx > blockwise.SZX1024 { // BERT is for CoAP over TCP only
		return blockResult{code: codes.BadOption, diag: "bad Block1 option"}
	}
	off, n := num*szx.Size(), int64(len(payload))
	if off+n > limit {
		return blockResult{code: codes.RequestEntityTooLarge}
	}
	if !more && num == 0 {
		return blockResult{pass: true} // the whole body in one block
	}
	if more && n != szx.Size() {
		return blockResult{code: codes.BadRequest, diag: fmt.Sprintf("Block1 %d: %d bytes in a block of %d", num, n, szx.Size())}
	}
	us.mu.Lock()
	defer us.mu.Unlock()
	u := us.m[key]
	switch {
	case num == 0 && u != nil && u.firstMID == mid:
		// Block 0 again, retransmitted: acknowledged again below.
	case num == 0:
		if u == nil && len(us.m) >= maxUploads {
			return blockResult{code: codes.ServiceUnavailable, diag: "too many block-wise uploads"}
		}
		u = &upload{body: make([]byte, 0, max(n, hint)), firstMID: mid}
		us.m[key] = u
	case u == nil && !more:
		// The final block of an upload already complete (a retransmission
		// go-coap answers from its response cache) or of one this gateway
		// never saw: the handler answers 4.08 unless the cache does.
		return blockResult{pass: true}
	case u == nil:
		return blockResult{code: codes.RequestEntityIncomplete, diag: "block-wise upload unknown or expired: start again with block 0"}
	}
	blen := int64(len(u.body))
	switch {
	case off == blen:
		u.body = append(u.body, payload...)
	case more && off+n <= blen:
		// A retransmitted block, already appended: acknowledge it again.
	default:
		delete(us.m, key)
		return blockResult{code: codes.RequestEntityIncomplete, diag: fmt.Sprintf("Block1 %d does not follow the %d bytes received", num, blen)}
	}
	if more {
		u.expires = now.Add(timeout)
		return blockResult{code: codes.Continue}
	}
	delete(us.m, key)
	return blockResult{pass: true, body: u.body}
}

// sizeHint is the Size1 the client announced, if plausible: the capacity
// to reserve for the body.
func sizeHint(m *pool.Message, limit int64) int64 {
	s, err := m.GetOptionUint32(message.Size1)
	if err != nil || int64(s) > limit {
		return 0
	}
	return int64(s)
}

func readAll(m *pool.Message) ([]byte, error) {
	if m.Body() == nil {
		return nil, nil
	}
	if _, err := m.Body().Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(m.Body())
}

func blockOption(id message.OptionID, v uint32) message.Option {
	buf := make([]byte, 4)
	n, _ := message.EncodeUint32(buf, v)
	return message.Option{ID: id, Value: buf[:n]}
}

// expireUploads forgets uploads whose next block did not come in time.
func (g *Gateway) expireUploads(now time.Time) { g.uploads.expire(now) }

// expire forgets the uploads whose next block is overdue at now.
func (us *uploads) expire(now time.Time) {
	us.mu.Lock()
	defer us.mu.Unlock()
	for k, u := range us.m {
		if now.After(u.expires) {
			delete(us.m, k)
		}
	}
}

// answer sends a response to m from the request monitor: piggybacked on
// the ACK of a CON request, NON otherwise.
func (g *Gateway) answer(cc *udpClient.Conn, req *pool.Message, code codes.Code, opts []message.Option, diagnostic string) {
	if code >= codes.BadRequest {
		g.stats.failed(code)
		g.warn.warn(code.String(), "coap request refused", "remote", cc.RemoteAddr().String(), "code", code.String(), "error", diagnostic)
	}
	resp := cc.AcquireMessage(cc.Context())
	defer cc.ReleaseMessage(resp)
	resp.SetCode(code)
	resp.SetToken(req.Token())
	if req.Type() == message.Confirmable {
		resp.SetType(message.Acknowledgement)
		resp.SetMessageID(req.MessageID())
	} else {
		resp.SetType(message.NonConfirmable)
		resp.SetMessageID(cc.GetMessageID())
	}
	for _, o := range opts {
		resp.SetOptionBytes(o.ID, o.Value)
	}
	if diagnostic != "" {
		resp.SetContentFormat(message.TextPlain)
		resp.SetBody(bytes.NewReader([]byte(diagnostic)))
	}
	if err := cc.Session().WriteMessage(resp); err != nil {
		g.warn.debug("write-"+code.String(), "coap: cannot answer", "code", code.String(), "error", err)
	}
}
