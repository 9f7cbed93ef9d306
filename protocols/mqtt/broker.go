// Package mqtt is fieldgate's local MQTT broker: the bus every other part of
// the gateway talks through.
//
// It embeds the mochi-mqtt engine (MQTT 3.1, 3.1.1 and 5) and adds what a
// gateway needs around it: its own listeners (TCP, TLS, WebSocket) that admit
// connections by address and rate and refuse oversized packets with the right
// reason code; users with bcrypt passwords and ordered ACL rules; limits;
// the EMQX-style extensions ($delayed/, $exclusive/, auto-subscribe, topic
// rewrite, banned lists); precise will delays; persistence in bbolt through
// the store package; and the bus interface, including the synchronous
// tap that lets the uplink make a message durable before its publisher is
// acknowledged.
//
// Everything the engine is configured with lives in broker.go; each hook's
// behaviour is in the file named for it.
package mqtt

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/membudget"
	"github.com/fieldgate/fieldgate/internal/rawio"
)

// Options are the broker's collaborators.
type Options struct {
	// Logger receives the broker's logs; nil discards them.
	Logger *slog.Logger
	// Store persists sessions, subscriptions, retained, inflight and delayed
	// messages; nil keeps everything in memory only.
	Store Store
	// Version is reported in $SYS/broker/version.
	Version string
	// Budget is the gateway's memory budget; packet bodies being read and
	// offline session queues draw on it. Nil: unlimited.
	Budget *membudget.Budget
}

// Broker is the running local MQTT broker. It implements bus.Bus.
type Broker struct {
	log  *slog.Logger
	srv  *mochi.Server
	hook *gatewayHook
	db   Store

	rt       atomic.Pointer[runtimeConfig] // what may change live
	reloadMu sync.Mutex

	taps   atomic.Pointer[[]tapEntry] // copy on write
	tapMu  sync.Mutex
	tapSeq int

	subMu  sync.Mutex
	subSeq int

	inlineMu sync.Mutex
	inline   map[string]*mochi.Client // origin → injecting client

	persist *persistHook // nil without a store
	packets *packetPool  // packet bodies being read, in the memory budget
	queues  *sessionQueues
	delayed *delayedQueue
	wills   *willScheduler
	events  *eventSubs // in-process subscribers of $events/ (events.go)
	qos0    qos0Queue
	stats   Stats

	inprocWG sync.WaitGroup // the goroutines of in-process sessions (session.go)

	rawIO  bool                         // broker.listeners.raw_io
	poller atomic.Pointer[rawio.Poller] // parks idle TCP connections (park.go); set by Run, nil: none
}

type tapEntry struct {
	id     int
	filter string
	fn     bus.TapFunc
}

// Stats are the broker's own counters, beyond the engine's $SYS ones.
type Stats struct {
	ConnectionsRefused  atomic.Int64 // banned address or over the connect rate
	AuthFailures        atomic.Int64
	OversizedPackets    atomic.Int64
	RateLimited         atomic.Int64 // clients disconnected with 0x96
	TapRefusals         atomic.Int64
	QueuedDropped       atomic.Int64 // oldest queued messages dropped for a full session queue
	DelayedPending      atomic.Int64
	DelayedInvalid      atomic.Int64
	ExclusiveRefused    atomic.Int64
	TopicLimitsRejected atomic.Int64
	// ACLDropped counts messages not delivered to a subscriber that may not
	// read their topic (its subscription, granted, overlaps a deny rule).
	ACLDropped atomic.Int64

	// ConnectionsOverAddressLimit counts connections closed at accept because
	// their address held max_connections_per_address already.
	ConnectionsOverAddressLimit atomic.Int64
	// PacketBytesReading is the bytes of packet bodies being read now.
	PacketBytesReading atomic.Int64

	// QueueBudgetDropped counts session messages dropped because the
	// memory budget refused them; QueuedRestoreDropped persisted ones not
	// restored at start, over the queue limits or the budget.
	QueueBudgetDropped   atomic.Int64
	QueuedRestoreDropped atomic.Int64
	// QueueWaits counts the publishes that waited for room in a connected
	// subscriber's full queue (flow control instead of a drop);
	// QueueWaitTimeouts those that stopped waiting because the subscriber
	// took nothing for 5 s (the drop policy then applied).
	QueueWaits        atomic.Int64
	QueueWaitTimeouts atomic.Int64

	// Events counts the $events/ messages handed to in-process subscribers
	// (events.go); EventsDropped the message_dropped events not published,
	// over their rate limit.
	Events        atomic.Int64
	EventsDropped atomic.Int64

	// ParkedConnections is how many idle TCP connections wait without a
	// goroutine of their own (park.go), as of the last call to Stats.
	ParkedConnections atomic.Int64
}

