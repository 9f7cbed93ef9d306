package mqttsn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// state is where a device is in its life.
type state int

const (
	stConnecting state = iota // CONNECT received, will handshake or broker CONNECT under way
	stActive                  // connected and awake
	stAsleep                  // DISCONNECT with a duration: deliveries are buffered
	stAwake                   // asleep, woken by PINGREQ: buffered deliveries go out, then PINGRESP
)

// inbound is a decoded datagram for a device.
type inbound struct {
	p    Packet
	from peer
}

// queued is a broker delivery waiting to go to the device; gen says which of
// the device's sessions it came from (deliveries of an ended one are
// skipped).
type queued struct {
	gen uint64
	d   mqtt.Delivery
}

// outMsg is a QoS 1/2 PUBLISH in flight to the device.
type outMsg struct {
	d        mqtt.Delivery
	p        Packet
	released bool // QoS 2: PUBREC received, PUBREL sent
	sentAt   time.Time
	retries  int
}

// pendingReg is a REGISTER sent to the device, waiting for REGACK.
type pendingReg struct {
	p       Packet
	sentAt  time.Time
	retries int
}

// inbox is the datagrams waiting for a device's goroutine: a slice that
// grows with a burst up to inboxLimit and is taken whole, so that the
// goroutine handles a batch per wake-up (one timer reset and one flush for
// all of it) and an idle device keeps no buffer.
type inbox struct {
	mu  sync.Mutex
	q   []inbound
	sig chan struct{} // cap 1: something was posted
}

// post queues in; false when the queue is full.
func (b *inbox) post(in inbound) bool {
	b.mu.Lock()
	if len(b.q) >= inboxLimit {
		b.mu.Unlock()
		return false
	}
	b.q = append(b.q, in)
	b.mu.Unlock()
	select {
	case b.sig <- struct{}{}:
	default:
	}
	return true
}

// take returns everything queued and leaves spare (emptied) in its place,
// so that two buffers alternate while the device is busy.
func (b *inbox) take(spare []inbound) []inbound {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.q
	b.q = spare[:0]
	return q
}

// client is one device. Its goroutine (run) owns every field below the
// mutex-protected delivery queue; the gateway's read loop reaches it only
// through inbox, and the session's reader only through enqueue.
type client struct {
	g      *Gateway
	inbox  inbox
	asleep atomic.Bool // read by the gateway to route a wake-up PINGREQ

	// admitted and admittedIP (under the gateway's mu) say that the device
	// counts against max_clients, the memory budget and admittedIP's share
	// of max_clients_per_address.
	admitted   bool
	admittedIP netip.Addr

	qmu  sync.Mutex
	q    []queued
	qsig chan struct{} // cap 1: something was queued

	addr        peer
	id          string
	sess        *mqtt.Session
	gen         uint64
	st          state
	keepAlive   time.Duration
	sleepFor    time.Duration
	lastHeard   time.Time
	deadline    time.Time // of the will handshake (stConnecting) or of the sleep (stAsleep)
	connect     Packet    // the CONNECT being handled (stConnecting)
	will        *mqtt.Will
	counted     bool // counted in stats.connected
	topicByName map[string]uint16
	topicByID   map[uint16]string
	nextTopic   uint16
	nextMsgID   uint16
	inflight    map[uint16]*outMsg
	reg         *pendingReg
	qos2In      map[uint16]struct{} // QoS 2 publishes from the device waiting for PUBREL
}

func newClient(g *Gateway, addr peer) *client {
	return &client{
		g:     g,
		inbox: inbox{sig: make(chan struct{}, 1)},
		qsig:  make(chan struct{}, 1),
		addr:  addr,
	}
}

func (c *client) logger() *slog.Logger {
	return c.g.log.With("client", c.id, "remote", c.addr.String())
}

// end is why the goroutine stops.
type end int

const (
	keep        end = iota // go on
	quietEnd               // stop; the session is already ended or never was
	lostEnd                // the device is lost: drop its session, will published
	cleanEnd               // the device disconnected: DISCONNECT, will discarded
	shutdownEnd            // the gateway stops
)

