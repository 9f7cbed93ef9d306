package coap

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// maxQueuedQoS0 bounds the QoS 0 deliveries waiting for a device's worker;
// beyond it QoS 0 messages are dropped and counted. QoS 1/2 deliveries are
// bounded by the session's receive maximum.
const maxQueuedQoS0 = 256

// brokerTimeout bounds one broker operation made for a request.
const brokerTimeout = 30 * time.Second

// deviceCost is what one device (a broker session) is reckoned to hold,
// reserved from the memory budget (account "coap_sessions") while it
// lasts: its state and worker here, its broker session (pipe, engine
// client, reader and writer goroutines with their stacks). Measured by
// TestDeviceCost.
const deviceCost = 48 << 10

// sessionsAccount is the memory budget account of the devices.
const sessionsAccount = "coap_sessions"

// device is one broker session of the gateway: a connection
// (POST /mqtt/connection) or a connectionless device keyed by its address
// and credentials. Its worker goroutine turns deliveries into
// notifications, one at a time and in order.
type device struct {
	g          *Gateway
	key        string
	clientID   string
	connection bool
	token      string // connection mode only

	ready chan struct{} // closed once the session is connected (or failed)
	sess  *mqtt.Session // set before ready is closed
	err   error         // set before ready is closed

	lastSeen atomic.Int64 // unix nanoseconds of the last request or ACK

	budgeted bool      // deviceCost is reserved for it (set before it is shared)
	released sync.Once // gives deviceCost back

	mu      sync.Mutex
	obs     map[string]*observation // by endpoint|filter
	queue   []work
	qos0    int // QoS 0 deliveries in queue
	wake    chan struct{}
	quit    chan struct{} // closed by stop: disconnect cleanly
	quitOne sync.Once

	subMu   sync.Mutex     // serialises subscription changes
	filters map[string]int // observations per subscribed filter (subMu)
}

// work is one item of a device's queue: a delivery to notify, or an
// observation to end.
type work struct {
	delivery *mqtt.Delivery
	cancel   *observation
}

func newDevice(g *Gateway, key, clientID string, connection bool) *device {
	d := &device{
		g:          g,
		key:        key,
		clientID:   clientID,
		connection: connection,
		ready:      make(chan struct{}),
		obs:        make(map[string]*observation),
		wake:       make(chan struct{}, 1),
		quit:       make(chan struct{}),
		filters:    make(map[string]int),
	}
	d.touch()
	return d
}

func (d *device) touch()          { d.lastSeen.Store(time.Now().UnixNano()) }
func (d *device) seen() time.Time { return time.Unix(0, d.lastSeen.Load()) }

func (d *device) observing() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.obs) > 0
}

// stop ends the device's session cleanly (DISCONNECT, will discarded).
func (d *device) stop() { d.quitOne.Do(func() { close(d.quit) }) }

// lost drops the device's session as a lost device: its will is published.
func (d *device) lost() {
	select {
	case <-d.ready:
		if d.sess != nil {
			d.sess.Close()
		}
	default:
	}
}

// connect opens the device's broker session and starts its worker; it
// closes ready either way.
func (d *device) connect(ctx context.Context, remote net.Addr, c credentials) {
	defer close(d.ready)
	ctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	defer cancel()
	sess, err := d.g.broker.Connect(ctx, mqtt.SessionOptions{
		Listener: "coap",
		Remote:   remote,
		ClientID: d.clientID,
		Username: c.username,
		Password: c.password,
		Trusted:  c.trusted,
		// Over DTLS the handshake proved the address; plain UDP's is
		// forgeable, so its failed logins never block TCP clients.
		SourceVerified: c.verified,
		CleanStart:     true,
		OnMessage:      d.deliver,
	})
	if err != nil {
		d.err = err
		return
	}
	d.sess = sess
	if !d.g.goWorker(d.run) {
		d.err = errors.New("gateway shutting down")
		_ = sess.Disconnect(false)
		return
	}
}

// deliver is the session's OnMessage: it only enqueues.
func (d *device) deliver(m mqtt.Delivery) {
	d.mu.Lock()
	if m.QoS == 0 && d.qos0 >= maxQueuedQoS0 {
		d.mu.Unlock()
		d.g.stats.dropped.Add(1)
		d.g.warn.warn("drop-"+d.clientID, "coap: device too slow, QoS 0 message dropped", "client", d.clientID, "topic", m.Topic)
		return
	}
	if m.QoS == 0 {
		d.qos0++
	}
	d.queue = append(d.queue, work{delivery: &m})
	d.mu.Unlock()
	d.signal()
}

func (d *device) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// enqueueCancel asks the worker to end an observation (after an RST, or
// when its endpoint closed).
func (d *device) enqueueCancel(o *observation) {
	o.cancelled.Store(true)
	d.mu.Lock()
	d.queue = append(d.queue, work{cancel: o})
	d.mu.Unlock()
	d.signal()
}

