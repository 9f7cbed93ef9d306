// Package uplink is the store-and-forward bridge to the cloud. Forward rules
// tap local publishes into the durable outbox before their publisher is
// acknowledged; the drain loop sends the outbox in order to a cloud broker
// over MQTT over QUIC (or TLS, or TCP), with a bounded window of QoS 1
// publishes in flight, and deletes each message only on its PUBACK.
// Downlink rules bring cloud messages into the local broker. See
// docs/uplink.md.
package uplink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/ratelog"
)

// Origin marks messages the bridge publishes locally (downlink). Forward
// rules never send them back up.
const Origin = "$uplink"

// ErrOutboxFull is what an Outbox returns when it refuses a message under
// the refuse_new policy.
var ErrOutboxFull = errors.New("outbox full")

// Outbox is the durable FIFO the bridge keeps messages in until the cloud
// has acknowledged them. The gateway adapts store.Outbox to it.
type Outbox interface {
	// Append stores data durably (fsynced) before it returns.
	Append(ctx context.Context, data []byte, expiry time.Time) (seq uint64, err error)
	// AppendAsync queues data for the next group commit (best effort).
	AppendAsync(data []byte, expiry time.Time) error
	// Read returns up to max entries with Seq > after, in order.
	Read(after uint64, max int) ([]Entry, error)
	// Wait blocks until an entry with Seq > after exists or ctx is done.
	Wait(ctx context.Context, after uint64) error
	// Ack deletes acknowledged entries.
	Ack(seqs ...uint64) error
}

// Entry is one queued message.
type Entry struct {
	Seq      uint64
	Data     []byte
	Appended time.Time
}

// Options are the bridge's collaborators.
type Options struct {
	// Bus is the local broker: forward rules tap it, downlink publishes into it.
	Bus    bus.Bus
	Outbox Outbox
	// GatewayID fills {gateway_id} and is the default client id.
	GatewayID string
	Logger    *slog.Logger
	// Now is the clock (tests inject one); nil means time.Now.
	Now func() time.Time
}

// Bridge is the uplink. New installs its taps at once, so that nothing a
// rule selects escapes the outbox; Run connects and drains.
type Bridge struct {
	cfg  Config
	opts Options
	log  *slog.Logger
	// logSome limits the lines a flood of failing appends can write (a
	// full disk refuses every publish): one a minute, with the count of
	// those held back.
	logSome *ratelog.Logger
	now     func() time.Time
	dialer  *dialer
	minClk  time.Time
	untap   []func()

	stats    counters
	failures atomic.Int64 // failed connection attempts and lost connections
	stateMu  sync.Mutex
	state    Status
	progress atomic.Int64 // Unix nanoseconds of the last state change or acknowledgement
}

// counters are the bridge's atomic statistics.
type counters struct {
	forwarded   atomic.Int64 // acknowledged by the cloud
	downlinked  atomic.Int64
	refused     atomic.Int64 // QoS 1/2 publishes refused (outbox full or failing)
	qos0Dropped atomic.Int64 // QoS 0 messages the outbox could not take
	reconnects  atomic.Int64
	badRecords  atomic.Int64
}

// New builds the bridge and installs the forward taps on the bus. With the
// uplink disabled it returns a bridge that does nothing.
func New(cfg Config, opts Options) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("uplink: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	if cfg.ClientID == "" {
		cfg.ClientID = opts.GatewayID
	}
	minClk, _ := time.Parse(time.RFC3339, cfg.MinClock)
	b := &Bridge{cfg: cfg, opts: opts, log: log.With("part", "uplink"), now: now, minClk: minClk}
	b.logSome = ratelog.New(b.log, ratelog.Config{Every: time.Minute, Burst: 1, Now: now})
	b.state.State = "disabled"
	if !cfg.Enabled {
		return b, nil
	}
	if opts.Bus == nil || opts.Outbox == nil {
		return nil, errors.New("uplink: a bus and an outbox are required")
	}
	d, err := newDialer(cfg)
	if err != nil {
		return nil, err
	}
	b.dialer = d
	b.state.State = "starting"
	for _, r := range cfg.Forward {
		untap, err := opts.Bus.Tap(r.Filter, b.forwardTap(r))
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("uplink: forward %s: %w", r.Filter, err)
		}
		b.untap = append(b.untap, untap)
	}
	return b, nil
}