// run is the device's goroutine.
func (c *client) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	how, why := keep, ""
	var batch, spare, rest []inbound
	for how == keep {
		c.armTimer(timer)
		var sessDone <-chan struct{}
		if c.sess != nil {
			sessDone = c.sess.Done()
		}
		select {
		case <-ctx.Done():
			how = shutdownEnd
		case <-c.inbox.sig:
			batch = c.inbox.take(spare)
			for i, in := range batch {
				if how, why = c.handle(ctx, in); how != keep {
					rest = batch[i+1:]
					break
				}
			}
			spare = nil
			if how == keep && cap(batch) <= inboxLimit/4 {
				clear(batch)
				spare = batch[:0] // small: kept for the next batch
			}
		case <-c.qsig:
		case now := <-timer.C:
			how, why = c.onTimer(now)
		case <-sessDone:
			how, why = quietEnd, "session ended"
			if c.g.owns(c, c.id) {
				// Kicked or the broker stops: tell the device.
				c.send(Packet{Type: TypeDisconnect})
				why = fmt.Sprintf("session ended: %v", c.sess.Err())
			}
		}
		if how == keep {
			how, why = c.flush()
		}
	}
	c.finish(how, why)
	// Datagrams after the end (the rest of the batch, and what was posted
	// until finish removed the device under the gateway's lock) go through
	// the gateway again: a new CONNECT starts a new client.
	if ctx.Err() == nil {
		for _, in := range append(rest, c.inbox.take(nil)...) {
			c.g.dispatch(ctx, in.from, in.p)
		}
	}
}

// finish ends the session as how says and forgets the device.
func (c *client) finish(how end, why string) {
	if c.sess != nil {
		switch how {
		case lostEnd:
			c.g.stats.lost.Add(1)
			c.logger().Info("MQTT-SN device lost, will published", "reason", why)
			c.sess.Close()
		case cleanEnd, shutdownEnd:
			_ = c.sess.Disconnect(false)
		default:
			c.sess.Close()
		}
	}
	if how != lostEnd {
		c.logger().Debug("MQTT-SN device gone", "reason", why)
	}
	c.setAsleep(false)
	if c.counted {
		c.g.stats.connected.Add(-1)
	}
	c.g.remove(c, c.addr, c.id)
	c.g.release(c)
}

// armTimer sets the timer to the earliest deadline of the current state.
func (c *client) armTimer(t *time.Timer) {
	var next time.Time
	earliest := func(d time.Time) {
		if !d.IsZero() && (next.IsZero() || d.Before(next)) {
			next = d
		}
	}
	switch c.st {
	case stConnecting, stAsleep:
		earliest(c.deadline)
	case stActive:
		if c.keepAlive > 0 {
			earliest(c.lastHeard.Add(c.keepAlive * 3 / 2))
		}
	}
	if c.st == stActive || c.st == stAwake {
		interval := c.g.cfg.RetryInterval
		for _, m := range c.inflight {
			earliest(m.sentAt.Add(interval))
		}
		if c.reg != nil {
			earliest(c.reg.sentAt.Add(interval))
		}
	}
	if next.IsZero() {
		next = time.Now().Add(time.Hour)
	}
	t.Reset(time.Until(next))
}

