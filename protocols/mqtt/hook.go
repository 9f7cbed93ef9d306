package mqtt

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"

	"github.com/fieldgate/fieldgate/bus"
)

// gatewayHook is the engine hook that carries the gateway's behaviour:
// admission, authentication, ACL, limits, extensions and taps. It must stay
// cheap on the publish path: one atomic load of the runtime config, no
// allocation unless an extension or tap applies.
type gatewayHook struct {
	mochi.HookBase
	b *Broker

	logins   *loginGuard
	connects *ipRateLimiter
	logs     *logLimiter

	mu         sync.Mutex
	subOverlay map[*mochi.Client]map[uint16][]byte // SUBACK codes to set, per client and packet id
	sentDisc   map[*mochi.Client]byte              // the reason code of the DISCONNECT sent to a client
	exclusive  map[string]string                   // $exclusive filter → owning client id
}

func newGatewayHook(b *Broker) *gatewayHook {
	return &gatewayHook{
		b:          b,
		logins:     newLoginGuard(),
		connects:   newIPRateLimiter(),
		logs:       newLogLimiter(b.log, time.Minute),
		subOverlay: make(map[*mochi.Client]map[uint16][]byte),
		sentDisc:   make(map[*mochi.Client]byte),
		exclusive:  make(map[string]string),
	}
}

// ID names the hook in the engine's logs.
func (h *gatewayHook) ID() string { return "fieldgate" }

// Provides lists the engine events the hook handles.
func (h *gatewayHook) Provides(b byte) bool {
	switch b {
	case mochi.OnConnect, mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnDeliveryACLCheck,
		mochi.OnSessionEstablish, mochi.OnSessionEstablished, mochi.OnDisconnect,
		mochi.OnPacketRead, mochi.OnPacketEncode,
		mochi.OnSubscribe, mochi.OnSubscribed, mochi.OnUnsubscribe, mochi.OnUnsubscribed,
		mochi.OnPublish, mochi.OnPublished, mochi.OnWill:
		return true
	}
	return false
}

// admit runs on accept, before any MQTT byte is read: banned networks and
// the per-address connection rate.
func (h *gatewayHook) admit(remote net.Addr) bool { return h.admitCode(remote) == 0 }

// admitCode is admit with the reason: 0 (admitted), 0x8A banned or 0x9F
// connection rate exceeded.
func (h *gatewayHook) admitCode(remote net.Addr) byte {
	if remote == nil {
		return 0
	}
	rt := h.b.rt.Load()
	ip := remoteIP(remote)
	if ip != nil && rt.bannedIP(ip) {
		h.b.stats.ConnectionsRefused.Add(1)
		h.logs.warn("banned:"+ip.String(), "connection refused: banned address", "remote", remote.String())
		return packets.ErrBanned.Code
	}
	if rt.limits.ConnectRate > 0 && ip != nil && !h.connects.allow(ip.String(), rt.limits.ConnectRate, rt.limits.ConnectBurst) {
		h.b.stats.ConnectionsRefused.Add(1)
		h.logs.warn("rate:"+ip.String(), "connection refused: over the connection rate", "remote", remote.String())
		return packets.ErrConnectionRateExceeded.Code
	}
	return 0
}

