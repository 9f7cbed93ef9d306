package mqtt

// Broker events, as EMQX's rule engine names them: "$events/client_connected",
// "$events/client_disconnected" and "$events/message_dropped", each a JSON
// object with EMQX's fields (docs/rules.md lists them).
//
// Events never enter the MQTT engine. Subscribe and Publish on a topic under
// $events/ go to an in-process list kept here, so no MQTT client can read an
// event (it holds usernames and addresses) or forge one, whatever the ACL
// says; OnACLCheck also refuses $events/ to clients, so that a client is
// told so instead of getting silence. The gateway's parts (the rules engine)
// subscribe through the bus as for any topic; protocols/mqtt imports
// nothing of theirs.
//
// An event is built only when someone subscribes to its topic, and is
// handed to the subscribers in the broker's goroutine that saw it happen
// (a connect, a disconnect, a drop). Handlers only enqueue (the bus
// contract; the rules engine's per-rule queue drops and counts when full),
// so an event never blocks the broker. message_dropped events come in
// storms (a full queue drops a message per publish) and can feed back on
// themselves (a rule that republishes a drop where it is dropped again):
// they are limited to eventDropRate a second, the rest counted in
// Stats.EventsDropped.

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/time/rate"

	"github.com/fieldgate/fieldgate/bus"
)

// The event topics the broker publishes, in-process only.
const (
	// EventClientConnected is published when a client's CONNECT succeeded.
	EventClientConnected = "$events/client_connected"
	// EventClientDisconnected is published when a connected client's
	// connection ends, with the reason.
	EventClientDisconnected = "$events/client_disconnected"
	// EventMessageDropped is published when a message is not delivered to
	// a subscriber: its session queue is full, it expired, the subscriber
	// may not read its topic, or it is over the subscriber's maximum packet
	// size.
	EventMessageDropped = "$events/message_dropped"
)

// eventsPrefix starts the event topics.
const eventsPrefix = "$events/"

// eventOrigin is the origin of event messages.
const eventOrigin = "$broker"

// eventDropRate bounds the message_dropped events a second (burst as
// much); the rest are counted in Stats.EventsDropped.
const eventDropRate = 1000

// isEventTopic reports whether a topic or filter is under $events/.
func isEventTopic(topic string) bool { return strings.HasPrefix(topic, eventsPrefix) }

// eventSubs are the in-process subscribers of $events/ topics.
type eventSubs struct {
	mu   sync.Mutex
	seq  int
	subs atomic.Pointer[[]eventSub] // copy on write, under mu
	drop *rate.Limiter              // message_dropped events
}

type eventSub struct {
	id     int
	filter string
	h      bus.Handler
}

func newEventSubs() *eventSubs {
	e := &eventSubs{drop: rate.NewLimiter(eventDropRate, eventDropRate)}
	e.subs.Store(&[]eventSub{})
	return e
}

// subscribe adds h for filter; the returned function removes it.
func (e *eventSubs) subscribe(filter string, h bus.Handler) func() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	id := e.seq
	next := append(slices.Clone(*e.subs.Load()), eventSub{id: id, filter: filter, h: h})
	e.subs.Store(&next)
	var once sync.Once
	return func() {
		once.Do(func() {
			e.mu.Lock()
			defer e.mu.Unlock()
			next := slices.DeleteFunc(slices.Clone(*e.subs.Load()), func(s eventSub) bool { return s.id == id })
			e.subs.Store(&next)
		})
	}
}

// wants reports whether anyone subscribes to topic: one atomic load when
// no one subscribes to any event.
func (e *eventSubs) wants(topic string) bool {
	for _, s := range *e.subs.Load() {
		if bus.Match(s.filter, topic) {
			return true
		}
	}
	return false
}

// deliver hands m to every subscriber of its topic and reports whether
// there was one.
func (e *eventSubs) deliver(m bus.Message) bool {
	found := false
	for _, s := range *e.subs.Load() {
		if bus.Match(s.filter, m.Topic) {
			s.h(m)
			found = true
		}
	}
	return found
}

// emitEvent publishes ev as JSON on topic to its in-process subscribers.
// props are MQTT 5 user properties the event carries (a dropped message's,
// so that the rules engine's hop count cuts a chain of rules fed by their
// own drops).
func (b *Broker) emitEvent(topic string, ev any, props []bus.UserProperty) {
	payload, err := json.Marshal(ev)
	if err != nil {
		return // plain structs of strings and numbers: cannot fail
	}
	m := bus.Message{Topic: topic, Payload: payload, Origin: eventOrigin, Time: time.Now(),
		ContentType: "application/json", UserProperties: props}
	if b.events.deliver(m) {
		b.stats.Events.Add(1)
	}
}

