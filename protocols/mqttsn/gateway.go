// Package mqttsn is fieldgate's MQTT-SN v1.2 gateway: sensors speak MQTT-SN
// over UDP, and the gateway makes each of them a session of the local broker
// (protocols/mqtt), so that authentication, the ACL, wills, retained
// messages, persistent sessions and limits hold for them exactly as for MQTT
// clients.
//
// packet.go is the pure codec; gateway.go owns the UDP socket, routes
// datagrams to devices and answers what needs no device (SEARCHGW, QoS -1);
// client.go is the state machine of one device, run by one goroutine that
// owns all of its state; forwarder.go lets devices on a radio network reach
// the gateway through a forwarder (Encapsulated Message, spec section 5.5),
// each node its own session.
package mqttsn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/membudget"
	"github.com/fieldgate/fieldgate/internal/ratelog"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// listenerName is the sessions' origin in the broker's logs and $SYS.
const listenerName = "mqttsn"

// qosMinusOneClientID is the broker session QoS -1 publishes go through.
const qosMinusOneClientID = "mqttsn-qos-1"

// brokerTimeout bounds a broker PUBLISH, SUBSCRIBE or UNSUBSCRIBE made
// for a device, so that a broker that never answers cannot hold the device's
// goroutine (and with it its keep-alive watch) forever.
const brokerTimeout = 10 * time.Second

// sessionCost is what one device is reckoned to hold, reserved from the
// memory budget (account "mqttsn_sessions") from its CONNECT until it is
// forgotten: the device's state and goroutine here, and its broker session
// (pipe, engine client, reader and writer goroutines with their stacks).
// Measured by TestConnectFlood (heap and stacks per session after GC).
const sessionCost = 48 << 10

// budgetAccount is the memory budget account of the devices' sessions.
const budgetAccount = "mqttsn_sessions"

// udpReadBuffer is the socket receive buffer asked for.
const udpReadBuffer = 4 << 20

// inboxLimit is how many decoded datagrams may wait for one device's
// goroutine; more are dropped (DropOverload). The queue grows only with a
// burst, so an idle device costs nothing for it.
const inboxLimit = 64

// Gateway is a running MQTT-SN gateway.
type Gateway struct {
	cfg    Config
	broker *mqtt.Broker
	log    *slog.Logger
	conn   *net.UDPConn
	advTo  netip.AddrPort

	predefByID   map[uint16]string
	predefByName map[string]uint16
	allowAll     bool

	stats   counters
	logDrop *ratelog.Logger // drops: 3 lines, then one per 10 s, per cause
	logMisc *ratelog.Logger // the rest: 5, then one per 10 s, per message

	minusOne chan bus.Message // QoS -1 publishes for runMinusOne

	budget *membudget.Account // the devices' sessions; nil: unlimited

	mu       sync.Mutex
	byAddr   map[peer]*client
	byID     map[string]*client
	admitted int                // devices admitted and not yet forgotten
	perIP    map[netip.Addr]int // admitted devices by IP address
	clients  sync.WaitGroup
}

// Option changes how New builds a Gateway.
type Option func(*Gateway)

// WithBudget makes every device's session count against the memory
// budget b (account "mqttsn_sessions"): a CONNECT that would exceed it is
// refused with CONNACK 0x01. A nil b is unlimited.
func WithBudget(b *membudget.Budget) Option {
	return func(g *Gateway) { g.budget = b.Account(budgetAccount) }
}

// counters are the gateway's statistics.
type counters struct {
	connected, asleep         atomic.Int64
	datagramsIn, datagramsOut atomic.Int64
	publishesIn, publishesOut atomic.Int64
	retransmissions, lost     atomic.Int64
	encapsulated              atomic.Int64
	drops                     map[string]*atomic.Int64 // fixed after New
}

// Stats is a snapshot of the gateway's counters.
type Stats struct {
	// ClientsConnected counts devices with a broker session, asleep or not.
	ClientsConnected int64
	// ClientsAsleep counts devices asleep (DISCONNECT with a duration).
	ClientsAsleep int64
	// DatagramsIn and DatagramsOut count UDP datagrams.
	DatagramsIn, DatagramsOut int64
	// Encapsulated counts datagrams in that came through a forwarder
	// (Encapsulated Message, spec section 5.5).
	Encapsulated int64
	// PublishesIn counts device publishes passed to the broker (QoS -1
	// included); PublishesOut counts PUBLISH messages sent to devices
	// (retransmissions excluded).
	PublishesIn, PublishesOut int64
	// Retransmissions counts PUBLISH, PUBREL and REGISTER sent again.
	Retransmissions int64
	// LostClients counts devices lost: silent past 1.5 × their keep alive,
	// asleep past 1.5 × their sleep duration, or not acknowledging after the
	// retries. Their wills are published.
	LostClients int64
	// Drops counts dropped datagrams and deliveries by cause (the Drop*
	// constants).
	Drops map[string]int64
}