// onTimer handles every deadline that has passed.
func (c *client) onTimer(now time.Time) (end, string) {
	switch c.st {
	case stConnecting:
		if !c.deadline.IsZero() && !now.Before(c.deadline) {
			return lostEnd, "no WILLTOPIC/WILLMSG in time"
		}
	case stAsleep:
		if !now.Before(c.deadline) {
			return lostEnd, fmt.Sprintf("asleep longer than 1.5 × %s", c.sleepFor)
		}
	case stActive:
		if c.keepAlive > 0 && !now.Before(c.lastHeard.Add(c.keepAlive*3/2)) {
			return lostEnd, fmt.Sprintf("silent longer than 1.5 × keep alive %s", c.keepAlive)
		}
	}
	if c.st != stActive && c.st != stAwake {
		return keep, ""
	}
	interval, maxRetries := c.g.cfg.RetryInterval, c.g.cfg.RetryCount
	for _, m := range c.inflight {
		if now.Before(m.sentAt.Add(interval)) {
			continue
		}
		if m.retries >= maxRetries {
			return lostEnd, fmt.Sprintf("no acknowledgement of message %d after %d retries", m.p.MsgID, m.retries)
		}
		m.retries++
		m.sentAt = now
		c.g.stats.retransmissions.Add(1)
		if m.released {
			c.send(Packet{Type: TypePubrel, MsgID: m.p.MsgID})
		} else {
			m.p.Flags.DUP = true
			c.send(m.p)
		}
	}
	if r := c.reg; r != nil && !now.Before(r.sentAt.Add(interval)) {
		if r.retries >= maxRetries {
			return lostEnd, fmt.Sprintf("no REGACK for topic %q after %d retries", r.p.TopicName, r.retries)
		}
		r.retries++
		r.sentAt = now
		c.g.stats.retransmissions.Add(1)
		c.send(r.p)
	}
	return keep, ""
}

func (c *client) send(p Packet) { c.g.send(c.addr, p) }

func (c *client) setAsleep(v bool) {
	if c.asleep.Swap(v) != v {
		if v {
			c.g.stats.asleep.Add(1)
		} else {
			c.g.stats.asleep.Add(-1)
		}
	}
}

// handle processes one datagram from the device.
func (c *client) handle(ctx context.Context, in inbound) (end, string) {
	p := in.p
	if in.from != c.addr {
		// Only a sleeping device's PINGREQ (with its client id) is routed
		// here from a new address.
		c.g.move(c, c.addr, in.from)
		c.addr = in.from
	}
	c.lastHeard = time.Now()
	if p.Type == TypeConnect {
		return c.onConnect(ctx, p)
	}
	if c.st == stConnecting {
		switch p.Type {
		case TypeWillTopic:
			return c.onWillTopic(ctx, p)
		case TypeWillMsg:
			return c.onWillMsg(ctx, p)
		case TypeDisconnect:
			// The device gives up its CONNECT.
			c.send(Packet{Type: TypeDisconnect})
			return cleanEnd, "DISCONNECT during CONNECT"
		}
		c.g.drop(DropUnexpected, c.addr, fmt.Errorf("%s during CONNECT", p.Type))
		return keep, ""
	}
	switch p.Type {
	case TypePublish:
		c.onPublish(ctx, p)
	case TypePubrel:
		delete(c.qos2In, p.MsgID)
		c.send(Packet{Type: TypePubcomp, MsgID: p.MsgID})
	case TypePuback, TypePubrec, TypePubcomp:
		c.onAck(p)
	case TypeRegister:
		c.onRegister(p)
	case TypeRegack:
		c.onRegack(p)
	case TypeSubscribe:
		c.onSubscribe(ctx, p)
	case TypeUnsubscribe:
		c.onUnsubscribe(ctx, p)
	case TypePingreq:
		switch c.st {
		case stAsleep:
			c.st = stAwake // flush sends what is buffered, then PINGRESP
		case stAwake:
		default:
			c.send(Packet{Type: TypePingresp})
		}
	case TypeDisconnect:
		return c.onDisconnect(p)
	case TypeWillTopicUpd:
		c.onWillTopicUpd(p)
	case TypeWillMsgUpd:
		w := c.currentWill()
		w.Payload = p.Data
		c.setWill(&w)
		c.send(Packet{Type: TypeWillMsgResp, ReturnCode: Accepted})
	default:
		c.g.drop(DropUnexpected, c.addr, fmt.Errorf("%s from a device", p.Type))
	}
	return keep, ""
}