// Close removes the taps. Call it after the broker has stopped taking
// publishes and before the outbox closes.
func (b *Bridge) Close() {
	for _, u := range b.untap {
		u()
	}
	b.untap = nil
}

// forwardTap makes a local publish matching r durable in the outbox: QoS
// 1/2 before the publisher is acknowledged (a failure refuses the publish
// with 0x97), QoS 0 queued without waiting.
func (b *Bridge) forwardTap(r ForwardRule) bus.TapFunc {
	return func(m bus.Message) error {
		if m.Origin == Origin {
			return nil // came down from the cloud: never back up
		}
		rec := record{
			Topic:   expand(r.RemoteTopic, b.opts.GatewayID, r.Filter, m.Topic),
			Payload: m.Payload,
			QoS:     min(m.QoS, byte(r.QoS)),
			Retain:  m.Retain,
		}
		var expiry time.Time
		if m.Expiry > 0 {
			expiry = b.now().Add(m.Expiry)
		}
		data := rec.encode()
		if m.QoS == 0 {
			if err := b.opts.Outbox.AppendAsync(data, expiry); err != nil {
				b.stats.qos0Dropped.Add(1)
			}
			return nil
		}
		if _, err := b.opts.Outbox.Append(context.Background(), data, expiry); err != nil {
			b.stats.refused.Add(1)
			if errors.Is(err, ErrOutboxFull) {
				return &bus.Refusal{Code: bus.ErrQuotaExceeded.Code, Reason: "outbox full"}
			}
			b.logSome.Error("", "outbox append failed", "topic", m.Topic, "error", err)
			return &bus.Refusal{Code: bus.ErrUnavailable.Code, Reason: "outbox unavailable"}
		}
		return nil
	}
}

// Run connects to the cloud and drains the outbox until ctx is done,
// reconnecting with backoff. It returns nil when ctx ends.
func (b *Bridge) Run(ctx context.Context) error {
	if !b.cfg.Enabled {
		<-ctx.Done()
		return nil
	}
	if !b.waitClock(ctx) {
		return nil
	}
	var (
		backoff      = b.cfg.BackoffMin
		server       = 0
		quicFailures = 0
		// probe is false right after an attempt that a successful path
		// probe triggered failed: a cloud whose port accepts connections
		// while its broker is not ready must not be hammered every
		// path_probe, so the next wait is the plain backoff.
		probe = true
	)
	for ctx.Err() == nil {
		s := b.cfg.Servers[server]
		transport := b.pickTransport(s, quicFailures)
		b.setState(func(st *Status) {
			st.State, st.Transport, st.Server = "connecting", transport, s.Host
		})
		if b.cfg.TLS.InsecureSkipVerify && transport != TransportTCP {
			b.log.Warn("uplink TLS certificate verification is OFF (insecure_skip_verify): anyone on the path can read and change the traffic", "server", s.Host)
		}
		pool, lost, err := b.connectPool(ctx, transport, s)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if transport == TransportQUIC {
				quicFailures++
			}
			b.failed(s, transport, err, backoff)
			next, back, ok := b.waitRetry(ctx, backoff, probe)
			if !ok {
				break
			}
			backoff = min(2*backoff, b.cfg.BackoffMax)
			server, probe = (server+1)%len(b.cfg.Servers), !back
			if back {
				server = next
			}
			continue
		}
		if transport == TransportQUIC {
			quicFailures = 0
		}
		backoff, probe = b.cfg.BackoffMin, true
		b.log.Info("uplink connected", "server", s.Host, "transport", transport)
		b.setState(func(st *Status) {
			st.State, st.Connected, st.Since, st.LastError = "connected", true, b.now(), ""
		})
		why := b.serve(ctx, pool, lost, s, transport)
		for _, cl := range pool {
			cl.Disconnect(250)
		}
		b.setState(func(st *Status) { st.Connected = false })
		if ctx.Err() != nil {
			break
		}
		b.stats.reconnects.Add(1)
		if errors.Is(why, errQUICBack) {
			quicFailures = 0
			b.log.Info("QUIC works again: reconnecting over QUIC", "server", s.Host)
			continue
		}
		b.failed(s, transport, why, backoff)
		if _, _, ok := b.waitRetry(ctx, backoff, true); !ok {
			break
		}
	}
	b.setState(func(st *Status) { st.State, st.Connected = "stopped", false })
	return nil
}