var dropCauses = []string{
	DropShort, DropLength, DropUnknownType, DropMalformed, DropNotConnected,
	DropUnexpected, DropOverload, DropBuffer, DropInvalidTopic, DropBanned,
	DropSessionLimit,
}

// DropSessionLimit counts CONNECTs refused with CONNACK 0x01 (rejected:
// congestion) because max_clients, max_clients_per_address or the memory
// budget was reached.
const DropSessionLimit = "session_limit"

// DropInvalidTopic counts publishes to a topic id the device never
// registered (answered with PUBACK 0x02).
const DropInvalidTopic = "invalid_topic"

// DropBanned counts QoS -1 publishes from an address on the broker's
// banned list (a connecting device is refused by the broker itself).
const DropBanned = "banned"

// New checks cfg and binds the UDP socket, so a busy port is an error here
// and not later. Run serves it. logger may be nil.
func New(cfg Config, broker *mqtt.Broker, logger *slog.Logger, opts ...Option) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mqttsn: config: %w", err)
	}
	if broker == nil {
		return nil, errors.New("mqttsn: no broker")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{
		cfg:          cfg,
		broker:       broker,
		log:          logger.With("part", "mqttsn"),
		predefByID:   make(map[uint16]string, len(cfg.PredefinedTopics)),
		predefByName: make(map[string]uint16, len(cfg.PredefinedTopics)),
		allowAll:     len(cfg.Clients.Allow) == 0,
		minusOne:     make(chan bus.Message, 256),
		byAddr:       make(map[peer]*client),
		byID:         make(map[string]*client),
		perIP:        make(map[netip.Addr]int),
	}
	for _, o := range opts {
		o(g)
	}
	g.logDrop = ratelog.New(g.log, ratelog.Config{Every: 10 * time.Second, Burst: 3})
	g.logMisc = ratelog.New(g.log, ratelog.Config{Every: 10 * time.Second, Burst: 5})
	g.stats.drops = make(map[string]*atomic.Int64, len(dropCauses))
	for _, c := range dropCauses {
		g.stats.drops[c] = new(atomic.Int64)
	}
	for _, t := range cfg.PredefinedTopics {
		g.predefByID[uint16(t.ID)] = t.Topic
		g.predefByName[t.Topic] = uint16(t.ID)
	}
	if cfg.AdvertiseInterval > 0 {
		ua, err := net.ResolveUDPAddr("udp", cfg.AdvertiseAddress)
		if err != nil {
			return nil, fmt.Errorf("mqttsn: advertise_address %s: %w", cfg.AdvertiseAddress, err)
		}
		g.advTo = ua.AddrPort()
	}
	// SO_BROADCAST: without it the kernel refuses ADVERTISE and GWINFO to
	// a broadcast address (EACCES).
	lc := net.ListenConfig{Control: allowBroadcast}
	pc, err := lc.ListenPacket(context.Background(), "udp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("mqttsn: listen %s: %w", cfg.Address, err)
	}
	g.conn = pc.(*net.UDPConn)
	// Best effort: room for bursts of datagrams (the kernel caps it at
	// net.core.rmem_max).
	_ = g.conn.SetReadBuffer(udpReadBuffer)
	return g, nil
}

// Addr is the bound UDP address.
func (g *Gateway) Addr() net.Addr { return g.conn.LocalAddr() }

// Stats returns a snapshot of the counters.
func (g *Gateway) Stats() Stats {
	s := Stats{
		ClientsConnected: g.stats.connected.Load(),
		ClientsAsleep:    g.stats.asleep.Load(),
		DatagramsIn:      g.stats.datagramsIn.Load(),
		DatagramsOut:     g.stats.datagramsOut.Load(),
		Encapsulated:     g.stats.encapsulated.Load(),
		PublishesIn:      g.stats.publishesIn.Load(),
		PublishesOut:     g.stats.publishesOut.Load(),
		Retransmissions:  g.stats.retransmissions.Load(),
		LostClients:      g.stats.lost.Load(),
		Drops:            make(map[string]int64, len(g.stats.drops)),
	}
	for k, v := range g.stats.drops {
		s.Drops[k] = v.Load()
	}
	return s
}