// New builds the broker and binds its listeners, so a busy port is an error
// here and not later. Run serves it.
func New(cfg Config, opts Options) (*Broker, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rt, err := compile(cfg)
	if err != nil {
		return nil, err
	}
	b := &Broker{
		log:    log,
		db:     opts.Store,
		inline: make(map[string]*mochi.Client),
		events: newEventSubs(),
		rawIO:  cfg.Listeners.RawIO,
	}
	b.rt.Store(rt)
	b.taps.Store(&[]tapEntry{})
	b.packets = newPacketPool(opts.Budget, cfg.Limits.MaxPacketSize, &b.stats.PacketBytesReading)

	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumClients = int64(cfg.Limits.MaxConnections)
	// The listeners refuse an oversized packet at its fixed header; the
	// engine checks again for every reader, in-process sessions included.
	caps.MaximumPacketSize = uint32(cfg.Limits.MaxPacketSize)
	caps.ReceiveMaximum = uint16(cfg.Limits.ReceiveMaximum)
	// The engine's inflight store holds both what is in flight and what is
	// queued for a session; our hook drops the oldest beyond MaxQueued.
	caps.MaximumInflight = uint16(min(cfg.Limits.MaxInflight+cfg.Limits.MaxQueued+1, math.MaxUint16))
	// Queued messages take no packet id until sent, so a session may hold
	// more than 65,535: the engine's hard bound leaves room above the
	// hook's limit for the one message each publisher waiting for room adds.
	caps.MaximumQueued = cfg.Limits.MaxInflight + cfg.Limits.MaxQueued + cfg.Limits.MaxConnections + 1024
	caps.MaximumSessionExpiryInterval = uint32(cfg.Limits.MaxSessionExpiry / time.Second)
	caps.MaximumMessageExpiryInterval = int64(cfg.Limits.MaxMessageExpiry / time.Second)
	// The engine's per-client outbound queue is a channel of this many
	// pointers: 64 KB, allocated but left untouched (so not resident) until a
	// burst needs it. Smaller channels fall into the allocator's small size
	// classes and are resident from the start.
	caps.MaximumClientWritesPending = 8192
	caps.Compatibilities.NoInheritedPropertiesOnAck = true // acks must not echo the publish's properties
	caps.TopicAliasMaximum = 1024

	b.srv = mochi.New(&mochi.Options{
		Capabilities:            caps,
		InlineClient:            true,
		Logger:                  log.With("part", "mqtt"),
		SysTopicResendInterval:  int64(max(cfg.SysInterval/time.Second, 1)),
		ClientNetReadBufferSize: 1024,
		// Only used while a burst is queued for a client: bigger means fewer
		// write calls under load and costs nothing when idle.
		ClientNetWriteBufferSize: 16 << 10,
		PacketBudget:             b.packets,
	})
	if opts.Version != "" {
		b.srv.Info.Version = opts.Version
	}
	b.hook = newGatewayHook(b)
	b.wills = newWillScheduler(b)
	b.delayed = newDelayedQueue(b)
	if err := b.srv.AddHook(b.hook, nil); err != nil {
		return nil, fmt.Errorf("mqtt: add gateway hook: %w", err)
	}
	if opts.Store != nil {
		b.persist = newPersistHook(opts.Store, log)
		if err := b.srv.AddHook(b.persist, nil); err != nil {
			return nil, fmt.Errorf("mqtt: add persistence hook: %w", err)
		}
		if err := b.delayed.load(); err != nil {
			return nil, err
		}
	}
	// After the persistence hook: a message it drops is deleted from the
	// store after it was written (queues.go).
	b.queues = newSessionQueues(b, opts.Budget)
	if err := b.srv.AddHook(b.queues, nil); err != nil {
		return nil, fmt.Errorf("mqtt: add queue hook: %w", err)
	}
	if b.persist != nil {
		b.persist.srv, b.persist.queues = b.srv, b.queues
	}
	if err := b.srv.AddHook(&eventsHook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("mqtt: add events hook: %w", err)
	}
	if err := b.addListeners(cfg); err != nil {
		b.closeListeners()
		return nil, err
	}
	return b, nil
}

