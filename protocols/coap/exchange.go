package coap

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/fieldgate/fieldgate/bus"
)

// exchange is one request being handled.
type exchange struct {
	g   *Gateway
	w   *responsewriter.ResponseWriter[*udpClient.Conn]
	r   *pool.Message
	req Request
	cc  *udpClient.Conn
}

// ctx is the context of the broker operations of a request: it ends with
// the gateway.
func (x *exchange) ctx() context.Context { return x.g.runCtx }

// reply sets a response with an optional text payload.
func (x *exchange) reply(code codes.Code, payload []byte, opts ...message.Option) error {
	var body io.ReadSeeker
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	if err := x.w.SetResponse(code, message.TextPlain, body, opts...); err != nil {
		return fmt.Errorf("coap: set response: %w", err)
	}
	return nil
}

// publish handles POST/PUT /ps/{topic} and PUT /mqtt/{topic}. A CON
// request is answered 2.04 only after the broker accepted the message
// (PUBACK for QoS 1, PUBCOMP for QoS 2).
func (x *exchange) publish() error {
	payload, err := x.r.ReadBody()
	if err != nil {
		return badRequest("cannot read payload: %v", err)
	}
	if len(payload) > x.g.cfg.MaxPayload {
		return &RequestError{Code: codes.RequestEntityTooLarge, Reason: fmt.Sprintf("payload larger than %d bytes", x.g.cfg.MaxPayload)}
	}
	d, err := x.deviceFor()
	if err != nil {
		return err
	}
	m := bus.Message{Topic: x.req.Topic, Payload: payload, Retain: x.req.Retain}
	if x.r.Type() == message.Confirmable {
		m.QoS = 1
	}
	if x.req.QoS >= 0 {
		m.QoS = byte(x.req.QoS)
	}
	if x.req.HasExpiry {
		m.Expiry = x.req.Expiry
	}
	if cf, err := x.r.ContentFormat(); err == nil {
		m.ContentType = contentTypeOf(cf)
	}
	ctx, cancel := context.WithTimeout(x.ctx(), brokerTimeout)
	defer cancel()
	if err := d.sess.Publish(ctx, m); err != nil {
		return brokerError(err)
	}
	x.g.stats.publishes.Add(1)
	return x.reply(codes.Changed, nil)
}

// get handles GET /ps/{filter}: Observe=0 observes, Observe=1 stops, no
// Observe reads the retained message (or, with Block2, the rest of the
// last notification this endpoint got from that filter).
func (x *exchange) get() error {
	obs, err := x.r.Observe()
	switch {
	case err == nil && obs == 0:
		return x.observe()
	case err == nil && obs == 1:
		return x.unobserve()
	case err == nil:
		return badRequest("Observe must be 0 (register) or 1 (deregister), got %d", obs)
	}
	if block, err := x.r.GetOptionUint32(message.Block2); err == nil && block>>4 > 0 {
		if m := x.g.lastNotified(x.cc.RemoteAddr().String(), x.req.Topic); m != nil {
			return x.content(*m)
		}
	}
	if !bus.ValidFilter(x.req.Topic) || containsWildcard(x.req.Topic) {
		return badRequest("wildcards need Observe: a GET without Observe reads one topic's retained message")
	}
	d, err := x.deviceFor()
	if err != nil {
		return err
	}
	m, err := d.retained(x.ctx(), x.req.Topic)
	if err != nil {
		return err
	}
	if m == nil {
		return &RequestError{Code: codes.NotFound, Reason: "no retained message"}
	}
	return x.content(*m)
}

// content answers 2.05 with a message's payload and content format;
// go-coap splits a large one into Block2 blocks.
func (x *exchange) content(m bus.Message) error {
	cf, ok := contentFormatOf(m.ContentType)
	if err := x.w.SetResponse(codes.Content, cf, bytes.NewReader(m.Payload)); err != nil {
		return fmt.Errorf("coap: set response: %w", err)
	}
	if !ok {
		x.w.Message().Remove(message.ContentFormat)
	}
	return nil
}

func containsWildcard(t string) bool { return bytes.ContainsAny([]byte(t), "+#") }