// OnConnect refuses banned clients and reserved client ids, takes the
// username from a client certificate when configured, and imposes the
// server keep alive.
func (h *gatewayHook) OnConnect(cl *mochi.Client, pk packets.Packet) error {
	rt := h.b.rt.Load()
	cc, _ := cl.Net.Conn.(*clientConn)
	if cc != nil && (rt.listeners.TLS.CNAsUsername || rt.listeners.WebSocket.CNAsUsername || rt.listeners.QUIC.files(rt.listeners.TLS).CNAsUsername) {
		if st, ok := cc.tlsState(); ok && len(st.PeerCertificates) > 0 && len(st.VerifiedChains) > 0 {
			if cn := st.PeerCertificates[0].Subject.CommonName; cn != "" {
				cl.Properties.Username = []byte(cn)
				cc.certUser = true
			}
		}
	}
	if strings.HasPrefix(cl.ID, "$") {
		_ = h.b.srv.SendConnack(cl, packets.ErrClientIdentifierNotValid, false, nil)
		return packets.ErrClientIdentifierNotValid
	}
	if rt.banned(cl.ID, string(cl.Properties.Username)) {
		h.b.stats.ConnectionsRefused.Add(1)
		h.logs.warn("banned:"+cl.ID, "connection refused: banned client", "client", cl.ID, "remote", cl.Net.Remote)
		code := packets.ErrBanned
		if cl.Properties.ProtocolVersion < 5 {
			code = packets.ErrBadUsernameOrPassword // MQTT 3 has no "banned": mapped to 0x05 not authorised
		}
		_ = h.b.srv.SendConnack(cl, code, false, nil)
		return packets.ErrBanned
	}
	_, inproc := cl.Net.Conn.(*inprocConn) // the gateway watches its devices itself
	if max := uint16(min(rt.limits.MaxKeepalive/time.Second, 65535)); max > 0 && !inproc {
		if cl.State.Keepalive == 0 || cl.State.Keepalive > max {
			cl.State.Keepalive = max
			cl.State.ServerKeepalive = true
		}
	}
	// Topic aliases towards the client: the engine chooses them as it writes
	// each PUBLISH, within the client's Topic Alias Maximum (at most 64,
	// least recently used replaced), never on a re-delivery (engine patch 19).
	// Flow control towards every client: at most max_inflight QoS 1/2
	// messages unacknowledged (fewer if an MQTT 5 client asks); the rest wait
	// in the session queue instead of being dropped. MQTT 3 clients have no
	// receive maximum of their own, which the engine reads as "unlimited".
	resetSendQuota(cl, rt)
	if rt.limits.PublishRate > 0 && cc != nil {
		cc.rate = newPublishLimiter(rt.limits.PublishRate, rt.limits.PublishBurst)
	}
	return nil
}

// OnConnectAuthenticate checks the username and password (bcrypt), or the
// client certificate, under the failed-login limits of limits.go
// (loginGuard): per source address, kept apart for plain UDP whose source
// can be forged, and per username and client id.
func (h *gatewayHook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	rt := h.b.rt.Load()
	now := time.Now()
	src := loginSourceOf(cl.Net.Conn)
	user := string(pk.Connect.Username)
	clientID := pk.Connect.ClientIdentifier
	cc, _ := cl.Net.Conn.(*clientConn)
	ic, _ := cl.Net.Conn.(*inprocConn)
	// A client certificate, or a protocol gateway that vouches for the
	// username, leaves no password to guess.
	password := !(cc != nil && cc.certUser) && !(ic != nil && ic.trusted)
	switch h.logins.check(now, src, user, clientID, password) {
	case loginAddressBlocked:
		h.b.stats.AuthFailures.Add(1)
		h.logs.warn("blocked:"+src.kind()+":"+src.ip, "login refused: too many failures from this address",
			"remote", cl.Net.Remote, "udp", !src.verified)
		return false
	case loginAccountBlocked:
		h.b.stats.AuthFailures.Add(1)
		// Keyed by account, not address: an attack from many addresses
		// logs one line a minute.
		h.logs.warn("account:"+strconv.FormatUint(h.logins.accounts.key("user", user), 16),
			"login refused: too many failures for this username or client id",
			"username", logClip(user), "client", logClip(clientID), "remote", cl.Net.Remote)
		return false
	}
	if !password {
		return true
	}
	if user == "" {
		if rt.allowAnonymous && rt.anonymousOn(cl.Net.Listener) {
			return true
		}
		h.fail(rt, now, src, cl, pk, "anonymous not allowed")
		return false
	}
	hash, ok := rt.users[user]
	if !ok || bcrypt.CompareHashAndPassword(hash, pk.Connect.Password) != nil {
		h.fail(rt, now, src, cl, pk, "bad username or password")
		return false
	}
	h.logins.succeeded(now, src, user)
	return true
}

func (h *gatewayHook) fail(rt *runtimeConfig, now time.Time, src loginSource, cl *mochi.Client, pk packets.Packet, why string) {
	h.b.stats.AuthFailures.Add(1)
	user := string(pk.Connect.Username)
	h.logins.failed(now, src, user, pk.Connect.ClientIdentifier, rt.login)
	// Never log the password; the username is not a secret, but it comes
	// from the wire: clipped.
	h.logs.warn("auth:"+src.kind()+":"+src.ip, "login failed", "reason", why, "client", logClip(cl.ID),
		"username", logClip(user), "remote", cl.Net.Remote, "udp", !src.verified)
}