// onConnect starts a connection: with the will flag, the will handshake
// first; then the broker session.
func (c *client) onConnect(ctx context.Context, p Packet) (end, string) {
	if p.ProtocolID != protocolID {
		c.g.drop(DropMalformed, c.addr, fmt.Errorf("CONNECT with protocol id 0x%02x", p.ProtocolID))
		c.send(Packet{Type: TypeConnack, ReturnCode: RejectedNotSupported})
		return c.refused()
	}
	if p.ClientID == "" {
		// Lenient: an empty client id gets one made from the address, so
		// that the device gets the same one when it reconnects.
		p.ClientID = "mqttsn-" + c.addr.String()
	}
	if c.sess != nil && (c.st == stAsleep || c.st == stAwake) && p.ClientID == c.id &&
		!p.Flags.CleanSession && !p.Flags.Will {
		// A sleeping device going active keeps its session and what is
		// buffered for it.
		c.setAsleep(false)
		c.st, c.keepAlive = stActive, c.g.keepAlive(p.Duration)
		c.send(Packet{Type: TypeConnack, ReturnCode: Accepted})
		return keep, ""
	}
	c.connect = p
	c.will = nil
	if p.Flags.Will {
		c.st = stConnecting
		c.deadline = time.Now().Add(c.g.cfg.ConnectTimeout)
		c.send(Packet{Type: TypeWillTopicReq})
		return keep, ""
	}
	return c.connectSession(ctx)
}

func (c *client) onWillTopic(ctx context.Context, p Packet) (end, string) {
	if p.TopicName == "" { // no will after all
		return c.connectSession(ctx)
	}
	if problem := topicNameProblem(p.TopicName); problem != "" {
		c.g.drop(DropMalformed, c.addr, fmt.Errorf("WILLTOPIC: %s", problem))
		c.send(Packet{Type: TypeConnack, ReturnCode: RejectedNotSupported})
		return c.refused()
	}
	c.will = &mqtt.Will{Topic: p.TopicName, QoS: byte(max(p.Flags.QoS, 0)), Retain: p.Flags.Retain}
	c.send(Packet{Type: TypeWillMsgReq})
	return keep, ""
}

func (c *client) onWillMsg(ctx context.Context, p Packet) (end, string) {
	if c.will == nil {
		c.g.drop(DropUnexpected, c.addr, errors.New("WILLMSG before WILLTOPIC"))
		return keep, ""
	}
	c.will.Payload = p.Data
	return c.connectSession(ctx)
}

// refused ends a device whose CONNECT was refused, unless it still has a
// session from before.
func (c *client) refused() (end, string) {
	if c.sess != nil && c.st != stConnecting {
		return keep, ""
	}
	return quietEnd, "CONNECT refused"
}

// connectSession opens the broker session for c.connect and answers CONNACK.
func (c *client) connectSession(ctx context.Context) (end, string) {
	p := c.connect
	id := p.ClientID
	username, ok := c.g.allowed(id)
	if !ok {
		c.g.warn("MQTT-SN CONNECT refused: client id not allowed", "client", id, "remote", c.addr.String())
		c.send(Packet{Type: TypeConnack, ReturnCode: RejectedNotSupported})
		if c.sess != nil {
			c.sess.Close()
			c.sess = nil
		}
		return quietEnd, "client id not allowed"
	}
	if c.sess != nil && id != c.id {
		// The device at this address changed its client id: its old
		// connection is lost.
		c.sess.Close()
		c.g.remove(c, peer{}, c.id)
		c.sess = nil
	}
	c.gen++
	gen, addr := c.gen, c.addr
	var expiry uint32
	if !p.Flags.CleanSession {
		expiry = uint32(c.g.cfg.SessionExpiry / time.Second)
	}
	// Claimed before connecting, so that the device it takes over knows
	// when its session ends.
	c.g.claim(c, id)
	cctx, cancel := context.WithTimeout(ctx, c.g.cfg.ConnectTimeout)
	sess, err := c.g.broker.Connect(cctx, mqtt.SessionOptions{
		Listener:       listenerName,
		Remote:         net.UDPAddrFromAddrPort(c.addr.addr),
		ClientID:       id,
		Username:       username,
		Trusted:        username != "",
		CleanStart:     p.Flags.CleanSession,
		SessionExpiry:  expiry,
		ReceiveMaximum: uint16(c.g.cfg.SleepBuffer),
		Will:           c.will,
		OnMessage:      func(d mqtt.Delivery) { c.enqueue(gen, addr, d) },
	})
	cancel()
	if err != nil {
		code := returnCodeOf(err)
		if ctx.Err() != nil {
			return shutdownEnd, "gateway stopping"
		}
		c.g.warn("MQTT-SN CONNECT refused by the broker", "client", id, "remote", c.addr.String(), "error", err, "return_code", code)
		c.send(Packet{Type: TypeConnack, ReturnCode: code})
		if c.sess != nil {
			c.sess.Close()
			c.sess = nil
		}
		c.g.remove(c, peer{}, id)
		return quietEnd, "CONNECT refused by the broker"
	}
	c.sess, c.id = sess, id
	if !c.counted {
		c.counted = true
		c.g.stats.connected.Add(1)
	}
	c.setAsleep(false)
	c.st = stActive
	c.keepAlive = c.g.keepAlive(p.Duration)
	c.deadline = time.Time{}
	// What was in flight belonged to the previous session: the broker
	// sends it again on this one if the session persists.
	c.inflight, c.reg, c.qos2In = nil, nil, nil
	if p.Flags.CleanSession || !sess.SessionPresent() {
		c.topicByName, c.topicByID = nil, nil
	}
	c.send(Packet{Type: TypeConnack, ReturnCode: Accepted})
	c.logger().Debug("MQTT-SN device connected", "clean", p.Flags.CleanSession, "keep_alive", c.keepAlive, "username", username)
	return keep, ""
}

