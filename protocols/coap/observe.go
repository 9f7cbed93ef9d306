package coap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// Bounds on observations (see also Config.MaxObservationsPerEndpoint,
// MaxObservations and ObserveCheck):
//
//   - A registration of a filter the endpoint already observes in the same
//     session replaces the old one (its new token is used: RFC 7641 §4.1).
//   - One message makes at most one notification per endpoint and session:
//     when several of the endpoint's observations match it, only the most
//     specific filter's is notified (fewest '#', then fewest '+', then most
//     levels); the others are counted in Stats.Coalesced. RFC 7641 lets a
//     server skip notifications; the per-endpoint cap bounds what several
//     sessions of one endpoint can get.
//   - Liveness (RFC 7641 §4.5): every fifth notification in a row that the
//     endpoint did not confirm, and every notification after ObserveCheck
//     without a sign of life, is CON; an endpoint that gets no notification
//     for ObserveCheck gets a CoAP ping (an Empty CON). A CON or ping not
//     answered within AckTimeout ends all the endpoint's observations; an RST
//     to a notification ends that one.
//   - Every observation holds observationCost bytes of the memory budget
//     (account "coap_observations").

// maxUnconfirmed is how many NON notifications an endpoint gets in a row
// without confirming one: the next one is CON.
const maxUnconfirmed = 5

// observationCost is what one observation is reckoned to hold (its state
// here, its index entries and its subscription in the broker), reserved
// from the memory budget while it lasts. Measured by
// TestObservationCost.
const observationCost = 4 << 10

// budgetAccount is the memory budget account of the observations.
const budgetAccount = "coap_observations"

// endpoint is one client endpoint (address and port) that observes, with
// its observations over all sessions and the signs that it is still there.
type endpoint struct {
	addr string
	obs  map[*observation]struct{} // (g.mu)
	cc   *udpClient.Conn           // the latest registration's connection: pings go through it (g.mu)
	// probing is set while a CoAP ping is under way (g.mu).
	probing bool
	// pingMID is the message id of the last ping (-1: none yet); an answer
	// to it, even a late one, is a pong and never taken for an RST of a
	// notification. The probe under way waits on pong.
	pingMID atomic.Int32
	pong    chan struct{}

	confirmed   atomic.Int64 // unix ns: (re-)registration, ACK of a CON notification, answer to a ping
	unconfirmed atomic.Int32 // NON notifications since
}

// confirm records that the endpoint answered a CON notification or a ping.
func (ep *endpoint) confirm() {
	ep.confirmed.Store(time.Now().UnixNano())
	ep.unconfirmed.Store(0)
}

// heard records a registration from the endpoint: it delays the next
// check, but (as a request can come from a forged address) leaves the
// count of unconfirmed notifications as it is.
func (ep *endpoint) heard() { ep.confirmed.Store(time.Now().UnixNano()) }

func (ep *endpoint) confirmedAt() time.Time { return time.Unix(0, ep.confirmed.Load()) }