// loginSourceOf is where a connection's login comes from: its peer's
// address, verified unless it is an in-process session over plain UDP
// whose gateway did not prove the address (SessionOptions.SourceVerified).
// TCP, TLS and WebSocket peers completed a TCP handshake, QUIC peers a
// QUIC one.
func loginSourceOf(conn net.Conn) loginSource {
	src := loginSource{verified: true}
	if ip := remoteIP(conn.RemoteAddr()); ip != nil {
		src.ip = ip.String()
	}
	if ic, ok := conn.(*inprocConn); ok {
		src.verified = ic.verified
	}
	return src
}

// logClip shortens a client-chosen string (username, client id) for a log
// line: at most 64 bytes, cut at a character boundary.
func logClip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// OnACLCheck applies the ACL rules. The gateway's own parts (inline
// clients) are trusted.
func (h *gatewayHook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	if isEventTopic(stripSharePrefix(topic)) {
		return false // the broker's events are for the gateway's parts only (events.go)
	}
	rt := h.b.rt.Load()
	if write {
		if real, _, ok := parseDelayed(topic); ok {
			topic = real // the ACL applies to the topic it will be published on
		}
	} else {
		topic = stripSharePrefix(topic)
	}
	return rt.aclAllows(string(cl.Properties.Username), cl.ID, topic, write)
}

// OnDeliveryACLCheck is the read check before a message on topic reaches a
// client. It costs one comparison when the subscription was granted whole
// under the current rules (its read grant, see readGrant); only a
// subscription granted while a deny rule overlapped it (a monitoring client's
// #, say) has each of its messages checked against the rules. A message
// refused here never reaches the client, retained ones sent on subscribing
// included, and is counted in ACLDropped.
func (h *gatewayHook) OnDeliveryACLCheck(cl *mochi.Client, sub packets.Subscription, topic string) bool {
	if cl.Net.Inline {
		return true
	}
	rt := h.b.rt.Load()
	if len(rt.acl) == 0 || sub.ReadGrant == rt.aclGrant {
		return true
	}
	if rt.aclAllows(string(cl.Properties.Username), cl.ID, topic, false) {
		return true
	}
	h.b.stats.ACLDropped.Add(1)
	h.b.eventDroppedACL(cl, sub, topic)
	return false
}

// readGrant is the read grant for a client's subscription to filter: the
// current rules' fingerprint when the client may read every topic the filter
// matches, 0 (check each message) otherwise.
func readGrant(rt *runtimeConfig, cl *mochi.Client, filter string) uint64 {
	if len(rt.acl) == 0 {
		return 0 // nothing to check: OnDeliveryACLCheck allows everything
	}
	allow, check := rt.aclSubscribe(string(cl.Properties.Username), cl.ID, stripSharePrefix(filter))
	if !allow || check {
		return 0
	}
	return rt.aclGrant
}

// grantSubscriptions gives read grants to the subscriptions a client got
// without one: inherited from a previous connection (the engine clears them,
// as they were granted to that connection's username), restored from the
// store, or added by auto-subscribe.
func (h *gatewayHook) grantSubscriptions(cl *mochi.Client, rt *runtimeConfig) {
	if cl.Net.Inline || len(rt.acl) == 0 {
		return
	}
	for filter, sub := range cl.State.Subscriptions.GetAll() {
		if sub.ReadGrant == rt.aclGrant {
			continue
		}
		if g := readGrant(rt, cl, filter); g != 0 {
			sub.ReadGrant = g
			h.b.srv.Topics.Subscribe(cl.ID, sub) // replaces the index entry
			cl.State.Subscriptions.Add(filter, sub)
		}
	}
}

// stripSharePrefix returns the filter of $share/{group}/{filter} and
// $exclusive/{filter} subscriptions, for ACL matching.
func stripSharePrefix(filter string) string {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		if _, f, ok := strings.Cut(rest, "/"); ok {
			return f
		}
	}
	if f, ok := strings.CutPrefix(filter, exclusivePrefix); ok {
		return f
	}
	return filter
}