func (c *client) onDisconnect(p Packet) (end, string) {
	if p.HasDuration && p.Duration > 0 {
		c.sleepFor = time.Duration(p.Duration) * time.Second
		c.st = stAsleep
		c.deadline = time.Now().Add(c.sleepFor * 3 / 2)
		c.setAsleep(true)
		c.send(Packet{Type: TypeDisconnect})
		return keep, ""
	}
	c.send(Packet{Type: TypeDisconnect})
	return cleanEnd, "DISCONNECT"
}

func (c *client) currentWill() mqtt.Will {
	if c.will != nil {
		return *c.will
	}
	return mqtt.Will{}
}

func (c *client) setWill(w *mqtt.Will) {
	c.will = w
	c.sess.SetWill(w)
}

func (c *client) onWillTopicUpd(p Packet) {
	if p.TopicName == "" {
		c.setWill(nil)
		c.send(Packet{Type: TypeWillTopicResp, ReturnCode: Accepted})
		return
	}
	if topicNameProblem(p.TopicName) != "" {
		c.send(Packet{Type: TypeWillTopicResp, ReturnCode: RejectedNotSupported})
		return
	}
	w := c.currentWill()
	w.Topic, w.QoS, w.Retain = p.TopicName, byte(max(p.Flags.QoS, 0)), p.Flags.Retain
	c.setWill(&w)
	c.send(Packet{Type: TypeWillTopicResp, ReturnCode: Accepted})
}

// topicOf resolves a device's topic id to a topic name, or "".
func (c *client) topicOf(idType byte, id uint16) string {
	switch idType {
	case TopicNormal:
		return c.topicByID[id]
	case TopicPredefined:
		return c.g.predefByID[id]
	case TopicShort:
		if t := ShortTopic(id); topicNameProblem(t) == "" {
			return t
		}
	}
	return ""
}

