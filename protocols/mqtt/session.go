package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fieldgate/fieldgate/bus"
)

// In-process sessions: how the protocol gateways (MQTT-SN, CoAP) make each of
// their devices a real broker session. A session is an MQTT 5 client talking
// to the engine over a net.Pipe handed to EstablishConnection, so the
// broker's authentication, ACL, wills, retained messages, persistent sessions,
// limits and taps apply to the device exactly as to an MQTT client, through
// the same code.

// SessionOptions describe a device that a protocol gateway connects as a
// broker session.
type SessionOptions struct {
	// Listener names the session's origin ("mqttsn", "coap") in logs and
	// $SYS; on shutdown the broker disconnects each listener's sessions.
	Listener string
	// Remote is the device's address: banned networks and the connection
	// rate apply to it, and failed logins are counted against it.
	Remote   net.Addr
	ClientID string
	Username string
	// Password is checked like an MQTT client's, unless Trusted.
	Password []byte
	// Trusted means the gateway vouches for Username (MQTT-SN has no
	// password): no password check; the ACL applies to Username.
	Trusted    bool
	CleanStart bool
	// SessionExpiry is how many seconds the session outlives its
	// connection (0: it ends with it).
	SessionExpiry uint32
	// KeepAlive in seconds; 0 means the gateway watches the device itself
	// (the broker's max_keepalive is not imposed on in-process sessions).
	KeepAlive uint16
	// ReceiveMaximum bounds the QoS 1/2 deliveries in flight to the session
	// (0 means 16); the rest wait in the broker's session queue.
	ReceiveMaximum uint16
	// Will is published when the session ends without a clean disconnect.
	Will *Will
	// SourceVerified says the transport proved that the device receives at
	// Remote (a completed DTLS handshake). Without it Remote is taken as
	// forgeable (plain UDP): its failed logins only throttle plain-UDP
	// logins from that address and never block TCP, TLS, WebSocket, QUIC
	// or DTLS clients.
	SourceVerified bool
	// OnMessage receives every delivery, in order, in the session's reader
	// goroutine. It must not block for long and must not call the same
	// session's Publish, Subscribe or Unsubscribe (hand off to a goroutine of
	// your own for that). Ack may be called from anywhere.
	OnMessage func(Delivery)
}

// Will is a session's last will.
type Will struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// Delay in seconds before the will is published (MQTT 5 will delay).
	Delay uint32
}

// Delivery is a message the broker delivers to a session.
type Delivery struct {
	bus.Message
	// Dup is set when the broker sends the message again (after a
	// reconnect of a persistent session).
	Dup bool
	ack func()
}

// Ack acknowledges a QoS 1 or 2 delivery (PUBACK, or PUBREC and then
// PUBCOMP); call it exactly once, when the device has the message. Until
// then the message stays in flight in the broker, and a persistent session
// gets it again on its next connect. It is a no-op for QoS 0 and safe from
// any goroutine.
func (d Delivery) Ack() {
	if d.ack != nil {
		d.ack()
	}
}

// ErrSessionClosed is returned by a Session's methods once its connection
// has ended.
var ErrSessionClosed = errors.New("mqtt: session closed")

// ErrSessionBusy is returned by Publish at QoS 0 when maxSessionQueue packets
// already wait to be written to the broker: QoS 0 has no flow control, so a
// device sending faster than the broker reads loses messages rather than
// growing the gateway's memory.
var ErrSessionBusy = errors.New("mqtt: session busy: QoS 0 message dropped")

// maxSessionQueue bounds the packets waiting for a session's writer, for QoS 0
// publishes (acks and QoS 1/2, which the caller waits for, always pass).
const maxSessionQueue = 1024

// Session is an in-process broker session. Its methods are safe for
// concurrent use.
type Session struct {
	b        *Broker
	conn     net.Conn // the gateway's end of the pipe
	ic       *inprocConn
	clientID string
	onMsg    func(Delivery)
	log      *slog.Logger

	present bool

	mu      sync.Mutex
	nextID  uint16
	waiting map[uint16]chan packets.Packet // packet id → its ack
	connack chan packets.Packet

	outMu  sync.Mutex
	out    [][]byte      // encoded packets waiting for the writer
	outSig chan struct{} // cap 1: something is in out

	done    chan struct{}
	endOnce sync.Once
	err     error
}