// OnPacketRead enforces the per-client publish rate: a client over it is
// slowed down (its reads wait), and one that stays over it for the grace
// period is disconnected with 0x96. It also answers publishes to $SYS
// topics, which the engine would drop without a word.
func (h *gatewayHook) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Publish {
		return pk, nil
	}
	if cc, ok := cl.Net.Conn.(*clientConn); ok && cc.rate != nil {
		grace := h.b.rt.Load().limits.PublishRateGrace
		if wait, over := cc.rate.take(time.Now(), grace); over {
			h.b.stats.RateLimited.Add(1)
			h.logs.warn("rate:"+cl.ID, "client disconnected: publish rate too high", "client", cl.ID, "remote", cl.Net.Remote)
			h.disconnect(cl, packets.Code{Code: 0x96, Reason: "message rate too high"})
			return pk, errRateTooHigh
		} else if wait > 0 {
			time.Sleep(wait)
		}
	}
	if isSysTopic(pk.TopicName) {
		return h.refuseSysPublish(cl, pk), nil
	}
	return pk, nil
}

// isSysTopic reports whether a topic name starts with $SYS, as the engine
// reads it (any case, no separator needed).
func isSysTopic(topic string) bool {
	return len(topic) >= len(mochi.SysPrefix) && strings.EqualFold(topic[:len(mochi.SysPrefix)], mochi.SysPrefix)
}

// sysRefusal is the reason given to an MQTT 5 client that publishes to $SYS.
var sysRefusal = packets.Code{Code: packets.ErrNotAuthorized.Code, Reason: "$SYS topics are read-only"}

// refuseSysPublish answers a client's publish to a $SYS topic. The engine
// drops such a publish without any answer, so a QoS 1 or 2 publisher would
// wait for its acknowledgement forever. MQTT 5 gets PUBACK (QoS 1) or PUBREC
// (QoS 2) 0x87 not authorised, which ends the flow; MQTT 3 has no negative
// acknowledgement and gets a plain PUBACK or PUBREC (then PUBCOMP for its
// PUBREL): the message is acknowledged and dropped, as EMQX does. The
// packet then goes on to the engine as QoS 0 without a packet id, which it
// drops. A QoS 1/2 publish without a packet id is left to the engine, which
// refuses it as a protocol error.
func (h *gatewayHook) refuseSysPublish(cl *mochi.Client, pk packets.Packet) packets.Packet {
	h.logs.warn("sys:"+cl.Net.Remote, "publish refused: $SYS topics are read-only",
		"client", logClip(cl.ID), "remote", cl.Net.Remote, "qos", pk.FixedHeader.Qos, "topic_len", len(pk.TopicName))
	if pk.FixedHeader.Qos == 0 || pk.PacketID == 0 {
		return pk
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID}
	if pk.FixedHeader.Qos == 2 {
		ack.FixedHeader.Type = packets.Pubrec
	}
	if cl.Properties.ProtocolVersion == 5 {
		ack.ReasonCode = sysRefusal.Code
		ack.Properties.ReasonString = sysRefusal.Reason
	}
	_ = cl.WritePacket(ack)
	pk.FixedHeader.Qos = 0
	pk.PacketID = 0
	return pk
}

var errRateTooHigh = errors.New("message rate too high")

// OnPacketEncode adds the maximum packet size to CONNACK and sets SUBACK
// reason codes decided by OnSubscribe (exclusive subscriptions, limits).
func (h *gatewayHook) OnPacketEncode(cl *mochi.Client, pk packets.Packet) packets.Packet {
	switch pk.FixedHeader.Type {
	case packets.Publish:
		if !pk.FixedHeader.Dup && publishTooLarge(cl, &pk) {
			h.b.eventDropped(cl, &pk, "too_large")
		}
	case packets.Disconnect:
		if pk.ReasonCode != 0 { // why the broker ends it, for client_disconnected (events.go)
			h.mu.Lock()
			h.sentDisc[cl] = pk.ReasonCode
			h.mu.Unlock()
		}
	case packets.Connack:
		if cl.Properties.ProtocolVersion == 5 && pk.ReasonCode < packets.ErrUnspecifiedError.Code {
			if mp := h.b.rt.Load().limits.MaxPacketSize; mp > 0 {
				pk.Properties.MaximumPacketSize = uint32(mp)
			}
			// The engine accepts topic aliases from clients (per connection;
			// an unknown one is 0x94) but never says so; without this value
			// clients must assume 0.
			pk.Properties.TopicAliasMaximum = h.b.srv.Options.Capabilities.TopicAliasMaximum
		}
	case packets.Suback:
		h.mu.Lock()
		codes := h.subOverlay[cl][pk.PacketID]
		if codes != nil {
			delete(h.subOverlay[cl], pk.PacketID)
		}
		h.mu.Unlock()
		if codes != nil && len(codes) == len(pk.ReasonCodes) {
			rc := append([]byte(nil), pk.ReasonCodes...)
			for i, c := range codes {
				if c == 0 {
					continue
				}
				if cl.Properties.ProtocolVersion < 5 {
					c = packets.ErrUnspecifiedError.Code
				}
				rc[i] = c
			}
			pk.ReasonCodes = rc
		}
	}
	return pk
}