func (b *Broker) addListeners(cfg Config) error {
	l := cfg.Listeners
	maxPacket := cfg.Limits.MaxPacketSize
	wrap := func(c net.Conn) net.Conn {
		cc := newClientConn(c, maxPacket)
		cc.enablePark(b.poller.Load())
		if t := b.rt.Load().limits.ConnectTimeout; t > 0 {
			_ = c.SetDeadline(time.Now().Add(t)) // the engine resets it after CONNECT
		}
		return cc
	}
	conns := b.newAddrConns() // max_connections_per_address, over all listeners
	var add []*listener
	if l.TCP.Enabled {
		add = append(add, &listener{id: "tcp", protocol: "tcp", address: l.TCP.Address})
	}
	if l.TLS.Enabled {
		tc, err := serverTLS(l.TLS.TLSFiles)
		if err != nil {
			return fmt.Errorf("mqtt: listeners.tls: %w", err)
		}
		add = append(add, &listener{id: "tls", protocol: "tls", address: l.TLS.Address, tls: tc})
	}
	if l.WebSocket.Enabled {
		ws := &listener{id: "ws", protocol: "ws", address: l.WebSocket.Address, wsPath: l.WebSocket.Path}
		if l.WebSocket.Cert != "" {
			tc, err := serverTLS(l.WebSocket.TLSFiles)
			if err != nil {
				return fmt.Errorf("mqtt: listeners.websocket: %w", err)
			}
			ws.id, ws.protocol, ws.tls = "wss", "wss", tc
		}
		add = append(add, ws)
	}
	for _, ln := range add {
		ln.admit = b.hook.admit
		ln.conns = conns
		ln.wrap = wrap
		ln.rawIO = l.RawIO
		if err := b.srv.AddListener(ln); err != nil {
			return fmt.Errorf("mqtt: %w", err)
		}
	}
	if l.QUIC.Enabled {
		tc, err := serverTLS(l.QUIC.files(l.TLS))
		if err != nil {
			return fmt.Errorf("mqtt: listeners.quic: %w", err)
		}
		q := newQUICListener(l.QUIC, tc)
		q.admit, q.conns, q.wrap = b.hook.admit, conns, wrap
		if err := b.srv.AddListener(q); err != nil {
			return fmt.Errorf("mqtt: %w", err)
		}
	}
	return nil
}

func (b *Broker) closeListeners() {
	b.srv.Listeners.CloseAll(func(string) {})
}

// Addr returns the bound address of a listener ("tcp", "tls", "ws", "wss"
// or "quic"), or "" when it is not enabled.
func (b *Broker) Addr(id string) string {
	l, ok := b.srv.Listeners.Get(id)
	if !ok {
		return ""
	}
	return l.Address()
}