// observation is one observer of one filter (RFC 7641 §4.1: one entry per
// client endpoint and resource).
type observation struct {
	d        *device
	ep       *endpoint // set by admit
	key      string    // endpoint|filter
	endpoint string
	filter   string
	cc       *udpClient.Conn
	// registered is closed once the registration is answered (the handler
	// returned): notifications wait for it.
	registered chan struct{}
	reset      atomic.Bool // the endpoint answered a notification with RST
	cancelled  atomic.Bool // its end is queued: no more notifications
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
	if o != nil && !o.cancelled.Load() {
		// Re-registration: same endpoint and resource, maybe a new token.
		// It replaces the observation, and shows the endpoint is there.
		o.mu.Lock()
		o.token = append(message.Token(nil), x.r.Token()...)
		seq := o.seq
		o.mu.Unlock()
		d.mu.Unlock()
		if o.ep != nil {
			o.ep.heard()
		}
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
	if err := x.g.admit(o); err != nil {
		return err
	}
	d.mu.Lock()
	d.obs[key] = o
	d.mu.Unlock()
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
	d.unsubscribe(ctx, o.filter)
}

// notifyAll sends a delivery to the observations whose filter matches it,
// one per endpoint (the most specific filter's; the others are coalesced),
// then acknowledges it: when every CON notification was ACKed, or given up.
// An RST ends the observation; no ACK at all ends every observation of the
// endpoint.
func (d *device) notifyAll(ctx context.Context, m mqtt.Delivery) {
	defer m.Ack()
	d.mu.Lock()
	var targets []*observation
	matched := 0
	for _, o := range d.obs {
		if o.cancelled.Load() || !bus.Match(o.filter, m.Topic) {
			continue
		}
		matched++
		i := 0
		for i < len(targets) && targets[i].endpoint != o.endpoint {
			i++
		}
		switch {
		case i == len(targets):
			targets = append(targets, o)
		case moreSpecific(o.filter, targets[i].filter):
			targets[i] = o
		}
	}
	d.mu.Unlock()
	if n := matched - len(targets); n > 0 {
		d.g.stats.coalesced.Add(uint64(n))
	}
	for _, o := range targets {
		select {
		case <-o.registered:
		case <-ctx.Done():
			return
		}
		err := d.notify(ctx, o, m.Message)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return
		case errors.Is(err, errReset):
			d.g.warn.warn("notify-"+o.endpoint, "coap: observation ended", "client", d.clientID, "endpoint", o.endpoint, "filter", o.filter, "reason", err)
			d.removeObservation(ctx, o)
		default:
			d.g.endpointGone(o.endpoint, err)
		}
	}
}

// moreSpecific reports whether filter a is more specific than b: fewer
// '#', then fewer '+', then more levels, then (to be deterministic) the
// smaller string.
func moreSpecific(a, b string) bool {
	if x, y := strings.Count(a, "#"), strings.Count(b, "#"); x != y {
		return x < y
	}
	if x, y := strings.Count(a, "+"), strings.Count(b, "+"); x != y {
		return x < y
	}
	if x, y := strings.Count(a, "/"), strings.Count(b, "/"); x != y {
		return x > y
	}
	return a < b
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
	ep := o.ep
	if !con && (ep.unconfirmed.Load() >= maxUnconfirmed || time.Since(ep.confirmedAt()) >= g.cfg.ObserveCheck) {
		con = true // check that the endpoint is still there
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
		ep.confirm()
	} else {
		ep.unconfirmed.Add(1)
	}
	return nil
}

// admit counts a new observation against max_observations_per_endpoint,
// max_observations and the memory budget, and records it under its
// endpoint; or it returns the refusal (4.29 for the endpoint's cap, 5.03
// for the others).
func (g *Gateway) admit(o *observation) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	ep := g.endpoints[o.endpoint]
	switch {
	case ep != nil && len(ep.obs) >= g.cfg.MaxObservationsPerEndpoint:
		g.stats.obsRefused.Add(1)
		return &RequestError{Code: codes.TooManyRequests, Reason: fmt.Sprintf("at most %d observations per endpoint", g.cfg.MaxObservationsPerEndpoint)}
	case g.observations >= g.cfg.MaxObservations:
		g.stats.obsRefused.Add(1)
		return &RequestError{Code: codes.ServiceUnavailable, Reason: "too many observations"}
	case !g.obsBudget.Reserve(observationCost):
		g.stats.obsRefused.Add(1)
		return &RequestError{Code: codes.ServiceUnavailable, Reason: "memory budget exhausted"}
	}
	if ep == nil {
		ep = &endpoint{addr: o.endpoint, obs: make(map[*observation]struct{}), pong: make(chan struct{}, 1)}
		ep.pingMID.Store(-1)
		g.endpoints[o.endpoint] = ep
	}
	ep.heard()
	ep.cc = o.cc
	ep.obs[o] = struct{}{}
	o.ep = ep
	g.observations++
	g.stats.observers.Add(1)
	return nil
}