func (c *client) onPublish(ctx context.Context, p Packet) {
	qos := p.Flags.QoS
	topic := c.topicOf(p.Flags.TopicIDType, p.TopicID)
	if topic == "" {
		c.g.drop(DropInvalidTopic, c.addr, fmt.Errorf("PUBLISH to unknown topic id %d (type %d)", p.TopicID, p.Flags.TopicIDType))
		c.send(Packet{Type: TypePuback, TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: RejectedInvalidTopic})
		return
	}
	if qos == 2 {
		if _, dup := c.qos2In[p.MsgID]; dup {
			c.send(Packet{Type: TypePubrec, MsgID: p.MsgID})
			return
		}
	}
	pctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	err := c.sess.Publish(pctx, bus.Message{Topic: topic, Payload: p.Data, QoS: byte(qos), Retain: p.Flags.Retain})
	cancel()
	if err != nil {
		code := returnCodeOf(err)
		c.g.warn("MQTT-SN publish refused", "client", c.id, "topic", topic, "error", err, "return_code", code)
		if qos > 0 {
			c.send(Packet{Type: TypePuback, TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: code})
		}
		return
	}
	c.g.stats.publishesIn.Add(1)
	switch qos {
	case 1:
		c.send(Packet{Type: TypePuback, TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: Accepted})
	case 2:
		if c.qos2In == nil {
			c.qos2In = make(map[uint16]struct{})
		}
		c.qos2In[p.MsgID] = struct{}{}
		c.send(Packet{Type: TypePubrec, MsgID: p.MsgID})
	}
}

// onAck handles PUBACK, PUBREC and PUBCOMP for a delivery in flight.
func (c *client) onAck(p Packet) {
	m := c.inflight[p.MsgID]
	if m == nil {
		c.g.drop(DropUnexpected, c.addr, fmt.Errorf("%s for message %d not in flight", p.Type, p.MsgID))
		return
	}
	switch {
	case p.Type == TypePuback && p.ReturnCode != Accepted:
		// The device refuses it; it will not take it again either.
		if p.ReturnCode == RejectedInvalidTopic && m.p.Flags.TopicIDType == TopicNormal {
			c.forgetTopic(m.p.TopicID)
		}
		c.logger().Debug("MQTT-SN device refused a message", "topic", m.d.Topic, "return_code", p.ReturnCode)
		c.done(p.MsgID, m)
	case p.Type == TypePuback && m.d.QoS == 1, p.Type == TypePubcomp && m.released:
		c.done(p.MsgID, m)
	case p.Type == TypePubrec && m.d.QoS == 2:
		m.released, m.sentAt, m.retries = true, time.Now(), 0
		c.send(Packet{Type: TypePubrel, MsgID: p.MsgID})
	default:
		c.g.drop(DropUnexpected, c.addr, fmt.Errorf("%s for QoS %d message %d", p.Type, m.d.QoS, p.MsgID))
	}
}

// done acknowledges a delivery to the broker once the device has it.
func (c *client) done(id uint16, m *outMsg) {
	delete(c.inflight, id)
	m.d.Ack()
}

// onRegister assigns a topic id to the device's topic name.
func (c *client) onRegister(p Packet) {
	if topicNameProblem(p.TopicName) != "" || isSysTopic(p.TopicName) {
		// A device registers a topic name to publish to it; $SYS topics
		// are the broker's own.
		c.send(Packet{Type: TypeRegack, MsgID: p.MsgID, ReturnCode: RejectedNotSupported})
		return
	}
	id, ok := c.registerTopic(p.TopicName)
	if !ok {
		c.send(Packet{Type: TypeRegack, MsgID: p.MsgID, ReturnCode: RejectedCongestion})
		return
	}
	c.send(Packet{Type: TypeRegack, TopicID: id, MsgID: p.MsgID, ReturnCode: Accepted})
}

// onRegack completes a REGISTER the gateway sent.
func (c *client) onRegack(p Packet) {
	r := c.reg
	if r == nil || r.p.MsgID != p.MsgID {
		c.g.drop(DropUnexpected, c.addr, fmt.Errorf("REGACK for message %d not in flight", p.MsgID))
		return
	}
	c.reg = nil
	if p.ReturnCode == Accepted {
		return // flush publishes the message waiting for it
	}
	// The device refuses the topic: drop the messages waiting for it.
	c.forgetTopic(r.p.TopicID)
	c.logger().Debug("MQTT-SN device refused a topic", "topic", r.p.TopicName, "return_code", p.ReturnCode)
	c.qmu.Lock()
	if len(c.q) > 0 && c.q[0].d.Topic == r.p.TopicName {
		d := c.q[0].d
		c.popLocked()
		c.qmu.Unlock()
		d.Ack()
		return
	}
	c.qmu.Unlock()
}

