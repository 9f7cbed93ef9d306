package coap

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/fieldgate/fieldgate/gateway/bus"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// observation is one observer of one filter (RFC 7641 §4.1: one entry per
// client endpoint and resource).
type observation struct {
	d        *device
	key      string // endpoint|filter
	endpoint string
	filter   string
	cc       *udpClient.Conn
	// registered is closed once the registration is answered (the handler
	// returned): notifications wait for it.
	registered chan struct{}
	reset      atomic.Bool // the endpoint answered a notification with RST
	inflight   atomic.Bool // a CON notification waits for its ACK
	lastSent   atomic.Int64

	mu    sync.Mutex
	token message.Token
	seq   uint32
	last  *bus.Message // the last notification, for Block2 follow-ups
	ended bool
}

type onCloseKey struct{}

// observe handles GET with Observe=0: it subscribes the device's session
// (the ACL decides) and answers 2.05 with the Observe option. Retained
// messages and later ones come as notifications.
func (x *exchange) observe() error {
	d, err := x.deviceFor()
	if err != nil {
		return err
	}
	endpoint := x.cc.RemoteAddr().String()
	key := endpoint + "|" + x.req.Topic
	d.mu.Lock()
	o := d.obs[key]
	if o != nil {
		// Re-registration: same endpoint and resource, maybe a new token.
		o.mu.Lock()
		o.token = append(message.Token(nil), x.r.Token()...)
		seq := o.seq
		o.mu.Unlock()
		d.mu.Unlock()
		return x.reply(codes.Content, nil, message.Option{ID: message.Observe, Value: observeValue(seq)})
	}
	d.mu.Unlock()
	qos := byte(0)
	if x.r.Type() == message.Confirmable {
		qos = 1
	}
	if x.req.QoS >= 0 {
		qos = byte(x.req.QoS)
	}
	o = &observation{
		d: d, key: key, endpoint: endpoint, filter: x.req.Topic, cc: x.cc,
		registered: make(chan struct{}),
		token:      append(message.Token(nil), x.r.Token()...),
		seq:        2,
	}
	d.mu.Lock()
	d.obs[key] = o
	d.mu.Unlock()
	x.g.index(o)
	x.g.stats.observers.Add(1)
	if err := d.subscribe(x.ctx(), o.filter, qos); err != nil {
		d.dropObservation(o)
		return err
	}
	if x.cc.Context().Value(onCloseKey{}) == nil {
		x.cc.SetContextValue(onCloseKey{}, true)
		g := x.g
		x.cc.AddOnClose(func() { g.endpointClosed(endpoint) })
	}
	// Notifications wait until the handler returned, which is when go-coap
	// sends this answer.
	defer close(o.registered)
	return x.reply(codes.Content, nil, message.Option{ID: message.Observe, Value: observeValue(o.seq)})
}

// unobserve handles GET with Observe=1.
func (x *exchange) unobserve() error {
	key := x.cc.RemoteAddr().String() + "|" + x.req.Topic
	d, err := x.deviceFor()
	if err != nil {
		return err
	}
	d.mu.Lock()
	o := d.obs[key]
	d.mu.Unlock()
	if o != nil {
		d.removeObservation(x.ctx(), o)
	}
	return x.reply(codes.Content, nil)
}

func observeValue(seq uint32) []byte {
	v := make([]byte, 4)
	n, _ := message.EncodeUint32(v, seq&0xFFFFFF)
	return v[:n]
}

// subscribe adds one user of filter, subscribing the session for the first.
func (d *device) subscribe(ctx context.Context, filter string, qos byte) error {
	d.subMu.Lock()
	defer d.subMu.Unlock()
	if d.filters[filter] == 0 {
		ctx, cancel := context.WithTimeout(ctx, brokerTimeout)
		defer cancel()
		if _, err := d.sess.Subscribe(ctx, filter, qos); err != nil {
			return brokerError(err)
		}
	}
	d.filters[filter]++
	return nil
}

// unsubscribe removes one user of filter, unsubscribing after the last.
func (d *device) unsubscribe(ctx context.Context, filter string) {
	d.subMu.Lock()
	defer d.subMu.Unlock()
	d.filters[filter]--
	if d.filters[filter] > 0 {
		return
	}
	delete(d.filters, filter)
	ctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	defer cancel()
	if err := d.sess.Unsubscribe(ctx, filter); err != nil && !errors.Is(err, mqtt.ErrSessionClosed) {
		d.g.warn.warn("unsub-"+d.clientID, "coap: unsubscribe failed", "client", d.clientID, "filter", filter, "error", err)
	}
}

// dropObservation forgets an observation whose subscription failed.
func (d *device) dropObservation(o *observation) {
	d.mu.Lock()
	if d.obs[o.key] == o {
		delete(d.obs, o.key)
	}
	d.mu.Unlock()
	d.g.unindex(o)
	d.g.stats.observers.Add(-1)
}

// removeObservation ends an observation and its share of the subscription.
func (d *device) removeObservation(ctx context.Context, o *observation) {
	o.mu.Lock()
	ended := o.ended
	o.ended = true
	o.mu.Unlock()
	if ended {
		return
	}
	d.mu.Lock()
	if d.obs[o.key] == o {
		delete(d.obs, o.key)
	}
	d.mu.Unlock()
	d.g.unindex(o)
	d.g.stats.observers.Add(-1)
	d.unsubscribe(ctx, o.filter)
}