// unindex forgets an observation admitted before (once: later calls do
// nothing) and gives its share of the budget back.
func (g *Gateway) unindex(o *observation) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ep := g.endpoints[o.endpoint]
	if ep == nil {
		return
	}
	if _, ok := ep.obs[o]; !ok {
		return
	}
	delete(ep.obs, o)
	if len(ep.obs) == 0 {
		delete(g.endpoints, o.endpoint)
	}
	g.observations--
	g.stats.observers.Add(-1)
	g.obsBudget.Release(observationCost)
}

func (g *Gateway) hasObservers(endpoint string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.endpoints[endpoint] != nil
}

func (g *Gateway) observersOf(endpoint string) []*observation {
	g.mu.Lock()
	defer g.mu.Unlock()
	ep := g.endpoints[endpoint]
	if ep == nil {
		return nil
	}
	out := make([]*observation, 0, len(ep.obs))
	for o := range ep.obs {
		out = append(out, o)
	}
	return out
}

// endpointGone ends every observation of an endpoint that did not answer
// a CON notification or a ping (or whose connection closed).
func (g *Gateway) endpointGone(addr string, reason error) {
	obs := g.observersOf(addr)
	if len(obs) == 0 {
		return
	}
	g.stats.obsExpired.Add(uint64(len(obs)))
	g.warn.info("observer-gone", "coap observer gone: its observations end", "endpoint", addr, "observations", len(obs), "reason", reason)
	for _, o := range obs {
		o.d.enqueueCancel(o)
	}
}

// probeObservers pings every observing endpoint that has shown no sign of
// life for ObserveCheck.
func (g *Gateway) probeObservers(now time.Time) {
	var due []*endpoint
	g.mu.Lock()
	for _, ep := range g.endpoints {
		if !ep.probing && now.Sub(ep.confirmedAt()) >= g.cfg.ObserveCheck {
			ep.probing = true
			due = append(due, ep)
		}
	}
	g.mu.Unlock()
	for _, ep := range due {
		if !g.goWorker(func() { g.probe(ep) }) {
			return // shutting down
		}
	}
}

// probe sends an endpoint a CoAP ping (Empty CON, RFC 7252 §4.3), again
// (same message id) after 2 s, 4 s, ..., until it is answered (RST or ACK)
// or AckTimeout passed; then the endpoint is gone.
func (g *Gateway) probe(ep *endpoint) {
	g.mu.Lock()
	cc := ep.cc
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		ep.probing = false
		g.mu.Unlock()
	}()
	if cc.Context().Err() != nil {
		g.endpointGone(ep.addr, errors.New("connection closed"))
		return
	}
	select {
	case <-ep.pong: // a stale answer
	default:
	}
	deadline := time.NewTimer(g.cfg.AckTimeout)
	defer deadline.Stop()
	wait := 2 * time.Second
	mid := cc.GetMessageID()
	ep.pingMID.Store(mid)
	for {
		msg := cc.AcquireMessage(g.runCtx)
		msg.SetType(message.Confirmable)
		msg.SetCode(codes.Empty)
		msg.SetMessageID(mid)
		err := cc.Session().WriteMessage(msg)
		cc.ReleaseMessage(msg)
		if err != nil {
			g.endpointGone(ep.addr, fmt.Errorf("ping: %w", err))
			return
		}
		g.stats.pings.Add(1)
		retry := time.NewTimer(wait)
		select {
		case <-ep.pong:
			retry.Stop()
			ep.confirm()
			return
		case <-g.runCtx.Done():
			retry.Stop()
			return
		case <-deadline.C:
			retry.Stop()
			g.endpointGone(ep.addr, fmt.Errorf("no answer to a CoAP ping within %s", g.cfg.AckTimeout))
			return
		case <-retry.C:
			wait *= 2
		}
	}
}

// pong takes an Empty ACK or RST from addr that answers its last ping;
// false when it answers something else.
func (g *Gateway) pong(addr string, mid int32) bool {
	g.mu.Lock()
	ep := g.endpoints[addr]
	g.mu.Unlock()
	if ep == nil || mid < 0 || ep.pingMID.Load() != mid {
		return false
	}
	select {
	case ep.pong <- struct{}{}:
	default:
	}
	return true
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