// invalidFilter makes the engine refuse a subscription (0x8F) without
// subscribing; OnPacketEncode then puts the real reason code in the SUBACK.
const invalidFilter = "#/refused"

// OnSubscribe applies rewrite rules, topic limits and exclusive
// subscriptions to each filter of a SUBSCRIBE.
func (h *gatewayHook) OnSubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	rt := h.b.rt.Load()
	var codes []byte
	refuse := func(i int, code byte) {
		if codes == nil {
			codes = make([]byte, len(pk.Filters))
		}
		codes[i] = code
		pk.Filters[i].Filter = invalidFilter
	}
	filters := make(packets.Subscriptions, len(pk.Filters))
	copy(filters, pk.Filters)
	pk.Filters = filters
	for i := range pk.Filters {
		f := pk.Filters[i].Filter
		if !cl.Net.Inline && len(rt.rewrite) > 0 {
			f = rt.rewriteTopic(f, false)
			pk.Filters[i].Filter = f
		}
		if !rt.topicWithinLimits(f) {
			h.b.stats.TopicLimitsRejected.Add(1)
			refuse(i, packets.ErrTopicFilterInvalid.Code)
			continue
		}
		if inner, ok := strings.CutPrefix(f, exclusivePrefix); ok {
			if !mochi.IsValidFilter(inner, false) {
				refuse(i, packets.ErrTopicFilterInvalid.Code)
				continue
			}
			if !h.OnACLCheck(cl, inner, false) {
				// Let the engine refuse it (0x87) without taking the lock.
				pk.Filters[i].Filter = inner
				continue
			}
			h.mu.Lock()
			owner, taken := h.exclusive[inner]
			if !taken || owner == cl.ID {
				h.exclusive[inner] = cl.ID
			}
			h.mu.Unlock()
			if taken && owner != cl.ID {
				h.b.stats.ExclusiveRefused.Add(1)
				refuse(i, packets.ErrQuotaExceeded.Code)
				continue
			}
			pk.Filters[i].Filter = inner
		}
		pk.Filters[i].ReadGrant = readGrant(rt, cl, pk.Filters[i].Filter)
	}
	if codes != nil {
		h.mu.Lock()
		m := h.subOverlay[cl]
		if m == nil {
			m = make(map[uint16][]byte)
			h.subOverlay[cl] = m
		}
		m[pk.PacketID] = codes
		h.mu.Unlock()
	}
	return pk
}

// exclusivePrefix marks an exclusive subscription: one subscriber at a time.
const exclusivePrefix = "$exclusive/"

// OnUnsubscribe maps filters the way OnSubscribe did ($exclusive/ prefix,
// rewrite rules), so that unsubscribing removes what subscribing added.
func (h *gatewayHook) OnUnsubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	rt := h.b.rt.Load()
	filters := make(packets.Subscriptions, len(pk.Filters))
	copy(filters, pk.Filters)
	for i := range filters {
		f := filters[i].Filter
		if !cl.Net.Inline && len(rt.rewrite) > 0 {
			f = rt.rewriteTopic(f, false)
		}
		filters[i].Filter = strings.TrimPrefix(f, exclusivePrefix)
	}
	pk.Filters = filters
	return pk
}