// clientEvent are the fields EMQX gives every client event.
type clientEvent struct {
	ClientID  string `json:"clientid"`
	Username  string `json:"username,omitempty"`
	Peername  string `json:"peername,omitempty"`
	Peerhost  string `json:"peerhost,omitempty"`
	Listener  string `json:"listener"`
	ProtoName string `json:"proto_name"`
	ProtoVer  byte   `json:"proto_ver"`
	Timestamp int64  `json:"timestamp"`
}

func newClientEvent(cl *mochi.Client, now time.Time) clientEvent {
	ev := clientEvent{
		ClientID:  cl.ID,
		Username:  string(cl.Properties.Username),
		Peername:  cl.Net.Remote,
		Listener:  cl.Net.Listener,
		ProtoName: "MQTT",
		ProtoVer:  cl.Properties.ProtocolVersion,
		Timestamp: now.UnixMilli(),
	}
	if host, _, err := net.SplitHostPort(cl.Net.Remote); err == nil {
		ev.Peerhost = host
	}
	return ev
}

// connectedEvent is $events/client_connected.
type connectedEvent struct {
	clientEvent
	Keepalive      uint16 `json:"keepalive"`
	CleanStart     bool   `json:"clean_start"`
	ExpiryInterval uint32 `json:"expiry_interval"`
	IsBridge       bool   `json:"is_bridge"`
	ConnectedAt    int64  `json:"connected_at"`
}

// disconnectedEvent is $events/client_disconnected.
type disconnectedEvent struct {
	clientEvent
	Reason         string `json:"reason"`
	DisconnectedAt int64  `json:"disconnected_at"`
}

// droppedEvent is $events/message_dropped. clientid and username are the
// subscriber the message was not delivered to (EMQX's delivery_dropped),
// from_clientid its publisher. The payload is left out; payload_size says
// how big it was.
type droppedEvent struct {
	ClientID          string `json:"clientid"`
	Username          string `json:"username,omitempty"`
	FromClientID      string `json:"from_clientid,omitempty"`
	Topic             string `json:"topic"`
	QoS               byte   `json:"qos"`
	Retain            bool   `json:"retain"`
	PayloadSize       int    `json:"payload_size"`
	Reason            string `json:"reason"`
	PublishReceivedAt int64  `json:"publish_received_at,omitempty"`
	Timestamp         int64  `json:"timestamp"`
}

// eventConnected publishes client_connected for a client whose CONNECT
// succeeded (OnSessionEstablished).
func (b *Broker) eventConnected(cl *mochi.Client) {
	if cl.Net.Inline || !b.events.wants(EventClientConnected) {
		return
	}
	now := time.Now()
	b.emitEvent(EventClientConnected, connectedEvent{
		clientEvent:    newClientEvent(cl, now),
		Keepalive:      cl.State.Keepalive,
		CleanStart:     cl.Properties.Clean,
		ExpiryInterval: cl.Properties.Props.SessionExpiryInterval,
		ConnectedAt:    now.UnixMilli(),
	}, nil)
}

// eventDisconnected publishes client_disconnected for a client whose
// connection ended (OnDisconnect). Sessions restored from the store at
// start, which the engine also passes to OnDisconnect, never connected and
// have no connection: no event.
func (b *Broker) eventDisconnected(cl *mochi.Client, err error, sent byte) {
	if cl.Net.Inline || cl.Net.Conn == nil || !b.events.wants(EventClientDisconnected) {
		return
	}
	now := time.Now()
	b.emitEvent(EventClientDisconnected, disconnectedEvent{
		clientEvent:    newClientEvent(cl, now),
		Reason:         disconnectReason(cl, err, sent),
		DisconnectedAt: now.UnixMilli(),
	}, nil)
}

// disconnectReason names why a connection ended, with EMQX's words where
// it has them: normal (the client sent DISCONNECT), kicked (the page or
// API), takenover (a new connection with the same client id),
// keepalive_timeout, tcp_closed (the connection closed without
// DISCONNECT), frame_too_large, message_rate_too_high, banned,
// server_shutdown, and protocol_error for any other reason code. sent is
// the reason code of the DISCONNECT the broker sent (0: none), which wins:
// the client may close its socket before the engine records why.
func disconnectReason(cl *mochi.Client, err error, sent byte) string {
	if sent != 0 {
		return codeReason(sent)
	}
	cause := cl.StopCause()
	if cause == nil {
		cause = err
	}
	if cause == nil {
		return "normal"
	}
	if errors.Is(cause, errPacketTooLarge) {
		return "frame_too_large"
	}
	var code packets.Code
	if errors.As(cause, &code) {
		return codeReason(code.Code)
	}
	var ne net.Error
	if errors.Is(cause, os.ErrDeadlineExceeded) || (errors.As(cause, &ne) && ne.Timeout()) {
		return "keepalive_timeout"
	}
	// io.EOF, a reset, a closed pipe (in-process sessions): the connection
	// closed without DISCONNECT.
	return "tcp_closed"
}