// inprocConn is the engine's end of a session's pipe. It carries what the
// gateway established about the device.
type inprocConn struct {
	net.Conn
	remote   net.Addr
	verified bool // SessionOptions.SourceVerified
	trusted  bool
	listener string
	will     atomic.Pointer[Will]
}

// RemoteAddr is the device's address.
func (c *inprocConn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

// MaxWritesPending bounds the engine's outbound queue for the session
// (MaximumClientWritesPending otherwise: 64 KB a session): the session's
// reader takes every packet at once and hands it to the gateway, whose own
// queue of a device is smaller still. Issue 17 (MQTT-SN flood).
func (c *inprocConn) MaxWritesPending() int { return inprocWritesPending }

// inprocWritesPending is the engine's outbound queue of an in-process
// session, in packets.
const inprocWritesPending = 256

// inprocListener is the engine-side listener of a family of in-process
// sessions: it accepts nothing by itself, but lets the engine disconnect
// those sessions (0x8B) when it shuts down, like any listener's clients.
type inprocListener struct{ id string }

func (l *inprocListener) Init(*slog.Logger) error              { return nil }
func (l *inprocListener) Serve(listeners.EstablishFn)          {}
func (l *inprocListener) ID() string                           { return l.id }
func (l *inprocListener) Address() string                      { return "in-process" }
func (l *inprocListener) Protocol() string                     { return "inproc" }
func (l *inprocListener) Close(closeClients listeners.CloseFn) { closeClients(l.id) }

// Connect opens an in-process session for a device. A refused CONNECT
// returns an error for which bus.RefusalOf gives the CONNACK reason code.
func (b *Broker) Connect(ctx context.Context, o SessionOptions) (*Session, error) {
	if o.Listener == "" {
		return nil, errors.New("mqtt: session: no listener name")
	}
	if code := b.hook.admitCode(o.Remote); code != 0 {
		return nil, &bus.Refusal{Code: code, Reason: "connection refused: banned address or over the connection rate"}
	}
	if _, ok := b.srv.Listeners.Get(o.Listener); !ok {
		if err := b.srv.AddListener(&inprocListener{id: o.Listener}); err != nil && !errors.Is(err, mochi.ErrListenerIDExists) {
			return nil, fmt.Errorf("mqtt: session listener %s: %w", o.Listener, err)
		}
	}
	near, far := net.Pipe()
	ic := &inprocConn{Conn: far, remote: o.Remote, verified: o.SourceVerified, trusted: o.Trusted, listener: o.Listener}
	ic.will.Store(o.Will)
	s := &Session{
		b:        b,
		conn:     near,
		ic:       ic,
		clientID: o.ClientID,
		onMsg:    o.OnMessage,
		log:      b.log.With("listener", o.Listener, "client", o.ClientID),
		waiting:  make(map[uint16]chan packets.Packet),
		connack:  make(chan packets.Packet, 1),
		outSig:   make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	b.inprocWG.Add(3)
	go func() {
		defer b.inprocWG.Done()
		_ = b.srv.EstablishConnection(o.Listener, ic)
		_ = far.Close()
	}()
	go func() { defer b.inprocWG.Done(); s.readLoop() }()
	go func() { defer b.inprocWG.Done(); s.writeLoop() }()

	s.send(connectPacket(o))
	var ack packets.Packet
	select {
	case ack = <-s.connack:
	case <-s.done:
		// A refusing CONNACK is followed at once by the close: the reader
		// may have ended the session before this select saw the CONNACK.
		select {
		case ack = <-s.connack:
		default:
			return nil, fmt.Errorf("mqtt: session %s: connect: %w", o.ClientID, s.Err())
		}
	case <-ctx.Done():
		s.end(ctx.Err())
		return nil, fmt.Errorf("mqtt: session %s: connect: %w", o.ClientID, ctx.Err())
	}
	if ack.ReasonCode >= 0x80 {
		s.end(fmt.Errorf("connect refused: 0x%02x", ack.ReasonCode))
		return nil, &bus.Refusal{Code: ack.ReasonCode, Reason: reasonText(ack.ReasonCode)}
	}
	select {
	case <-s.done:
		return nil, fmt.Errorf("mqtt: session %s: connect: %w", o.ClientID, s.Err())
	default:
	}
	s.present = ack.SessionPresent
	return s, nil
}

func connectPacket(o SessionOptions) packets.Packet {
	rm := o.ReceiveMaximum
	if rm == 0 {
		rm = 16
	}
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			ClientIdentifier: o.ClientID,
			Clean:            o.CleanStart,
			Keepalive:        o.KeepAlive,
			Username:         []byte(o.Username),
			UsernameFlag:     o.Username != "",
			Password:         o.Password,
			PasswordFlag:     len(o.Password) > 0,
			// The will flag is always set: the will itself lives in the
			// inprocConn, where SetWill can replace it, and OnWill reads it
			// from there when the session ends.
			WillFlag:    true,
			WillTopic:   willSink,
			WillPayload: []byte{0}, // the engine refuses an empty will payload
		},
		Properties: packets.Properties{
			SessionExpiryInterval:     o.SessionExpiry,
			SessionExpiryIntervalFlag: o.SessionExpiry > 0,
			ReceiveMaximum:            rm,
		},
	}
	if w := o.Will; w != nil {
		pk.Connect.WillQos = min(w.QoS, 2)
		pk.Connect.WillRetain = w.Retain
	}
	return pk
}