// OnSubscribed is a no-op kept for symmetry with OnUnsubscribed.
func (h *gatewayHook) OnSubscribed(cl *mochi.Client, pk packets.Packet, codes []byte) {}

// OnUnsubscribed releases exclusive subscriptions the client held on the
// filters it left.
func (h *gatewayHook) OnUnsubscribed(cl *mochi.Client, pk packets.Packet) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range pk.Filters {
		inner := strings.TrimPrefix(f.Filter, exclusivePrefix)
		if h.exclusive[inner] == cl.ID {
			delete(h.exclusive, inner)
		}
	}
}

// OnPublish handles topic limits, $delayed/ and rewrite rules, then passes
// the message through the taps, so it is durable where it must be before
// the engine acknowledges it.
func (h *gatewayHook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	rt := h.b.rt.Load()
	if !cl.Net.Inline && !rt.topicWithinLimits(pk.TopicName) {
		h.b.stats.TopicLimitsRejected.Add(1)
		h.logs.warn("topiclimit:"+cl.ID, "publish refused: topic over the configured limits", "client", cl.ID, "topic_len", len(pk.TopicName))
		return pk, h.refusal(cl, pk, packets.ErrTopicNameInvalid)
	}
	if strings.HasPrefix(pk.TopicName, delayedPrefix) {
		real, delay, ok := parseDelayed(pk.TopicName)
		if !ok {
			h.b.stats.DelayedInvalid.Add(1)
			h.logs.warn("delayed:"+cl.ID, "delayed publish dropped: bad interval or topic", "client", cl.ID, "topic", pk.TopicName)
			if pk.FixedHeader.Qos > 0 && cl.Properties.ProtocolVersion == 5 {
				return pk, h.refusal(cl, pk, packets.ErrTopicNameInvalid)
			}
			// MQTT 3 cannot be told: acknowledge and drop, as EMQX does.
			return pk, packets.CodeSuccessIgnore
		}
		out := pk.Copy(false)
		out.TopicName = real
		out.Origin = cl.ID
		if err := h.b.delayed.add(out, delay); err != nil {
			h.logs.warn("delayed-store", "delayed publish refused", "client", cl.ID, "error", err)
			return pk, h.refusal(cl, pk, packets.ErrUnspecifiedError)
		}
		return pk, packets.CodeSuccessIgnore // acknowledged now, delivered later
	}
	if !cl.Net.Inline && len(rt.rewrite) > 0 {
		pk.TopicName = rt.rewriteTopic(pk.TopicName, true)
	}
	if !cl.Net.Inline {
		if err := h.b.runTaps(&pk); err != nil {
			h.logs.warn("tap:"+cl.ID, "publish refused", "client", cl.ID, "topic", pk.TopicName, "error", err)
			r := refusalCode(err)
			return pk, h.refusal(cl, pk, r)
		}
	}
	return pk, nil
}

// refusal turns a refusal into what the engine does with it: an MQTT 5
// QoS 1/2 publisher gets the reason code in its PUBACK; an MQTT 3 QoS 1/2
// publisher, which has no way to be told, is disconnected (it keeps the
// message and sends it again after reconnecting); QoS 0 is dropped.
func (h *gatewayHook) refusal(cl *mochi.Client, pk packets.Packet, code packets.Code) error {
	switch {
	case pk.FixedHeader.Qos == 0:
		return packets.ErrRejectPacket
	case cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos == 1:
		return code // the engine answers with a PUBACK carrying it
	case cl.Properties.ProtocolVersion == 5:
		// The engine would answer a QoS 2 publish with a PUBACK; the flow
		// needs a PUBREC, which with a failure code also ends it.
		_ = cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Pubrec},
			PacketID:    pk.PacketID,
			ReasonCode:  code.Code,
			Properties:  packets.Properties{ReasonString: code.Reason},
		})
		return packets.ErrRejectPacket
	}
	// MQTT 3 has no DISCONNECT from the server: close the connection.
	cl.Stop(code)
	return packets.ErrRejectPacket
}

// disconnect ends a client's connection: MQTT 5 clients get a DISCONNECT
// with the reason code; MQTT 3 has no server DISCONNECT, so the connection
// is just closed.
func (h *gatewayHook) disconnect(cl *mochi.Client, code packets.Code) {
	if cl.Properties.ProtocolVersion == 5 {
		_ = h.b.srv.DisconnectClient(cl, code)
		return
	}
	cl.Stop(code)
}