// registerTopic returns the device's topic id for name, assigning one if
// needed; false when the device has max_topics already.
func (c *client) registerTopic(name string) (uint16, bool) {
	if id, ok := c.topicByName[name]; ok {
		return id, true
	}
	if len(c.topicByID) >= c.g.cfg.MaxTopics {
		return 0, false
	}
	if c.topicByName == nil {
		c.topicByName, c.topicByID = make(map[string]uint16), make(map[uint16]string)
	}
	for {
		c.nextTopic++
		id := c.nextTopic
		if id == 0 || id == 0xFFFF {
			continue
		}
		if _, predef := c.g.predefByID[id]; predef {
			continue
		}
		if _, used := c.topicByID[id]; used {
			continue
		}
		c.topicByName[name], c.topicByID[id] = id, name
		return id, true
	}
}

// isSysTopic reports whether t is under $SYS (any case, as the broker
// refuses publishes there).
func isSysTopic(t string) bool {
	return len(t) >= 4 && strings.EqualFold(t[:4], "$SYS")
}

func (c *client) forgetTopic(id uint16) {
	if name, ok := c.topicByID[id]; ok {
		delete(c.topicByID, id)
		delete(c.topicByName, name)
	}
}

// filterOf resolves SUBSCRIBE/UNSUBSCRIBE's topic to a filter and the topic
// id SUBACK carries.
func (c *client) filterOf(p Packet) (filter string, id uint16, ok bool) {
	switch p.Flags.TopicIDType {
	case TopicNormal:
		filter = p.TopicName
	case TopicPredefined:
		filter, id = c.g.predefByID[p.TopicID], p.TopicID
	case TopicShort:
		filter = ShortTopic(p.TopicID)
	}
	if filter == "" || !bus.ValidFilter(filter) || topicNameProblem(strings.NewReplacer("+", "x", "#", "x").Replace(filter)) != "" {
		return "", 0, false
	}
	return filter, id, true
}

func (c *client) onSubscribe(ctx context.Context, p Packet) {
	filter, id, ok := c.filterOf(p)
	if !ok {
		c.send(Packet{Type: TypeSuback, MsgID: p.MsgID, ReturnCode: RejectedInvalidTopic})
		return
	}
	if p.Flags.TopicIDType == TopicNormal && !strings.ContainsAny(filter, "+#") && len(filter) != 2 {
		id, _ = c.registerTopic(filter) // 0 when the device has max_topics: REGISTER later
	}
	sctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	granted, err := c.sess.Subscribe(sctx, filter, byte(max(p.Flags.QoS, 0)))
	cancel()
	if err != nil {
		code := returnCodeOf(err)
		c.g.warn("MQTT-SN subscribe refused", "client", c.id, "filter", filter, "error", err, "return_code", code)
		c.send(Packet{Type: TypeSuback, MsgID: p.MsgID, ReturnCode: code})
		return
	}
	c.send(Packet{Type: TypeSuback, Flags: Flags{QoS: int8(granted)}, TopicID: id, MsgID: p.MsgID, ReturnCode: Accepted})
}

func (c *client) onUnsubscribe(ctx context.Context, p Packet) {
	if filter, _, ok := c.filterOf(p); ok {
		uctx, cancel := context.WithTimeout(ctx, brokerTimeout)
		err := c.sess.Unsubscribe(uctx, filter)
		cancel()
		if err != nil {
			c.logger().Debug("MQTT-SN unsubscribe failed", "filter", filter, "error", err)
		}
	}
	c.send(Packet{Type: TypeUnsuback, MsgID: p.MsgID})
}