// errQUICBack ends a TLS session in auto mode when a QUIC probe succeeded.
var errQUICBack = errors.New("QUIC reachable again")

// pickTransport chooses the transport for the next attempt.
func (b *Bridge) pickTransport(s Server, quicFailures int) string {
	switch b.cfg.Transport {
	case "auto":
		if s.QUICPort > 0 && (quicFailures < b.cfg.QUICFailures || s.TLSPort == 0) {
			return TransportQUIC
		}
		return TransportTLS
	default:
		return b.cfg.Transport
	}
}

func (b *Bridge) failed(s Server, transport string, err error, backoff time.Duration) {
	b.failures.Add(1)
	b.log.Warn("uplink connection failed", "server", s.Host, "transport", transport, "error", err, "retry_in", backoff)
	b.setState(func(st *Status) {
		st.State, st.Connected = "backoff", false
		st.LastError, st.LastErrorAt = fmt.Sprintf("%s over %s: %v", s.Host, transport, err), b.now()
	})
}

// waitClock holds the uplink until the wall clock is plausible (after
// min_clock): TLS cannot check certificates against a clock in 1970.
// Messages keep queueing meanwhile.
func (b *Bridge) waitClock(ctx context.Context) bool {
	for b.now().Before(b.minClk) {
		b.setState(func(st *Status) { st.State = "waiting for the clock" })
		b.log.Warn("uplink waits for a plausible clock before connecting", "now", b.now(), "min_clock", b.minClk)
		if !sleep(ctx, 5*time.Second) {
			return false
		}
	}
	return true
}

// connectPool opens the configured number of connections to s (the first
// one carries the downlink subscriptions). It returns them and a channel
// that receives the reason when any of them is lost; on a failure none is
// left open.
func (b *Bridge) connectPool(ctx context.Context, transport string, s Server) ([]paho.Client, <-chan error, error) {
	lost := make(chan error, 1)
	pool := make([]paho.Client, 0, b.cfg.Connections)
	for i := range b.cfg.Connections {
		id := b.cfg.ClientID
		if i > 0 {
			id = fmt.Sprintf("%s-%d", id, i)
		}
		cl, err := b.connect(ctx, transport, s, id, lost, i == 0)
		if err != nil {
			for _, c := range pool {
				c.Disconnect(0)
			}
			return nil, nil, err
		}
		pool = append(pool, cl)
	}
	return pool, lost, nil
}