// Run serves clients until ctx is done, then disconnects every client (MQTT
// 5 clients get DISCONNECT 0x8B, server shutting down) and stops.
func (b *Broker) Run(ctx context.Context) error {
	// The poller outlives the engine's Close, which wakes the parked
	// connections as it closes them.
	pollCtx, stopPoller := context.WithCancel(context.Background())
	p, waitPoller := startPoller(pollCtx, b.rawIO, b.log)
	b.poller.Store(p)
	defer waitPoller()
	defer stopPoller()
	if err := b.srv.Serve(); err != nil {
		return fmt.Errorf("mqtt: serve: %w", err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); b.delayed.run(ctx) }()
	go func() { defer wg.Done(); b.wills.run(ctx) }()
	<-ctx.Done()
	err := b.srv.Close()
	wg.Wait()
	b.inprocWG.Wait()
	b.packets.close()
	return err
}

// Reload applies what may change while the broker runs (users, ACL, limits
// that apply per connection or per message, extensions, banned lists). It
// returns the names of changed settings that need a restart.
func (b *Broker) Reload(cfg Config) (needRestart []string, err error) {
	rt, err := compile(cfg)
	if err != nil {
		return nil, err
	}
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	old := b.rt.Load()
	keep := func(changed bool, name string) bool {
		if changed {
			needRestart = append(needRestart, name)
		}
		return changed
	}
	// What the engine or the listeners were built with stays as it is.
	if keep(old.listeners != rt.listeners, "broker.listeners") {
		rt.listeners = old.listeners
	}
	ol, nl := &old.limits, &rt.limits
	if keep(ol.MaxConnections != nl.MaxConnections, "broker.limits.max_connections") {
		nl.MaxConnections = ol.MaxConnections
	}
	if keep(ol.ReceiveMaximum != nl.ReceiveMaximum, "broker.limits.receive_maximum") {
		nl.ReceiveMaximum = ol.ReceiveMaximum
	}
	if keep(ol.MaxInflight != nl.MaxInflight, "broker.limits.max_inflight") {
		nl.MaxInflight = ol.MaxInflight
	}
	if keep(ol.MaxQueued != nl.MaxQueued, "broker.limits.max_queued") {
		nl.MaxQueued = ol.MaxQueued
	}
	if keep(ol.MaxPacketSize != nl.MaxPacketSize, "broker.limits.max_packet_size") {
		nl.MaxPacketSize = ol.MaxPacketSize
	}
	if keep(ol.MaxSessionExpiry != nl.MaxSessionExpiry, "broker.limits.max_session_expiry") {
		nl.MaxSessionExpiry = ol.MaxSessionExpiry
	}
	if keep(ol.MaxMessageExpiry != nl.MaxMessageExpiry, "broker.limits.max_message_expiry") {
		nl.MaxMessageExpiry = ol.MaxMessageExpiry
	}
	if keep(old.sysInterval != rt.sysInterval, "broker.sys_interval") {
		rt.sysInterval = old.sysInterval
	}
	b.rt.Store(rt)
	return needRestart, nil
}

// Stats returns the broker's counters.
func (b *Broker) Stats() *Stats {
	if p := b.poller.Load(); p != nil {
		b.stats.ParkedConnections.Store(int64(p.Parked()))
	}
	return &b.stats
}

// Info returns a snapshot of the engine's counters ($SYS values).
func (b *Broker) Info() EngineInfo {
	i := b.srv.Info.Clone()
	return EngineInfo{
		ClientsConnected: i.ClientsConnected,
		MessagesReceived: i.MessagesReceived,
		MessagesSent:     i.MessagesSent,
		MessagesDropped:  i.MessagesDropped,
		InflightDropped:  i.InflightDropped,
		BytesReceived:    i.BytesReceived,
		BytesSent:        i.BytesSent,
		Subscriptions:    i.Subscriptions,
		Retained:         i.Retained,
		Inflight:         i.Inflight,
	}
}