// enqueue is the session's OnMessage: it only queues. The queue holds at
// most SleepBuffer messages; when full, the oldest QoS 0 message goes (QoS
// 1/2 ones are bounded by the session's receive maximum).
func (c *client) enqueue(gen uint64, addr peer, d mqtt.Delivery) {
	c.qmu.Lock()
	if len(c.q) >= c.g.cfg.SleepBuffer {
		i := 0
		for i < len(c.q) && c.q[i].d.QoS != 0 {
			i++
		}
		switch {
		case i < len(c.q):
			c.q = append(c.q[:i], c.q[i+1:]...)
			c.g.drop(DropBuffer, addr, fmt.Errorf("oldest QoS 0 message dropped: buffer of %d full", c.g.cfg.SleepBuffer))
		case d.QoS == 0:
			c.qmu.Unlock()
			c.g.drop(DropBuffer, addr, fmt.Errorf("QoS 0 message on %s dropped: buffer of %d full", d.Topic, c.g.cfg.SleepBuffer))
			return
		}
	}
	c.q = append(c.q, queued{gen: gen, d: d})
	c.qmu.Unlock()
	select {
	case c.qsig <- struct{}{}:
	default:
	}
}

func (c *client) popLocked() {
	c.q[0] = queued{}
	c.q = c.q[1:]
	if len(c.q) == 0 {
		c.q = nil
	}
}

// topicFor finds how to name a topic to the device without REGISTER.
func (c *client) topicFor(name string) (idType byte, id uint16, ok bool) {
	if id, ok := c.g.predefByName[name]; ok {
		return TopicPredefined, id, true
	}
	if len(name) == 2 {
		return TopicShort, ShortTopicID(name), true
	}
	if id, ok := c.topicByName[name]; ok {
		return TopicNormal, id, true
	}
	return 0, 0, false
}

// flush sends queued deliveries as far as the state, REGISTERs and the
// in-flight window allow; an awake device that has everything gets PINGRESP
// and goes back to sleep.
func (c *client) flush() (end, string) {
	for c.st == stActive || c.st == stAwake {
		if c.reg != nil {
			return keep, ""
		}
		c.qmu.Lock()
		for len(c.q) > 0 && c.q[0].gen != c.gen {
			c.popLocked() // from an ended session: the broker sends it again if it persists
		}
		if len(c.q) == 0 {
			c.qmu.Unlock()
			break
		}
		d := c.q[0].d
		if d.QoS > 0 && len(c.inflight) >= c.g.cfg.MaxInflight {
			c.qmu.Unlock()
			return keep, ""
		}
		idType, topicID, ok := c.topicFor(d.Topic)
		if !ok {
			c.qmu.Unlock()
			id, ok := c.registerTopic(d.Topic)
			if !ok {
				c.qmu.Lock()
				c.popLocked()
				c.qmu.Unlock()
				d.Ack()
				c.g.drop(DropOverload, c.addr, fmt.Errorf("message on %s: the device has max_topics (%d) topic ids", d.Topic, c.g.cfg.MaxTopics))
				continue
			}
			c.reg = &pendingReg{p: Packet{Type: TypeRegister, TopicID: id, MsgID: c.newMsgID(), TopicName: d.Topic}, sentAt: time.Now()}
			c.send(c.reg.p)
			return keep, ""
		}
		c.popLocked()
		c.qmu.Unlock()
		p := Packet{
			Type:    TypePublish,
			Flags:   Flags{DUP: d.Dup, QoS: int8(d.QoS), Retain: d.Retain, TopicIDType: idType},
			TopicID: topicID,
			Data:    d.Payload,
		}
		if d.QoS > 0 {
			p.MsgID = c.newMsgID()
			if c.inflight == nil {
				c.inflight = make(map[uint16]*outMsg)
			}
			c.inflight[p.MsgID] = &outMsg{d: d, p: p, sentAt: time.Now()}
		}
		c.send(p)
		c.g.stats.publishesOut.Add(1)
	}
	if c.st == stAwake && len(c.inflight) == 0 && c.reg == nil {
		c.send(Packet{Type: TypePingresp})
		c.st = stAsleep
		c.deadline = time.Now().Add(c.sleepFor * 3 / 2)
	}
	return keep, ""
}

// newMsgID returns a message id not in use towards the device.
func (c *client) newMsgID() uint16 {
	for {
		c.nextMsgID++
		id := c.nextMsgID
		if id == 0 {
			continue
		}
		if _, used := c.inflight[id]; used {
			continue
		}
		if c.reg != nil && c.reg.p.MsgID == id {
			continue
		}
		return id
	}
}