// Run serves devices until ctx is done. Then it disconnects every device's
// broker session cleanly (wills discarded: the gateway stopping is not the
// device's fault; persistent sessions stay in the broker), closes the socket
// and returns.
func (g *Gateway) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		_ = g.conn.Close() // unblocks the read loop
	}()
	go func() { defer wg.Done(); g.runMinusOne(ctx) }()
	if g.cfg.AdvertiseInterval > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); g.advertise(ctx) }()
	}
	g.log.Info("MQTT-SN gateway listening", "address", g.conn.LocalAddr().String(), "gateway_id", g.cfg.GatewayID)
	err := g.readLoop(ctx)
	cancel()
	g.clients.Wait()
	wg.Wait()
	return err
}

func (g *Gateway) readLoop(ctx context.Context) error {
	buf := make([]byte, maxMessageLength+1)
	for {
		n, from, err := g.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("mqttsn: read %s: %w", g.conn.LocalAddr(), err)
		}
		g.stats.datagramsIn.Add(1)
		src := peer{addr: netip.AddrPortFrom(from.Addr().Unmap(), from.Port())}
		msg := buf[:n]
		enc, inner, wrapped, err := Unwrap(msg)
		if err != nil {
			g.drop(CauseOf(err), src, err)
			continue
		}
		if wrapped {
			g.stats.encapsulated.Add(1)
			src.node, msg = string(enc.NodeID), inner
		}
		p, err := Decode(msg)
		if err != nil {
			g.drop(CauseOf(err), src, err)
			continue
		}
		g.dispatch(ctx, src, p)
	}
}

// dispatch answers what needs no device and hands the rest to the device's
// goroutine, starting one on CONNECT.
func (g *Gateway) dispatch(ctx context.Context, from peer, p Packet) {
	switch {
	case p.Type == TypeSearchGW:
		// Answered to the asker, and, as the spec wants GWINFO broadcast,
		// to the advertise address too when advertising is on: other
		// devices searching at the same time learn of the gateway.
		gw := Packet{Type: TypeGWInfo, GatewayID: byte(g.cfg.GatewayID)}
		g.send(from, gw)
		if g.advTo.IsValid() && from.node == "" && g.advTo != from.addr {
			g.send(peer{addr: g.advTo}, gw)
		}
		return
	case p.Type == TypeAdvertise || p.Type == TypeGWInfo:
		g.drop(DropUnexpected, from, fmt.Errorf("%s from another gateway ignored", p.Type))
		return
	case p.Type == TypePublish && p.Flags.QoS == -1:
		g.publishMinusOne(from, p)
		return
	}
	g.mu.Lock()
	c := g.byAddr[from]
	if c == nil && p.Type == TypePingreq && p.ClientID != "" {
		// A sleeping device may wake up from a new address.
		if s := g.byID[p.ClientID]; s != nil && s.asleep.Load() {
			c = s
		}
	}
	if c == nil && p.Type == TypeConnect {
		c = newClient(g, from)
		if err := g.admitLocked(c); err != nil {
			g.mu.Unlock()
			g.drop(DropSessionLimit, from, err)
			g.send(from, Packet{Type: TypeConnack, ReturnCode: RejectedCongestion})
			return
		}
		g.byAddr[from] = c
		g.clients.Add(1)
		go func() { defer g.clients.Done(); c.run(ctx) }()
	}
	if c != nil {
		// Posting under g.mu: once a client is removed (under g.mu too),
		// nothing more reaches its inbox, so it can hand back what is there.
		ok := c.inbox.post(inbound{p: p, from: from})
		g.mu.Unlock()
		if !ok {
			g.drop(DropOverload, from, fmt.Errorf("%s: the device's queue of %d is full", p.Type, inboxLimit))
		}
		return
	}
	g.mu.Unlock()
	g.drop(DropNotConnected, from, fmt.Errorf("%s from a device that is not connected", p.Type))
	if p.Type != TypeDisconnect {
		// Tell the device to connect again (never answer a DISCONNECT with
		// one: two gateways could play ping-pong).
		g.send(from, Packet{Type: TypeDisconnect})
	}
}