// EngineInfo are the engine's counters.
type EngineInfo struct {
	ClientsConnected, MessagesReceived, MessagesSent, MessagesDropped int64
	InflightDropped, BytesReceived, BytesSent                         int64
	Subscriptions, Retained, Inflight                                 int64
}

// Publish injects a message into the broker as the part named by m.Origin
// (default "$gateway"). It runs taps and delivers to subscribers; it bypasses
// authentication and ACL. A tap's refusal is returned.
func (b *Broker) Publish(ctx context.Context, m bus.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.Topic == "" || strings.ContainsAny(m.Topic, "+#") {
		return fmt.Errorf("mqtt: publish: invalid topic %q", m.Topic)
	}
	origin := m.Origin
	if origin == "" {
		origin = "$gateway"
	}
	if !strings.HasPrefix(origin, "$") {
		return fmt.Errorf("mqtt: publish %s: origin %q of a gateway part must start with $", m.Topic, origin)
	}
	if isEventTopic(m.Topic) { // in-process only (events.go)
		m.Origin = origin
		if m.Time.IsZero() {
			m.Time = time.Now()
		}
		b.events.deliver(m)
		return nil
	}
	if err := b.inject(origin, packetOf(m)); err != nil {
		return fmt.Errorf("mqtt: publish %s: %w", m.Topic, err)
	}
	return nil
}

// inlineClient returns the engine client that injects messages for origin.
// Origins of gateway parts start with '$', which MQTT clients may not use as
// client ids here, so a message's origin is never ambiguous.
func (b *Broker) inlineClient(origin string) *mochi.Client {
	b.inlineMu.Lock()
	defer b.inlineMu.Unlock()
	if cl, ok := b.inline[origin]; ok {
		return cl
	}
	cl := b.srv.NewClient(nil, mochi.LocalListener, origin, true)
	cl.Properties.ProtocolVersion = 5
	b.inline[origin] = cl
	return cl
}

// Subscribe calls h for every message whose topic matches filter, including
// the retained messages that match when it subscribes. h runs in the
// publisher's goroutine and must not block. A filter under $events/ gets
// the broker's events (events.go), which never pass through MQTT.
func (b *Broker) Subscribe(filter string, h bus.Handler) (func(), error) {
	if !bus.ValidFilter(filter) {
		return nil, fmt.Errorf("mqtt: subscribe: invalid filter %q", filter)
	}
	if isEventTopic(filter) {
		return b.events.subscribe(filter, h), nil
	}
	b.subMu.Lock()
	b.subSeq++
	id := b.subSeq
	b.subMu.Unlock()
	err := b.srv.Subscribe(filter, id, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
		h(messageOf(pk))
	})
	if err != nil {
		return nil, fmt.Errorf("mqtt: subscribe %s: %w", filter, err)
	}
	var once sync.Once
	return func() { once.Do(func() { _ = b.srv.Unsubscribe(filter, id) }) }, nil
}

// Tap calls fn for every publish matching filter before the publisher is
// acknowledged; see bus.TapFunc.
func (b *Broker) Tap(filter string, fn bus.TapFunc) (func(), error) {
	if !bus.ValidFilter(filter) {
		return nil, fmt.Errorf("mqtt: tap: invalid filter %q", filter)
	}
	b.tapMu.Lock()
	defer b.tapMu.Unlock()
	b.tapSeq++
	id := b.tapSeq
	old := *b.taps.Load()
	next := append(append([]tapEntry(nil), old...), tapEntry{id: id, filter: filter, fn: fn})
	b.taps.Store(&next)
	return func() {
		b.tapMu.Lock()
		defer b.tapMu.Unlock()
		cur := *b.taps.Load()
		next := make([]tapEntry, 0, len(cur))
		for _, t := range cur {
			if t.id != id {
				next = append(next, t)
			}
		}
		b.taps.Store(&next)
	}, nil
}