// connect makes one connection attempt as client id; lost receives the
// reason the connection is lost.
func (b *Bridge) connect(ctx context.Context, transport string, s Server, id string, lost chan error, downlink bool) (paho.Client, error) {
	o := paho.NewClientOptions()
	o.AddBroker("tcp://" + net.JoinHostPort(s.Host, "0")) // the dialer below decides
	o.SetClientID(id)
	o.SetUsername(b.cfg.Username)
	o.SetPassword(b.cfg.Password.Reveal())
	o.SetCleanSession(b.cfg.CleanSession)
	o.SetKeepAlive(b.cfg.KeepAlive)
	o.SetPingTimeout(max(b.cfg.ConnectTimeout, 5*time.Second))
	o.SetConnectTimeout(b.cfg.ConnectTimeout)
	o.SetWriteTimeout(b.cfg.ConnectTimeout + b.cfg.KeepAlive)
	o.SetAutoReconnect(false)
	o.SetConnectRetry(false)
	o.SetResumeSubs(false)
	o.SetProtocolVersion(4)
	o.SetStore(noStore{}) // the outbox is the store; paho's would duplicate it
	o.SetOrderMatters(true)
	o.SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, b.cfg.ConnectTimeout)
		defer cancel()
		c, err := b.dialer.dial(dctx, transport, s)
		if err != nil {
			return nil, &dialError{err}
		}
		return c, nil
	})
	o.SetConnectionLostHandler(func(_ paho.Client, err error) {
		select {
		case lost <- err:
		default:
		}
	})
	if downlink {
		o.SetOnConnectHandler(func(c paho.Client) { b.subscribeDownlink(c, lost) })
	}
	cl := paho.NewClient(o)
	tok := cl.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		cl.Disconnect(0)
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		cl.Disconnect(0)
		return nil, describeConnectError(err)
	}
	return cl, nil
}

// describeConnectError names a failed connection attempt in plain words.
func describeConnectError(err error) error {
	// paho joins transport errors to its "network Error"; the dialer's own
	// description is the useful part.
	if multi, ok := err.(interface{ Unwrap() []error }); ok && errors.Is(err, packets.ErrorNetworkError) {
		if errs := multi.Unwrap(); len(errs) == 2 {
			err = errs[1]
		}
	}
	var de *dialError
	switch {
	case errors.As(err, &de):
		return de.err // already described by the dialer
	case isTimeout(err):
		return fmt.Errorf("no answer to CONNECT (server silent or not MQTT?): %w", err)
	case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword), errors.Is(err, packets.ErrorRefusedNotAuthorised):
		return fmt.Errorf("bad credentials: %w", err)
	}
	return err
}

// subscribeDownlink subscribes to the downlink rules on every connect; a
// refused subscription ends the connection (and is retried with backoff).
func (b *Bridge) subscribeDownlink(c paho.Client, lost chan error) {
	for _, r := range b.cfg.Downlink {
		tok := c.Subscribe(r.Filter, byte(r.QoS), b.downlinkHandler(r))
		go func() {
			tok.Wait()
			if err := tok.Error(); err != nil {
				select {
				case lost <- fmt.Errorf("downlink subscribe %s: %w", r.Filter, err):
				default:
				}
			}
		}()
	}
}

// downlinkHandler publishes a cloud message locally. paho acknowledges it
// when this returns, so a QoS 1 command is in the local broker first.
func (b *Bridge) downlinkHandler(r DownlinkRule) paho.MessageHandler {
	return func(_ paho.Client, msg paho.Message) {
		local := expand(r.LocalTopic, b.opts.GatewayID, r.Filter, msg.Topic())
		err := b.opts.Bus.Publish(context.Background(), bus.Message{
			Topic:   local,
			Payload: msg.Payload(),
			QoS:     min(msg.Qos(), byte(r.QoS)),
			Retain:  msg.Retained(),
			Origin:  Origin,
		})
		if err != nil {
			b.log.Warn("downlink message not published locally", "topic", local, "error", err)
			return
		}
		b.stats.downlinked.Add(1)
	}
}

// inflight is a publish waiting for its acknowledgement.
type inflight struct {
	seq uint64
	tok paho.Token
}