// SessionPresent reports whether the broker resumed an existing session.
func (s *Session) SessionPresent() bool { return s.present }

// Done is closed when the session's connection ends for any reason.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err says why the session ended (nil while it runs).
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Publish sends m as this session: QoS 0 returns once queued for the
// broker, QoS 1 after PUBACK, QoS 2 after PUBCOMP. A reason code of 0x80 or
// more comes back as an error carrying a *bus.Refusal.
func (s *Session) Publish(ctx context.Context, m bus.Message) error {
	pk := packetOf(m)
	pk.ProtocolVersion = 5
	if m.QoS == 0 {
		s.outMu.Lock()
		full := len(s.out) >= maxSessionQueue
		s.outMu.Unlock()
		if full {
			return ErrSessionBusy
		}
		return s.sendChecked(pk)
	}
	id, ch, err := s.reserve()
	if err != nil {
		return err
	}
	defer s.release(id)
	pk.PacketID = id
	if err := s.sendChecked(pk); err != nil {
		return err
	}
	ack, err := s.await(ctx, ch)
	if err != nil {
		return fmt.Errorf("mqtt: session %s: publish %s: %w", s.clientID, m.Topic, err)
	}
	if ack.ReasonCode >= 0x80 {
		return &bus.Refusal{Code: ack.ReasonCode, Reason: reasonText(ack.ReasonCode)}
	}
	if m.QoS == 2 {
		s.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, ProtocolVersion: 5, PacketID: id})
		comp, err := s.await(ctx, ch)
		if err != nil {
			return fmt.Errorf("mqtt: session %s: publish %s: %w", s.clientID, m.Topic, err)
		}
		if comp.ReasonCode >= 0x80 {
			return &bus.Refusal{Code: comp.ReasonCode, Reason: reasonText(comp.ReasonCode)}
		}
	}
	return nil
}

// Subscribe subscribes the session to filter and returns the granted QoS,
// or an error carrying the SUBACK failure code.
func (s *Session) Subscribe(ctx context.Context, filter string, qos byte) (byte, error) {
	id, ch, err := s.reserve()
	if err != nil {
		return 0, err
	}
	defer s.release(id)
	s.send(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		ProtocolVersion: 5,
		PacketID:        id,
		Filters:         packets.Subscriptions{{Filter: filter, Qos: min(qos, 2)}},
	})
	ack, err := s.await(ctx, ch)
	if err != nil {
		return 0, fmt.Errorf("mqtt: session %s: subscribe %s: %w", s.clientID, filter, err)
	}
	if len(ack.ReasonCodes) != 1 {
		return 0, fmt.Errorf("mqtt: session %s: subscribe %s: SUBACK with %d codes", s.clientID, filter, len(ack.ReasonCodes))
	}
	if c := ack.ReasonCodes[0]; c >= 0x80 {
		return 0, &bus.Refusal{Code: c, Reason: reasonText(c)}
	}
	return ack.ReasonCodes[0], nil
}