// runTaps passes m through every matching tap; the first refusal wins.
func (b *Broker) runTaps(pk *packets.Packet) error {
	taps := *b.taps.Load()
	if len(taps) == 0 {
		return nil
	}
	var m *bus.Message
	for _, t := range taps {
		if !bus.Match(t.filter, pk.TopicName) {
			continue
		}
		if m == nil {
			mm := messageOf(*pk)
			m = &mm
		}
		if err := t.fn(*m); err != nil {
			b.stats.TapRefusals.Add(1)
			return err
		}
	}
	return nil
}

// packetOf converts a bus message to an engine publish packet.
func packetOf(m bus.Message) packets.Packet {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: m.QoS, Retain: m.Retain},
		TopicName:   m.Topic,
		Payload:     m.Payload,
		PacketID:    uint16(m.QoS), // the engine wants an id on QoS>0; inline publishes are never acked
	}
	p := &pk.Properties
	if m.Expiry > 0 {
		p.MessageExpiryInterval = uint32(m.Expiry / time.Second)
	}
	p.ContentType = m.ContentType
	p.ResponseTopic = m.ResponseTopic
	p.CorrelationData = m.CorrelationData
	for _, u := range m.UserProperties {
		p.User = append(p.User, packets.UserProperty{Key: u.Key, Val: u.Value})
	}
	return pk
}

// messageOf converts an engine publish packet to a bus message.
func messageOf(pk packets.Packet) bus.Message {
	m := bus.Message{
		Topic:           pk.TopicName,
		Payload:         pk.Payload,
		QoS:             pk.FixedHeader.Qos,
		Retain:          pk.FixedHeader.Retain,
		Origin:          pk.Origin,
		ContentType:     pk.Properties.ContentType,
		ResponseTopic:   pk.Properties.ResponseTopic,
		CorrelationData: pk.Properties.CorrelationData,
	}
	if pk.Created > 0 {
		m.Time = time.Unix(pk.Created, 0)
	} else {
		m.Time = time.Now()
	}
	if pk.Properties.MessageExpiryInterval > 0 {
		m.Expiry = time.Duration(pk.Properties.MessageExpiryInterval) * time.Second
	}
	for _, u := range pk.Properties.User {
		m.UserProperties = append(m.UserProperties, bus.UserProperty{Key: u.Key, Value: u.Val})
	}
	return m
}

var _ bus.Bus = (*Broker)(nil)

// ClientInfo describes a connected client.
type ClientInfo struct {
	ID              string
	Username        string
	Listener        string // tcp, tls, ws, wss, quic, or a gateway's (mqttsn, coap)
	Remote          string
	ProtocolVersion byte
}

// Banned reports whether remote's address is on the broker's banned list
// (config and live). Protocol gateways ask it for traffic that has no
// session of its own, such as MQTT-SN QoS -1 publishes.
func (b *Broker) Banned(remote net.Addr) bool {
	ip := remoteIP(remote)
	return ip != nil && b.rt.Load().bannedIP(ip)
}

// Clients lists the connected clients (not the offline persistent
// sessions), sorted by id.
func (b *Broker) Clients() []ClientInfo {
	var out []ClientInfo
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() {
			continue
		}
		out = append(out, ClientInfo{
			ID:              cl.ID,
			Username:        string(cl.Properties.Username),
			Listener:        cl.Net.Listener,
			Remote:          cl.Net.Remote,
			ProtocolVersion: cl.Properties.ProtocolVersion,
		})
	}
	slices.SortFunc(out, func(a, c ClientInfo) int { return strings.Compare(a.ID, c.ID) })
	return out
}

// DisconnectClient disconnects a connected client (an MQTT 5 client gets
// DISCONNECT 0x98, administrative action). Its session stays if it is
// persistent.
func (b *Broker) DisconnectClient(id string) error {
	cl, ok := b.srv.Clients.Get(id)
	if !ok || cl.Net.Inline || cl.Closed() {
		return fmt.Errorf("mqtt: disconnect %s: not connected", id)
	}
	return b.srv.DisconnectClient(cl, packets.ErrAdministrativeAction)
}