// run is the device's worker: it sends notifications until the session
// ends or the device is stopped, then forgets the device.
func (d *device) run() {
	ctx := d.g.runCtx
	defer d.cleanup()
	for {
		select {
		case <-d.sess.Done():
			return
		case <-d.quit:
			_ = d.sess.Disconnect(false)
			return
		case <-ctx.Done():
			_ = d.sess.Disconnect(false)
			return
		case <-d.wake:
			d.drain(ctx)
		}
	}
}

func (d *device) drain(ctx context.Context) {
	for {
		d.mu.Lock()
		if len(d.queue) == 0 {
			d.mu.Unlock()
			return
		}
		w := d.queue[0]
		d.queue[0] = work{}
		d.queue = d.queue[1:]
		if w.delivery != nil && w.delivery.QoS == 0 {
			d.qos0--
		}
		d.mu.Unlock()
		switch {
		case w.cancel != nil:
			d.removeObservation(ctx, w.cancel)
		case w.delivery != nil:
			d.notifyAll(ctx, *w.delivery)
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// release gives the device's share of the memory budget back (once).
func (d *device) release() {
	d.released.Do(func() {
		if d.budgeted {
			d.g.sessBudget.Release(deviceCost)
		}
	})
}

// cleanup forgets the device once its session has ended.
func (d *device) cleanup() {
	g := d.g
	defer d.release()
	g.mu.Lock()
	if g.devices[d.key] == d {
		delete(g.devices, d.key)
		if d.connection {
			g.stats.connections.Add(-1)
		}
		g.stats.sessions.Add(-1)
	}
	g.mu.Unlock()
	d.mu.Lock()
	obs := make([]*observation, 0, len(d.obs))
	for _, o := range d.obs {
		obs = append(obs, o)
	}
	d.obs = make(map[string]*observation)
	queue := d.queue
	d.queue, d.qos0 = nil, 0
	d.mu.Unlock()
	for _, o := range obs {
		g.unindex(o)
	}
	for _, w := range queue {
		if w.delivery != nil {
			w.delivery.Ack() // the session is gone: a no-op, kept for symmetry
		}
	}
	if err := d.sess.Err(); err != nil && !errors.Is(err, mqtt.ErrSessionClosed) {
		g.log.Debug("coap session ended", "client", d.clientID, "reason", err)
	}
}

// deviceKey is the key of a connectionless device: its address and the
// credentials it sends (a change of credentials is a new session).
func deviceKey(remote string, r Request) string {
	h := sha256.Sum256([]byte(r.Password))
	return "addr|" + remote + "|" + r.ClientID + "|" + r.Username + "|" + hex.EncodeToString(h[:8])
}

// connKey is the key of a connection, by client id.
func connKey(clientID string) string { return "conn|" + clientID }

// deviceFor finds or makes the session a publish or GET request acts as.
func (x *exchange) deviceFor() (*device, error) {
	g, req := x.g, x.req
	if req.Token != "" {
		g.mu.Lock()
		d := g.devices[connKey(req.ClientID)]
		g.mu.Unlock()
		if d == nil || subtle.ConstantTimeCompare([]byte(d.token), []byte(req.Token)) != 1 {
			return nil, &RequestError{Code: codes.Unauthorized, Reason: "no connection with this clientid and token"}
		}
		return d, d.await()
	}
	if g.cfg.ConnectionRequired {
		return nil, &RequestError{Code: codes.Unauthorized, Reason: "connection required: POST /mqtt/connection first, then send clientid and token"}
	}
	remote := x.cc.RemoteAddr()
	key := deviceKey(remote.String(), req)
	g.mu.Lock()
	d := g.devices[key]
	created := false
	if d == nil {
		if len(g.devices) >= g.cfg.MaxSessions {
			g.mu.Unlock()
			return nil, &RequestError{Code: codes.ServiceUnavailable, Reason: "too many CoAP sessions"}
		}
		if !g.sessBudget.Reserve(deviceCost) {
			g.mu.Unlock()
			return nil, &RequestError{Code: codes.ServiceUnavailable, Reason: "memory budget exhausted"}
		}
		clientID := req.ClientID
		if clientID == "" {
			clientID = "coap-" + remote.String()
		}
		d = newDevice(g, key, clientID, false)
		d.budgeted = true
		g.devices[key] = d
		g.stats.sessions.Add(1)
		created = true
	}
	g.mu.Unlock()
	if created {
		d.connect(x.ctx(), remote, x.credentials())
		if d.err != nil {
			g.forget(d)
		}
	}
	return d, d.await()
}

// await waits for the device's session and returns why it failed.
func (d *device) await() error {
	<-d.ready
	if d.err != nil {
		return connectError(d.err)
	}
	d.touch()
	return nil
}

// forget removes a device whose session never started.
func (g *Gateway) forget(d *device) {
	defer d.release()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.devices[d.key] == d {
		delete(g.devices, d.key)
		g.stats.sessions.Add(-1)
	}
}

// connectError maps a refused CONNECT to its CoAP code.
func connectError(err error) error {
	r := bus.RefusalOf(err)
	switch r.Code {
	case 0x86, 0x87, 0x8C:
		return &RequestError{Code: codes.Unauthorized, Reason: "not authorized: " + r.Reason}
	case 0x8A:
		return &RequestError{Code: codes.Forbidden, Reason: "banned"}
	case 0x85:
		return &RequestError{Code: codes.BadRequest, Reason: "client identifier not valid"}
	case 0x88, 0x89, 0x97, 0x9F:
		return &RequestError{Code: codes.ServiceUnavailable, Reason: r.Reason}
	}
	return &RequestError{Code: codes.ServiceUnavailable, Reason: "broker refused the session: " + r.Reason}
}

// brokerError maps a refused PUBLISH, SUBSCRIBE or UNSUBSCRIBE to its
// CoAP code.
func brokerError(err error) error {
	if errors.Is(err, mqtt.ErrSessionClosed) {
		return &RequestError{Code: codes.ServiceUnavailable, Reason: "session closed, retry"}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &RequestError{Code: codes.ServiceUnavailable, Reason: "broker did not answer in time"}
	}
	r := bus.RefusalOf(err)
	switch r.Code {
	case 0x87:
		return &RequestError{Code: codes.Forbidden, Reason: "not authorized by the ACL"}
	case 0x97, 0x89, 0x96:
		return &RequestError{Code: codes.ServiceUnavailable, Reason: r.Reason}
	case 0x8F, 0x90:
		return &RequestError{Code: codes.BadRequest, Reason: r.Reason}
	case 0x95:
		return &RequestError{Code: codes.RequestEntityTooLarge, Reason: r.Reason}
	}
	return &RequestError{Code: codes.InternalServerError, Reason: "broker refused: " + r.Reason}
}

// newToken returns a random connection token.
func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// connect handles POST /mqtt/connection: a session with the given
// credentials; 2.01 Created with the token as payload.
func (x *exchange) connect() error {
	g, req := x.g, x.req
	g.mu.Lock()
	old := g.devices[connKey(req.ClientID)]
	if old == nil && len(g.devices) >= g.cfg.MaxSessions {
		g.mu.Unlock()
		return &RequestError{Code: codes.ServiceUnavailable, Reason: "too many CoAP sessions"}
	}
	g.mu.Unlock()
	if !g.sessBudget.Reserve(deviceCost) {
		return &RequestError{Code: codes.ServiceUnavailable, Reason: "memory budget exhausted"}
	}
	d := newDevice(g, connKey(req.ClientID), req.ClientID, true)
	d.budgeted = true
	d.token = newToken()
	d.connect(x.ctx(), x.cc.RemoteAddr(), x.credentials())
	if d.err != nil {
		d.release()
		return connectError(d.err)
	}
	g.mu.Lock()
	old = g.devices[d.key]
	g.devices[d.key] = d
	if old == nil {
		g.stats.sessions.Add(1)
		g.stats.connections.Add(1)
	}
	g.mu.Unlock()
	// The broker took the client id over from the old session (if any);
	// its worker ends by itself but must not forget the new one.
	g.log.Info("coap connection opened", "client", req.ClientID, "remote", x.cc.RemoteAddr().String())
	return x.reply(codes.Created, []byte(d.token))
}

// connection finds the connection a heartbeat or disconnect names.
func (x *exchange) connection() (*device, error) {
	x.g.mu.Lock()
	d := x.g.devices[connKey(x.req.ClientID)]
	x.g.mu.Unlock()
	if d == nil || subtle.ConstantTimeCompare([]byte(d.token), []byte(x.req.Token)) != 1 {
		return nil, &RequestError{Code: codes.Unauthorized, Reason: "no connection with this clientid and token"}
	}
	return d, d.await()
}

// heartbeat handles PUT /mqtt/connection.
func (x *exchange) heartbeat() error {
	if _, err := x.connection(); err != nil {
		return err
	}
	return x.reply(codes.Changed, nil)
}

// disconnect handles DELETE /mqtt/connection: a clean DISCONNECT.
func (x *exchange) disconnect() error {
	d, err := x.connection()
	if err != nil {
		return err
	}
	d.stop()
	select {
	case <-d.sess.Done():
	case <-time.After(brokerTimeout):
		return fmt.Errorf("coap: disconnect %s: %w", d.clientID, context.DeadlineExceeded)
	}
	x.g.log.Info("coap connection closed", "client", d.clientID)
	return x.reply(codes.Deleted, nil)
}