// admitLocked counts a new device against max_clients,
// max_clients_per_address and the memory budget, or says which one it would
// exceed. g.mu is held; release undoes it.
func (g *Gateway) admitLocked(c *client) error {
	ip := c.addr.addr.Addr()
	switch {
	case g.admitted >= g.cfg.MaxClients:
		return fmt.Errorf("CONNECT refused: max_clients (%d) reached", g.cfg.MaxClients)
	case g.cfg.MaxClientsPerAddress > 0 && g.perIP[ip] >= g.cfg.MaxClientsPerAddress:
		return fmt.Errorf("CONNECT refused: max_clients_per_address (%d) reached for %s", g.cfg.MaxClientsPerAddress, ip)
	case !g.budget.Reserve(sessionCost):
		return errors.New("CONNECT refused: memory budget exhausted")
	}
	g.admitted++
	g.perIP[ip]++
	c.admittedIP, c.admitted = ip, true
	return nil
}

// release gives back what admitLocked took for c (once).
func (g *Gateway) release(c *client) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !c.admitted {
		return
	}
	c.admitted = false
	g.admitted--
	g.uncountIPLocked(c.admittedIP)
	g.budget.Release(sessionCost)
}

func (g *Gateway) uncountIPLocked(ip netip.Addr) {
	if g.perIP[ip]--; g.perIP[ip] <= 0 {
		delete(g.perIP, ip)
	}
}

// send encodes p and writes it to the device, through its forwarder if it
// has one.
func (g *Gateway) send(to peer, p Packet) {
	var b []byte
	if to.node != "" {
		b, _ = Wrap(make([]byte, 0, 24+len(to.node)+len(p.Data)+len(p.TopicName)), Encapsulation{NodeID: []byte(to.node)}, nil)
	}
	b, err := Encode(b, p)
	if err != nil {
		g.logMisc.Warn("", "cannot encode a message", "remote", to.String(), "error", err)
		return
	}
	if _, err := g.conn.WriteToUDPAddrPort(b, to.addr); err != nil {
		if !errors.Is(err, net.ErrClosed) {
			g.logMisc.Warn("", "send failed", "remote", to.String(), "type", p.Type.String(), "error", err)
		}
		return
	}
	g.stats.datagramsOut.Add(1)
}

// drop counts a dropped datagram or delivery and logs it, rate-limited per
// cause.
func (g *Gateway) drop(cause string, from peer, err error) {
	n := g.stats.drops[cause].Add(1)
	g.logDrop.Warn(cause, "dropped", "cause", cause, "remote", from.String(), "error", err, "dropped_total", n)
}

// warn logs a warning about one device, rate-limited over all devices.
func (g *Gateway) warn(msg string, args ...any) {
	g.logMisc.Warn("", msg, args...)
}

// claim makes c the owner of client id; a device that owned it from another
// address is taken over (the broker ends its session).
func (g *Gateway) claim(c *client, id string) {
	g.mu.Lock()
	g.byID[id] = c
	g.mu.Unlock()
}

// owns reports whether c still owns its client id.
func (g *Gateway) owns(c *client, id string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.byID[id] == c
}

// move records that c now speaks from addr.
func (g *Gateway) move(c *client, from, to peer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.byAddr[from] == c {
		delete(g.byAddr, from)
	}
	if old := g.byAddr[to]; old != nil && old != c {
		// The old device at that address gets nothing more; it ends when
		// its session does.
		delete(g.byAddr, to)
	}
	g.byAddr[to] = c
	// The device now counts against its new address (not refused there:
	// it is not a new session).
	if ip := to.addr.Addr(); c.admitted && ip != c.admittedIP {
		g.uncountIPLocked(c.admittedIP)
		g.perIP[ip]++
		c.admittedIP = ip
	}
}

// remove forgets c.
func (g *Gateway) remove(c *client, addr peer, id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.byAddr[addr] == c {
		delete(g.byAddr, addr)
	}
	if id != "" && g.byID[id] == c {
		delete(g.byID, id)
	}
}

// keepAlive is the keep alive a device that asked for secs seconds is held
// to: max_keepalive when it asked for none (0) or more, unless that is off.
func (g *Gateway) keepAlive(secs uint16) time.Duration {
	ka, limit := time.Duration(secs)*time.Second, g.cfg.MaxKeepAlive
	if limit > 0 && (ka == 0 || ka > limit) {
		return limit
	}
	return ka
}