// serve drains the outbox over the connected pool until a connection is
// lost or ctx ends. It resends from the oldest unacknowledged message.
// Messages are spread over the pool by topic, so each topic stays in order
// on one connection.
func (b *Bridge) serve(ctx context.Context, pool []paho.Client, lost <-chan error, s Server, transport string) error {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case err := <-lost:
			if err == nil {
				err = errors.New("connection lost")
			}
			cancel(err)
		case <-sctx.Done():
		}
	}()
	var probeWG sync.WaitGroup
	if b.cfg.Transport == "auto" && transport == TransportTLS && s.QUICPort > 0 {
		probeWG.Add(1)
		go func() { defer probeWG.Done(); b.probe(sctx, cancel, s) }()
	}
	defer probeWG.Wait()

	windows := make([]chan inflight, len(pool))
	var ackers sync.WaitGroup
	for i := range pool {
		windows[i] = make(chan inflight, b.cfg.Inflight)
		ackers.Go(func() { b.acker(sctx, cancel, windows[i]) })
	}
	var after uint64
	for sctx.Err() == nil {
		entries, err := b.opts.Outbox.Read(after, 512)
		if err != nil {
			cancel(fmt.Errorf("outbox read: %w", err))
			break
		}
		if len(entries) == 0 {
			if err := b.opts.Outbox.Wait(sctx, after); err != nil {
				break
			}
			continue
		}
		for _, e := range entries {
			after = e.Seq
			rec, err := decodeRecord(e.Data)
			if err != nil {
				b.stats.badRecords.Add(1)
				b.log.Error("outbox record skipped", "seq", e.Seq, "error", err)
				_ = b.opts.Outbox.Ack(e.Seq)
				continue
			}
			k := 0
			if len(pool) > 1 {
				k = int(shard(rec.Topic) % uint32(len(pool)))
			}
			tok := pool[k].Publish(rec.Topic, rec.QoS, rec.Retain, rec.Payload)
			select {
			case windows[k] <- inflight{seq: e.Seq, tok: tok}:
			case <-sctx.Done():
			}
			if sctx.Err() != nil {
				break
			}
		}
	}
	for _, w := range windows {
		close(w)
	}
	ackers.Wait()
	return context.Cause(sctx)
}

// shard hashes a topic (FNV-1a) to pick its connection.
func shard(topic string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(topic); i++ {
		h ^= uint32(topic[i])
		h *= 16777619
	}
	return h
}

// acker waits for each publish's acknowledgement, in order, and deletes the
// acknowledged messages from the outbox in batches. A failed publish ends
// the session: the connection is gone, and the next one resends from the
// oldest unacknowledged message.
func (b *Bridge) acker(ctx context.Context, cancel context.CancelCauseFunc, window <-chan inflight) {
	batch := make([]uint64, 0, 256)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if err := b.opts.Outbox.Ack(batch...); err != nil {
			b.log.Error("outbox ack failed", "error", err)
		}
		b.stats.forwarded.Add(int64(len(batch)))
		b.progress.Store(time.Now().UnixNano())
		batch = batch[:0]
	}
	defer flush()
	failed := false
	for {
		var p inflight
		var ok bool
		select {
		case p, ok = <-window:
		default:
			flush() // nothing more to look at yet: delete what is acknowledged
			p, ok = <-window
		}
		if !ok {
			return
		}
		if failed {
			continue // drain the window; these are resent after a reconnect
		}
		select {
		case <-p.tok.Done():
		default:
			flush() // about to block: delete what is acknowledged first
			select {
			case <-p.tok.Done():
			case <-ctx.Done():
				failed = true
				continue
			}
		}
		if err := p.tok.Error(); err != nil {
			failed = true
			cancel(fmt.Errorf("publish: %w", err))
			continue
		}
		batch = append(batch, p.seq)
		if len(batch) == cap(batch) {
			flush()
		}
	}
}

// probe checks every quic_probe whether QUIC works again while the bridge
// runs on its TLS fallback, and ends the session when it does.
func (b *Bridge) probe(ctx context.Context, cancel context.CancelCauseFunc, s Server) {
	t := time.NewTicker(b.cfg.QUICProbe)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := b.dialer.probeQUIC(ctx, s); err == nil {
			cancel(errQUICBack)
			return
		}
	}
}