// codeReason names a DISCONNECT reason code as disconnectReason does.
func codeReason(code byte) string {
	switch code {
	case packets.CodeDisconnect.Code, packets.CodeDisconnectWillMessage.Code:
		return "normal"
	case packets.ErrAdministrativeAction.Code:
		return "kicked"
	case packets.ErrSessionTakenOver.Code:
		return "takenover"
	case packets.ErrKeepAliveTimeout.Code:
		return "keepalive_timeout"
	case packets.ErrPacketTooLarge.Code:
		return "frame_too_large"
	case packets.ErrMessageRateTooHigh.Code:
		return "message_rate_too_high"
	case packets.ErrBanned.Code:
		return "banned"
	case packets.ErrServerShuttingDown.Code:
		return "server_shutdown"
	}
	return "protocol_error"
}

// eventDropped publishes message_dropped for pk, not delivered to cl for
// reason (queue_full, memory_budget, expired, acl, too_large).
func (b *Broker) eventDropped(cl *mochi.Client, pk *packets.Packet, reason string) {
	if cl.Net.Inline || !b.events.wants(EventMessageDropped) {
		return
	}
	if !b.events.drop.Allow() {
		b.stats.EventsDropped.Add(1)
		return
	}
	now := time.Now()
	ev := droppedEvent{
		ClientID:     cl.ID,
		Username:     string(cl.Properties.Username),
		FromClientID: pk.Origin,
		Topic:        pk.TopicName,
		QoS:          pk.FixedHeader.Qos,
		Retain:       pk.FixedHeader.Retain,
		PayloadSize:  len(pk.Payload),
		Reason:       reason,
		Timestamp:    now.UnixMilli(),
	}
	if pk.Created > 0 {
		ev.PublishReceivedAt = pk.Created * 1000
	}
	var props []bus.UserProperty
	for _, u := range pk.Properties.User {
		props = append(props, bus.UserProperty{Key: u.Key, Value: u.Val})
	}
	b.emitEvent(EventMessageDropped, ev, props)
}

// eventDroppedACL publishes message_dropped for a message on topic that
// cl's subscription sub may not read (OnDeliveryACLCheck, which does not
// see the message itself: qos is the subscription's).
func (b *Broker) eventDroppedACL(cl *mochi.Client, sub packets.Subscription, topic string) {
	if !b.events.wants(EventMessageDropped) {
		return
	}
	pk := packets.Packet{TopicName: topic, FixedHeader: packets.FixedHeader{Qos: sub.Qos}}
	b.eventDropped(cl, &pk, "acl")
}

// eventsHook is the engine hook that sees what only the engine knows:
// messages it gives up because they expired (OnQosDropped), QoS 0 messages
// it drops for a client whose write queue is full (OnPublishDropped).
type eventsHook struct {
	mochi.HookBase
	b *Broker
}

// ID identifies the hook to the engine.
func (h *eventsHook) ID() string { return "fieldgate-events" }

// Provides lists the engine events the hook handles.
func (h *eventsHook) Provides(b byte) bool {
	return b == mochi.OnQosDropped || b == mochi.OnPublishDropped
}

// OnQosDropped publishes message_dropped (expired) for a message the
// engine expired: the engine's own rule (clearExpiredInflights), read
// again here because the engine also drops the messages of a clean
// session that ends through this hook.
func (h *eventsHook) OnQosDropped(cl *mochi.Client, pk packets.Packet) {
	if pk.FixedHeader.Type != packets.Publish || !h.b.events.wants(EventMessageDropped) {
		return
	}
	now := time.Now().Unix()
	maxExpiry := h.b.srv.Options.Capabilities.MaximumMessageExpiryInterval
	expired := pk.ProtocolVersion == 5 && pk.Expiry > 0 && pk.Expiry < now
	enforced := maxExpiry > 0 && pk.Created > 0 && now-pk.Created > maxExpiry
	if expired || enforced {
		h.b.eventDropped(cl, &pk, "expired")
	}
}

// OnPublishDropped publishes message_dropped (queue_full) for a QoS 0
// message the engine dropped: the client's write queue was full.
func (h *eventsHook) OnPublishDropped(cl *mochi.Client, pk packets.Packet) {
	h.b.eventDropped(cl, &pk, "queue_full")
}

// publishTooLarge reports whether a PUBLISH to cl is surely over the
// maximum packet size cl announced: its topic and payload alone are (the
// engine then drops it without a word). A packet over the limit only
// with its properties is not seen.
func publishTooLarge(cl *mochi.Client, pk *packets.Packet) bool {
	max := cl.Properties.Props.MaximumPacketSize
	if max == 0 {
		return false
	}
	n := 2 + 2 + len(pk.TopicName) + len(pk.Payload) // fixed header, topic length, topic, payload
	if pk.FixedHeader.Qos > 0 {
		n += 2
	}
	return uint32(n) > max
}