// allowed reports whether a client id may connect, and its broker username.
func (g *Gateway) allowed(id string) (username string, ok bool) {
	ok = g.allowAll
	for _, p := range g.cfg.Clients.Allow {
		if matchPattern(p, id) {
			ok = true
			break
		}
	}
	for _, u := range g.cfg.Clients.Usernames {
		if matchPattern(u.ClientID, id) {
			return u.Username, ok
		}
	}
	return "", ok
}

// publishMinusOne queues a QoS -1 publish for runMinusOne.
func (g *Gateway) publishMinusOne(from peer, p Packet) {
	if !g.cfg.QoSMinusOne.Enabled {
		g.drop(DropNotConnected, from, errors.New("QoS -1 publish: qos_minus_one is disabled"))
		return
	}
	if g.broker.Banned(net.UDPAddrFromAddrPort(from.addr)) {
		g.drop(DropBanned, from, errors.New("QoS -1 publish from a banned address"))
		return
	}
	var topic string
	switch p.Flags.TopicIDType {
	case TopicPredefined:
		topic = g.predefByID[p.TopicID]
	case TopicShort:
		topic = ShortTopic(p.TopicID)
		if topicNameProblem(topic) != "" {
			topic = ""
		}
	}
	if topic == "" {
		g.drop(DropInvalidTopic, from, fmt.Errorf("QoS -1 publish to topic id %d of type %d", p.TopicID, p.Flags.TopicIDType))
		return
	}
	select {
	case g.minusOne <- bus.Message{Topic: topic, Payload: p.Data, Retain: p.Flags.Retain}:
	default:
		g.drop(DropOverload, from, errors.New("QoS -1 publish: queue full"))
	}
}

// runMinusOne publishes QoS -1 messages through one broker session,
// connected when the first one comes and again after it ends.
func (g *Gateway) runMinusOne(ctx context.Context) {
	var sess *mqtt.Session
	defer func() {
		if sess != nil {
			_ = sess.Disconnect(false)
		}
	}()
	for {
		var m bus.Message
		select {
		case <-ctx.Done():
			return
		case m = <-g.minusOne:
		}
		if sess != nil {
			select {
			case <-sess.Done():
				sess = nil
			default:
			}
		}
		if sess == nil {
			user := g.cfg.QoSMinusOne.Username
			cctx, cancel := context.WithTimeout(ctx, g.cfg.ConnectTimeout)
			s, err := g.broker.Connect(cctx, mqtt.SessionOptions{
				Listener:   listenerName,
				Remote:     g.conn.LocalAddr(),
				ClientID:   qosMinusOneClientID,
				Username:   user,
				Trusted:    user != "",
				CleanStart: true,
			})
			cancel()
			if err != nil {
				g.logMisc.Warn("", "QoS -1 session refused by the broker", "error", err)
				continue
			}
			sess = s
		}
		pctx, cancel := context.WithTimeout(ctx, brokerTimeout)
		err := sess.Publish(pctx, m)
		cancel()
		if err != nil {
			g.logMisc.Warn("", "QoS -1 publish failed", "topic", m.Topic, "error", err)
			continue
		}
		g.stats.publishesIn.Add(1)
	}
}

// advertise broadcasts ADVERTISE every AdvertiseInterval.
func (g *Gateway) advertise(ctx context.Context) {
	p := Packet{Type: TypeAdvertise, GatewayID: byte(g.cfg.GatewayID), Duration: uint16(g.cfg.AdvertiseInterval / time.Second)}
	t := time.NewTicker(g.cfg.AdvertiseInterval)
	defer t.Stop()
	for {
		g.send(peer{addr: g.advTo}, p)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// returnCodeOf maps a broker refusal to an MQTT-SN return code.
func returnCodeOf(err error) ReturnCode {
	switch bus.RefusalOf(err).Code {
	case 0x80, 0x88, 0x89, 0x93, 0x96, 0x97, 0x9F: // unspecified, unavailable, busy, receive max, rate, quota, connect rate
		return RejectedCongestion
	case 0x8F, 0x90: // topic filter / topic name invalid
		return RejectedInvalidTopic
	default: // not authorized, bad credentials, banned, client id not valid ...
		return RejectedNotSupported
	}
}