// waitRetry waits out backoff (with jitter) before the next connection
// attempt. With probe set and a wait longer than path_probe, it checks
// every path_probe whether a server answers again; the first that does
// ends the wait early (back is true, next is its index). ok is false when
// ctx ended.
//
// Why a probe rather than a short backoff cap: a fleet of gateways that all
// lost the cloud at once would otherwise retry full TLS and MQTT handshakes
// every few seconds; a TCP connect that is closed at once costs the cloud
// a SYN and no TLS, and lets the full reconnect happen within about
// path_probe of the cloud coming back, whatever the outage length.
func (b *Bridge) waitRetry(ctx context.Context, backoff time.Duration, probe bool) (next int, back, ok bool) {
	wait := jitter(backoff, rand.Float64())
	every := b.cfg.PathProbe
	if !probe || every <= 0 || wait <= every {
		return 0, false, sleep(ctx, wait)
	}
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return 0, false, true
		}
		if !sleep(ctx, min(every, left)) {
			return 0, false, false
		}
		if time.Until(deadline) <= 0 {
			return 0, false, true
		}
		if i, up := b.reachable(ctx, every); up {
			b.log.Info("uplink server reachable again: reconnecting now", "server", b.cfg.Servers[i].Host)
			return i, true, true
		}
	}
}

// reachable reports whether any server accepts a connection now, trying
// each for at most timeout: a TCP connect to its TLS or TCP port (closed
// at once), or a QUIC handshake when it has only a QUIC port.
func (b *Bridge) reachable(ctx context.Context, timeout time.Duration) (int, bool) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for i, s := range b.cfg.Servers {
		port := s.TLSPort
		if b.cfg.Transport == TransportTCP || port == 0 {
			port = s.TCPPort
		}
		if port == 0 || b.cfg.Transport == TransportQUIC {
			if s.QUICPort > 0 && b.dialer.probeQUIC(ctx, s) == nil {
				return i, true
			}
			continue
		}
		var nd net.Dialer
		if c, err := nd.DialContext(ctx, "tcp", net.JoinHostPort(s.Host, strconv.Itoa(port))); err == nil {
			_ = c.Close()
			return i, true
		}
	}
	return 0, false
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// TestConnection tries cfg without applying it: for each server, each
// transport the config allows (auto: QUIC, then TLS), a dial, the TLS
// handshake and an MQTT CONNECT under the client id with "-test" appended
// (so the running bridge's session is not taken over). It returns nil at
// the first success, else every failure in plain words.
func TestConnection(ctx context.Context, cfg Config, gatewayID string) error {
	cfg.Enabled = true
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.ClientID == "" {
		cfg.ClientID = gatewayID
	}
	d, err := newDialer(cfg)
	if err != nil {
		return err
	}
	b := &Bridge{cfg: cfg, dialer: d, log: slog.New(slog.DiscardHandler), now: time.Now}
	b.logSome = ratelog.New(b.log, ratelog.Config{Every: time.Minute, Burst: 1})
	var errs []error
	for _, s := range cfg.Servers {
		transports := []string{cfg.Transport}
		if cfg.Transport == "auto" {
			transports = nil
			if s.QUICPort > 0 {
				transports = append(transports, TransportQUIC)
			}
			if s.TLSPort > 0 {
				transports = append(transports, TransportTLS)
			}
		}
		for _, tr := range transports {
			cl, err := b.connect(ctx, tr, s, cfg.ClientID+"-test", make(chan error, 1), false)
			if err == nil {
				cl.Disconnect(100)
				return nil
			}
			errs = append(errs, fmt.Errorf("%s over %s: %w", s.Host, tr, err))
		}
	}
	return errors.Join(errs...)
}