// Unsubscribe removes the session's subscription to filter.
func (s *Session) Unsubscribe(ctx context.Context, filter string) error {
	id, ch, err := s.reserve()
	if err != nil {
		return err
	}
	defer s.release(id)
	s.send(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1},
		ProtocolVersion: 5,
		PacketID:        id,
		Filters:         packets.Subscriptions{{Filter: filter}},
	})
	ack, err := s.await(ctx, ch)
	if err != nil {
		return fmt.Errorf("mqtt: session %s: unsubscribe %s: %w", s.clientID, filter, err)
	}
	if len(ack.ReasonCodes) == 1 && ack.ReasonCodes[0] >= 0x80 && ack.ReasonCodes[0] != packets.CodeNoSubscriptionExisted.Code {
		return &bus.Refusal{Code: ack.ReasonCodes[0], Reason: reasonText(ack.ReasonCodes[0])}
	}
	return nil
}

// SetWill replaces the session's will; nil removes it.
func (s *Session) SetWill(w *Will) { s.ic.will.Store(w) }

// Disconnect ends the session cleanly: DISCONNECT 0x00 (will discarded) or,
// with publishWill, 0x04 (will published). It returns once the broker has
// closed the connection.
func (s *Session) Disconnect(publishWill bool) error {
	code := packets.CodeDisconnect.Code
	if publishWill {
		code = packets.CodeDisconnectWillMessage.Code
	}
	if err := s.sendChecked(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Disconnect},
		ProtocolVersion: 5,
		ReasonCode:      code,
	}); err != nil {
		return err
	}
	<-s.done
	return nil
}

// Close drops the connection without DISCONNECT, as a lost device does: the
// will is published.
func (s *Session) Close() { s.end(ErrSessionClosed) }

// end closes the session once, with err as the reason.
func (s *Session) end(err error) {
	s.endOnce.Do(func() {
		s.err = err
		close(s.done)
		_ = s.conn.Close()
	})
}

func (s *Session) reserve() (uint16, chan packets.Packet, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
		return 0, nil, ErrSessionClosed
	default:
	}
	for range 65535 {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		if _, used := s.waiting[s.nextID]; !used {
			ch := make(chan packets.Packet, 2)
			s.waiting[s.nextID] = ch
			return s.nextID, ch, nil
		}
	}
	return 0, nil, errors.New("mqtt: session: no free packet id")
}

func (s *Session) release(id uint16) {
	s.mu.Lock()
	delete(s.waiting, id)
	s.mu.Unlock()
}

func (s *Session) await(ctx context.Context, ch chan packets.Packet) (packets.Packet, error) {
	select {
	case pk := <-ch:
		return pk, nil
	case <-s.done:
		return packets.Packet{}, ErrSessionClosed
	case <-ctx.Done():
		return packets.Packet{}, ctx.Err()
	}
}

func (s *Session) sendChecked(pk packets.Packet) error {
	select {
	case <-s.done:
		return ErrSessionClosed
	default:
	}
	s.send(pk)
	return nil
}

// send encodes pk and queues it for the writer. It never blocks on the
// pipe, so the reader goroutine may send acks without deadlocking against
// the engine's own writes.
func (s *Session) send(pk packets.Packet) {
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(&buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(&buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Unsubscribe:
		err = pk.UnsubscribeEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		err = fmt.Errorf("cannot send packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		s.end(fmt.Errorf("mqtt: session %s: encode: %w", s.clientID, err))
		return
	}
	s.outMu.Lock()
	s.out = append(s.out, buf.Bytes())
	s.outMu.Unlock()
	select {
	case s.outSig <- struct{}{}:
	default:
	}
}

func (s *Session) writeLoop() {
	var batch [][]byte
	for {
		select {
		case <-s.done:
			return
		case <-s.outSig:
		}
		s.outMu.Lock()
		batch, s.out = s.out, batch[:0]
		s.outMu.Unlock()
		for _, b := range batch {
			if _, err := s.conn.Write(b); err != nil {
				s.end(fmt.Errorf("mqtt: session %s: write: %w", s.clientID, err))
				return
			}
		}
		clear(batch)
	}
}

func (s *Session) readLoop() {
	r := bufio.NewReaderSize(s.conn, 1024)
	for {
		pk, err := readPacket(r, 5)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
				err = ErrSessionClosed
			}
			s.end(err)
			return
		}
		s.dispatch(pk)
	}
}