// notifyAll sends a delivery to every observation whose filter matches it,
// then acknowledges it: when every CON notification was ACKed, or given up
// (that observation then ends).
func (d *device) notifyAll(ctx context.Context, m mqtt.Delivery) {
	defer m.Ack()
	d.mu.Lock()
	var targets []*observation
	for _, o := range d.obs {
		if bus.Match(o.filter, m.Topic) {
			targets = append(targets, o)
		}
	}
	d.mu.Unlock()
	for _, o := range targets {
		select {
		case <-o.registered:
		case <-ctx.Done():
			return
		}
		if err := d.notify(ctx, o, m.Message); err != nil {
			d.g.warn.warn("notify-"+o.endpoint, "coap: observation ended", "client", d.clientID, "endpoint", o.endpoint, "filter", o.filter, "reason", err)
			d.removeObservation(ctx, o)
		}
	}
}

var errReset = errors.New("notification rejected with RST")

// notify sends one notification; CON ones wait for the ACK.
func (d *device) notify(ctx context.Context, o *observation, m bus.Message) error {
	g := d.g
	con := false
	switch g.cfg.NotifyType {
	case NotifyCon:
		con = true
	case NotifyQoS:
		con = m.QoS > 0
	}
	if !con && time.Since(d.seen()) > g.cfg.SessionIdle {
		con = true // a silent observer: check that it is still there
	}
	cc := o.cc
	if cc.Context().Err() != nil {
		return errors.New("endpoint closed")
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.AckTimeout)
	defer cancel()
	msg := cc.AcquireMessage(ctx)
	defer cc.ReleaseMessage(msg)
	o.mu.Lock()
	o.seq = (o.seq + 1) & 0xFFFFFF
	msg.SetObserve(o.seq)
	msg.SetToken(o.token)
	last := m
	o.last = &last
	o.mu.Unlock()
	msg.SetCode(codes.Content)
	if con {
		msg.SetType(message.Confirmable)
	} else {
		msg.SetType(message.NonConfirmable)
	}
	if cf, ok := contentFormatOf(m.ContentType); ok {
		msg.SetContentFormat(cf)
	}
	msg.SetBody(bytes.NewReader(m.Payload))
	o.inflight.Store(con)
	o.lastSent.Store(time.Now().UnixNano())
	err := cc.WriteMessage(msg)
	o.inflight.Store(false)
	switch {
	case o.reset.Load():
		return errReset
	case err != nil:
		g.stats.notifyFailed.Add(1)
		return err
	}
	g.stats.notifications.Add(1)
	if con {
		d.touch() // the ACK shows the device is there
	}
	return nil
}

// index records an observation under its endpoint.
func (g *Gateway) index(o *observation) {
	g.mu.Lock()
	defer g.mu.Unlock()
	set := g.endpoints[o.endpoint]
	if set == nil {
		set = make(map[*observation]struct{})
		g.endpoints[o.endpoint] = set
	}
	set[o] = struct{}{}
}

func (g *Gateway) unindex(o *observation) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if set := g.endpoints[o.endpoint]; set != nil {
		delete(set, o)
		if len(set) == 0 {
			delete(g.endpoints, o.endpoint)
		}
	}
}

func (g *Gateway) hasObservers(endpoint string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.endpoints[endpoint]) > 0
}

func (g *Gateway) observersOf(endpoint string) []*observation {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]*observation, 0, len(g.endpoints[endpoint]))
	for o := range g.endpoints[endpoint] {
		out = append(out, o)
	}
	return out
}

// onReset handles an RST from endpoint (RFC 7641 §3.6: the client
// rejects a notification and forgets the observation). go-coap picks the
// message ids of the messages it sends, so the RST is matched to the
// observation whose CON notification waits for its ACK, or else to the one
// that sent this endpoint a notification last.
func (g *Gateway) onReset(endpoint string) {
	var hit *observation
	for _, o := range g.observersOf(endpoint) {
		switch {
		case o.inflight.Load():
			hit = o
		case hit != nil && hit.inflight.Load():
		case o.lastSent.Load() == 0:
		case hit == nil || o.lastSent.Load() > hit.lastSent.Load():
			hit = o
		}
	}
	if hit == nil {
		return
	}
	hit.reset.Store(true)
	hit.d.enqueueCancel(hit)
	g.log.Debug("coap observation cancelled by RST", "endpoint", endpoint, "filter", hit.filter)
}

// endpointClosed ends the observations of an endpoint whose go-coap
// connection closed.
func (g *Gateway) endpointClosed(endpoint string) {
	for _, o := range g.observersOf(endpoint) {
		o.d.enqueueCancel(o)
	}
}

// lastNotified returns the last notification endpoint got for filter.
func (g *Gateway) lastNotified(endpoint, filter string) *bus.Message {
	for _, o := range g.observersOf(endpoint) {
		if o.filter == filter {
			o.mu.Lock()
			m := o.last
			o.mu.Unlock()
			return m
		}
	}
	return nil
}

// retained reads topic's retained message for the device. The device's
// session first subscribes to topic (so the ACL decides, 4.03), unless one
// of its observations already covers it.
func (d *device) retained(ctx context.Context, topic string) (*bus.Message, error) {
	covered := false
	d.mu.Lock()
	for _, o := range d.obs {
		if bus.Match(o.filter, topic) {
			covered = true
			break
		}
	}
	d.mu.Unlock()
	if !covered {
		if err := d.subscribe(ctx, topic, 0); err != nil {
			return nil, err
		}
		d.unsubscribe(ctx, topic)
	}
	var got *bus.Message
	var mu sync.Mutex
	unsub, err := d.g.broker.Subscribe(topic, func(m bus.Message) {
		if m.Retain && m.Topic == topic {
			mu.Lock()
			got = &m
			mu.Unlock()
		}
	})
	if err != nil {
		return nil, badRequest("%v", err)
	}
	unsub()
	mu.Lock()
	defer mu.Unlock()
	return got, nil
}