// OnPublished queues QoS 0 messages for offline persistent sessions when
// queue_qos0 is on.
func (h *gatewayHook) OnPublished(cl *mochi.Client, pk packets.Packet) {
	if h.b.rt.Load().queueQoS0 {
		h.b.queueQoS0(pk)
	}
}

// OnWill defers wills with a delay to the gateway's own scheduler, which
// publishes them to the second (the engine checks once a second and fires up
// to two seconds late).
func (h *gatewayHook) OnWill(cl *mochi.Client, will mochi.Will) (mochi.Will, error) {
	if w, ok := sessionWill(cl); ok {
		// An in-process session's will may have been replaced since its
		// CONNECT (MQTT-SN WILLTOPICUPD), so it is checked against the ACL
		// here rather than at connect time.
		if w.TopicName == willSink {
			return w, nil
		}
		if !h.OnACLCheck(cl, w.TopicName, true) {
			h.logs.warn("will-acl:"+cl.ID, "will not published: not authorized", "client", cl.ID, "topic", w.TopicName)
			return mochi.Will{TopicName: willSink}, nil
		}
		will = w
	}
	if will.WillDelayInterval == 0 {
		return will, nil
	}
	h.b.wills.schedule(cl, will)
	// The engine still files the will under its own delay; make that copy a
	// publish that reaches no one.
	return mochi.Will{TopicName: willSink}, nil
}

// willSink is a topic nobody can subscribe to (clients cannot use $fieldgate/).
const willSink = "$fieldgate/will-sink"

// OnSessionEstablish runs before the CONNACK: the auto-subscriptions are in
// place before the client can learn it is connected, so a message published
// for it right after its CONNACK reaches it.
func (h *gatewayHook) OnSessionEstablish(cl *mochi.Client, pk packets.Packet) {
	if rt := h.b.rt.Load(); len(rt.autoSub) > 0 {
		h.b.autoSubscribe(cl, rt, false)
	}
}

// OnSessionEstablished cancels a pending delayed will, completes the
// auto-subscriptions (again, as a session taken over may have dropped them;
// then their retained messages and persistence) and delivers queued QoS 0
// messages.
func (h *gatewayHook) OnSessionEstablished(cl *mochi.Client, pk packets.Packet) {
	h.b.wills.cancel(cl.ID)
	rt := h.b.rt.Load()
	resetSendQuota(cl, rt) // the engine resets it when a session is inherited
	if len(rt.autoSub) > 0 {
		h.b.autoSubscribe(cl, rt, true)
	}
	h.grantSubscriptions(cl, rt)
	if rt.queueQoS0 {
		h.b.flushQoS0(cl)
	}
	h.b.eventConnected(cl)
}

// OnDisconnect forgets per-connection state; a session that ends releases
// its exclusive subscriptions.
func (h *gatewayHook) OnDisconnect(cl *mochi.Client, err error, expire bool) {
	h.mu.Lock()
	sent := h.sentDisc[cl]
	delete(h.sentDisc, cl)
	h.mu.Unlock()
	h.b.eventDisconnected(cl, err, sent)
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subOverlay, cl)
	if expire {
		for f, owner := range h.exclusive {
			if owner == cl.ID {
				delete(h.exclusive, f)
			}
		}
	}
	if errors.Is(err, errPacketTooLarge) {
		h.b.stats.OversizedPackets.Add(1)
		h.logs.warn("oversize:"+cl.ID, "client disconnected: packet over the maximum size", "client", cl.ID, "remote", cl.Net.Remote)
	}
}

// refusalCode maps a tap error to the engine's reason code.
func refusalCode(err error) packets.Code {
	r := bus.RefusalOf(err)
	return packets.Code{Code: r.Code, Reason: r.Reason}
}

// resetSendQuota applies the broker's flow control towards a client.
func resetSendQuota(cl *mochi.Client, rt *runtimeConfig) {
	q := rt.limits.MaxInflight
	if rm := int(cl.Properties.Props.ReceiveMaximum); rm > 0 && rm < q {
		q = rm
	}
	cl.State.Inflight.ResetSendQuota(int32(q))
}