func (s *Session) dispatch(pk packets.Packet) {
	switch pk.FixedHeader.Type {
	case packets.Connack:
		select {
		case s.connack <- pk:
		default:
		}
	case packets.Publish:
		s.deliver(pk)
	case packets.Puback, packets.Pubrec, packets.Pubcomp, packets.Suback, packets.Unsuback:
		s.mu.Lock()
		ch := s.waiting[pk.PacketID]
		s.mu.Unlock()
		if ch != nil {
			select {
			case ch <- pk:
			default:
			}
		}
	case packets.Pubrel:
		s.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, ProtocolVersion: 5, PacketID: pk.PacketID})
	case packets.Disconnect:
		s.end(fmt.Errorf("disconnected by the broker: %s", reasonText(pk.ReasonCode)))
	}
}

func (s *Session) deliver(pk packets.Packet) {
	d := Delivery{Message: messageOf(pk), Dup: pk.FixedHeader.Dup}
	d.Origin = ""
	id := pk.PacketID
	switch pk.FixedHeader.Qos {
	case 1:
		var once sync.Once
		d.ack = func() {
			once.Do(func() {
				s.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, ProtocolVersion: 5, PacketID: id})
			})
		}
	case 2:
		var once sync.Once
		d.ack = func() {
			once.Do(func() {
				s.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, ProtocolVersion: 5, PacketID: id})
			})
		}
	}
	if s.onMsg != nil {
		s.onMsg(d)
	} else {
		d.Ack()
	}
}

// readPacket reads one packet of a client's side of MQTT version (3, 4 or
// 5) from r. Types a client never receives are returned undecoded.
func readPacket(r *bufio.Reader, version byte) (packets.Packet, error) {
	hb, err := r.ReadByte()
	if err != nil {
		return packets.Packet{}, err
	}
	pk := packets.Packet{ProtocolVersion: version}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, fmt.Errorf("mqtt: session: %w", err)
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		return pk, fmt.Errorf("mqtt: session: %w", err)
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubrel:
		err = pk.PubrelDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Unsuback:
		err = pk.UnsubackDecode(body)
	case packets.Pingresp:
		err = pk.PingrespDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	if err != nil {
		return pk, fmt.Errorf("mqtt: session: decode type %d: %w", pk.FixedHeader.Type, err)
	}
	return pk, nil
}

// reasonText names an MQTT 5 reason code.
func reasonText(code byte) string {
	for _, c := range []packets.Code{
		packets.ErrUnspecifiedError, packets.ErrMalformedPacket, packets.ErrProtocolViolation,
		packets.ErrImplementationSpecificError, packets.ErrClientIdentifierNotValid,
		packets.ErrBadUsernameOrPassword, packets.ErrNotAuthorized, packets.ErrServerUnavailable,
		packets.ErrServerBusy, packets.ErrBanned, packets.ErrServerShuttingDown,
		packets.ErrKeepAliveTimeout, packets.ErrSessionTakenOver, packets.ErrTopicFilterInvalid,
		packets.ErrTopicNameInvalid, packets.ErrPacketTooLarge, packets.ErrQuotaExceeded,
		packets.ErrPayloadFormatInvalid, packets.ErrRetainNotSupported, packets.ErrQosNotSupported,
		packets.ErrAdministrativeAction, packets.ErrConnectionRateExceeded, packets.ErrMessageRateTooHigh,
	} {
		if c.Code == code {
			return c.Reason
		}
	}
	return fmt.Sprintf("reason code 0x%02x", code)
}

// sessionWill returns the will an in-process session holds, converted for
// the engine, and whether cl is such a session.
func sessionWill(cl *mochi.Client) (mochi.Will, bool) {
	ic, ok := cl.Net.Conn.(*inprocConn)
	if !ok {
		return mochi.Will{}, false
	}
	w := ic.will.Load()
	if w == nil || w.Topic == "" {
		return mochi.Will{TopicName: willSink}, true
	}
	return mochi.Will{
		TopicName:         w.Topic,
		Payload:           w.Payload,
		Qos:               min(w.QoS, 2),
		Retain:            w.Retain,
		WillDelayInterval: w.Delay,
		Flag:              1,
	}, true
}
