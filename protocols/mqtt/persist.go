package mqtt

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/maphash"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"

	"github.com/fieldgate/fieldgate/internal/ratelog"
)

// Buckets of the broker's state in the store. Values are mochi's storage
// types encoded with their MarshalBinary (JSON).
const (
	clientsBucket  = "clients"  // key: client id → storage.Client
	subsBucket     = "subs"     // key: client id, 0x00, filter → storage.Subscription
	inflightBucket = "inflight" // key: client id, 0x00, packet id (2 bytes, big endian) → inflightRecord
	retainedBucket = "retained" // key: topic → storage.Message
	sysInfoBucket  = "sysinfo"  // key: sysInfoKey → storage.SystemInfo
)

const sysInfoKey = "info"

// Tunables of the hook.
const (
	// sysInfoEvery spaces the writes of $SYS counters: one fsync a second
	// for counters wears flash for nothing. The last value is written at Stop.
	sysInfoEvery = time.Minute
	// stopSyncTimeout bounds the final flush in Stop.
	stopSyncTimeout = 5 * time.Second
	// persistLogEvery rate-limits the hook's error logs.
	persistLogEvery = 10 * time.Second
)

// persistHook is fieldgate's mochi storage hook: it keeps sessions,
// subscriptions, retained messages and inflight/queued messages in a
// Store, so that they survive a restart or a kill -9, and gives them back
// to the engine when it starts.
//
// Compared with mochi's own (unmaintained) bolt hook it:
//   - never writes on the engine's hot path: everything goes through the
//     store's group-committing writer, and an inflight message acknowledged
//     before the next commit is never encoded or written; QoS 0 publishes
//     touch nothing;
//   - persists only sessions that outlive their connection (MQTT 3 clean
//     session false, MQTT 5 session expiry > 0), never the inline client and
//     never $SYS retained messages;
//   - removes a session's subscriptions and inflight messages with it (clean
//     start, expiry, clean disconnect), and drops orphans when loading;
//   - keeps a session's records when it is taken over by a new connection
//     (the engine "unsubscribes" and "drops" the old connection's state, which
//     the new connection has inherited);
//   - stores inflight packet ids, the v5 session-expiry and payload-format
//     flags, and skips refused subscriptions.
type persistHook struct {
	mochi.HookBase
	db  Store
	log *slog.Logger

	mu sync.Mutex
	// loaded is the set of client ids read by StoredClients, used to drop
	// orphaned subscriptions and inflight messages while loading.
	loaded map[string]bool
	// owners maps a client id to the connection that last established its
	// session: the late events of an older connection with the same id
	// (its disconnect racing a reconnect) must not rewrite the records.
	owners map[string]*mochi.Client
	// stored is the set of client ids that may have records in the store:
	// those loaded at start and those of persistent sessions written since.
	// A clean session whose id is not in it has nothing to remove, so its
	// connect and disconnect write nothing (no commit, no fsync).
	stored map[string]bool

	sysMu      sync.Mutex
	sysLast    *system.Info // latest counters, written at Stop
	sysWritten time.Time

	logs *ratelog.Logger // error lines: one per persistLogEvery in all

	// heldMu serialise the writes of the records of outgoing messages, by
	// client id (heldLock, putHeld).
	heldMu   [heldStripes]sync.Mutex
	heldSeed maphash.Seed

	// seq orders the inflight records: the queue order of a session's
	// messages, which neither the key (packet ids wrap) nor Created (whole
	// seconds) gives. See nextSeq.
	seq atomic.Uint64

	// srv and queues, when set (by the broker, before the engine starts),
	// make StoredInflightMessages restore the queues itself, session by
	// session under the queue limits and the memory budget (restoreInflight);
	// without them it returns every record to the engine at once.
	srv    *mochi.Server
	queues *sessionQueues
}

// newPersistHook returns the storage hook over db. The hook does not own db:
// its Stop flushes (Sync) but the caller closes db after the engine.
func newPersistHook(db Store, log *slog.Logger) *persistHook {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("part", "mqtt-persist")
	logs := ratelog.New(log, ratelog.Config{Every: persistLogEvery, Burst: 1, Total: 1})
	return &persistHook{db: db, log: log, logs: logs, owners: make(map[string]*mochi.Client), stored: make(map[string]bool), heldSeed: maphash.MakeSeed()}
}

// ID identifies the hook to the engine.
func (h *persistHook) ID() string { return "fieldgate-persist" }

// Provides lists the engine events the hook handles.
func (h *persistHook) Provides(b byte) bool {
	switch b {
	case mochi.OnSessionEstablish,
		mochi.OnSessionEstablished,
		mochi.OnDisconnect,
		mochi.OnSubscribed,
		mochi.OnUnsubscribed,
		mochi.OnRetainMessage,
		mochi.OnRetainedExpired,
		mochi.OnQosPublish,
		mochi.OnQosComplete,
		mochi.OnQosDropped,
		mochi.OnClientExpired,
		mochi.OnWillSent,
		mochi.OnSysInfoTick,
		mochi.StoredClients,
		mochi.StoredSubscriptions,
		mochi.StoredInflightMessages,
		mochi.StoredRetainedMessages,
		mochi.StoredSysInfo:
		return true
	}
	return false
}

// Init accepts no configuration: everything comes from newPersistHook.
func (h *persistHook) Init(config any) error {
	if config != nil {
		return mochi.ErrInvalidConfigType
	}
	return nil
}

// Stop writes the latest $SYS counters and waits for everything enqueued to
// be on disk. The engine calls it from Close, after all clients are gone.
func (h *persistHook) Stop() error {
	h.sysMu.Lock()
	last := h.sysLast
	h.sysMu.Unlock()
	if last != nil {
		h.put(sysInfoBucket, []byte(sysInfoKey), storage.SystemInfo{Info: *last, ID: sysInfoKey, T: storage.SysInfoKey})
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopSyncTimeout)
	defer cancel()
	return h.db.Sync(ctx)
}

// ---- which sessions are persisted ----

// sessionPersists tells whether the session outlives its connection, the
// negation of the engine's own expiry rule at disconnect.
func sessionPersists(cl *mochi.Client) bool {
	if cl.Net.Inline || strings.IndexByte(cl.ID, 0) >= 0 { // 0x00 separates our keys
		return false
	}
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

// takenOver tells whether cl is an old connection whose session a new
// connection with the same id has inherited: its "unsubscribe", "drop" and
// "disconnect" events must not touch the records the new one now owns.
func takenOver(cl *mochi.Client) bool {
	return cl.IsTakenOver() || errors.Is(cl.StopCause(), packets.ErrSessionTakenOver)
}

// current tells whether cl is the connection that owns its session now.
// Sessions restored from the store have no owner until a client connects.
func (h *persistHook) current(cl *mochi.Client) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	owner, ok := h.owners[cl.ID]
	return !ok || owner == cl
}

// markStored notes that id may now have records in the store.
func (h *persistHook) markStored(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stored[id] = true
}

// release forgets the owner of a session that ended.
func (h *persistHook) release(cl *mochi.Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.owners[cl.ID] == cl {
		delete(h.owners, cl.ID)
	}
}

// ---- keys ----

func clientPrefix(id string) []byte {
	k := make([]byte, 0, len(id)+1)
	return append(append(k, id...), 0)
}

func subKey(id, filter string) []byte {
	return append(clientPrefix(id), filter...)
}

// inflightKey is the key of a message in flight to or queued for a client
// (the server's packet id), or, with inbound, of the PUBREC state of a QoS 2
// publish from the client (the client's packet id: another id space).
func inflightKey(id string, packetID uint16, inbound bool) []byte {
	k := binary.BigEndian.AppendUint16(clientPrefix(id), packetID)
	if inbound {
		k = append(k, 'i')
	}
	return k
}

// queuedKey is the key of a message held for session id (queued or in
// flight, a PUBLISH or its PUBREL): the session's queue sequence
// (packets.Packet.QueueSeq), which the engine keeps from queueing to
// acknowledgement, while the packet id is only given when the message is
// sent. Layout: id, 0, 'q', 8 bytes big-endian. Records written before
// (keyed by packet id, inflightKey) are rewritten under it when restored.
func queuedKey(id string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append(clientPrefix(id), 'q'), seq)
}

// heldKey is the key of the record of pk, a message held for session id,
// or the state of an inbound QoS 2 flow (its PUBREC, with the client's
// packet id; completed by the client's PUBREL).
func heldKey(id string, pk *packets.Packet) []byte {
	inbound := pk.FixedHeader.Type == packets.Pubrec || pk.FixedHeader.Type == packets.Pubrel && pk.QueueSeq == 0
	if inbound || pk.QueueSeq == 0 {
		return inflightKey(id, pk.PacketID, inbound)
	}
	return queuedKey(id, pk.QueueSeq)
}

// ---- sessions ----

// OnSessionEstablish runs after authentication and before the engine
// inherits or discards an existing session: on a clean start, or for a
// session that will not be persisted, stale records of the same client id
// are removed now, before anything new (auto-subscriptions, queued messages)
// can be written for it.
func (h *persistHook) OnSessionEstablish(cl *mochi.Client, pk packets.Packet) {
	if cl.Net.Inline || strings.IndexByte(cl.ID, 0) >= 0 {
		return
	}
	persists := sessionPersists(cl)
	h.mu.Lock()
	h.owners[cl.ID] = cl
	stored := h.stored[cl.ID]
	if !persists {
		// Its records are enqueued for removal below, before anything
		// new could be written for this id.
		delete(h.stored, cl.ID)
	}
	h.mu.Unlock()
	if stored && (cl.Properties.Clean || !persists) {
		h.deletePrefix(subsBucket, clientPrefix(cl.ID))
		h.deletePrefix(inflightBucket, clientPrefix(cl.ID))
		if !persists {
			h.del(clientsBucket, []byte(cl.ID))
		}
	}
}

// OnSessionEstablished records a persistent session.
func (h *persistHook) OnSessionEstablished(cl *mochi.Client, pk packets.Packet) {
	if sessionPersists(cl) {
		h.putClient(cl)
	}
}

// OnDisconnect removes a session that ends with its connection, and
// rewrites one that persists (an MQTT 5 client may change its session expiry
// when it disconnects, and a clean disconnect clears the will).
func (h *persistHook) OnDisconnect(cl *mochi.Client, err error, expire bool) {
	if cl.Net.Inline || takenOver(cl) || !h.current(cl) {
		return
	}
	if expire {
		h.release(cl)
		h.deleteSession(cl.ID)
		return
	}
	if sessionPersists(cl) {
		h.putClient(cl)
	}
}

// OnClientExpired removes an expired session and everything it held.
func (h *persistHook) OnClientExpired(cl *mochi.Client) {
	if !cl.Net.Inline && h.current(cl) {
		h.release(cl)
		h.deleteSession(cl.ID)
	}
}

// OnWillSent rewrites the session without the will that was just sent.
func (h *persistHook) OnWillSent(cl *mochi.Client, pk packets.Packet) {
	if sessionPersists(cl) && !takenOver(cl) && h.current(cl) {
		h.putClient(cl)
	}
}

func (h *persistHook) deleteSession(id string) {
	if strings.IndexByte(id, 0) >= 0 {
		return
	}
	h.mu.Lock()
	stored := h.stored[id]
	delete(h.stored, id)
	h.mu.Unlock()
	if !stored {
		return // a clean session: nothing of it was ever written
	}
	h.del(clientsBucket, []byte(id))
	h.deletePrefix(subsBucket, clientPrefix(id))
	h.deletePrefix(inflightBucket, clientPrefix(id))
}

func (h *persistHook) putClient(cl *mochi.Client) {
	h.markStored(cl.ID)
	props := cl.Properties.Props.Copy(false)
	h.put(clientsBucket, []byte(cl.ID), storage.Client{
		ID:              cl.ID,
		T:               storage.ClientKey,
		Remote:          cl.Net.Remote,
		Listener:        cl.Net.Listener,
		Username:        bytes.Clone(cl.Properties.Username),
		Clean:           cl.Properties.Clean,
		ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval:     props.SessionExpiryInterval,
			SessionExpiryIntervalFlag: props.SessionExpiryIntervalFlag,
			AuthenticationMethod:      props.AuthenticationMethod,
			AuthenticationData:        props.AuthenticationData,
			RequestProblemInfo:        props.RequestProblemInfo,
			RequestProblemInfoFlag:    props.RequestProblemInfoFlag,
			RequestResponseInfo:       props.RequestResponseInfo,
			ReceiveMaximum:            props.ReceiveMaximum,
			TopicAliasMaximum:         props.TopicAliasMaximum,
			User:                      props.User,
			MaximumPacketSize:         props.MaximumPacketSize,
		},
		Will: storage.ClientWill(cl.Properties.Will),
	})
}

// ---- subscriptions ----

// OnSubscribed records the granted subscriptions of a persistent session;
// refused filters (reason code 0x80 and above) are not recorded.
func (h *persistHook) OnSubscribed(cl *mochi.Client, pk packets.Packet, reasonCodes []byte) {
	if !sessionPersists(cl) {
		return
	}
	h.markStored(cl.ID)
	for i, f := range pk.Filters {
		if i >= len(reasonCodes) || reasonCodes[i] >= packets.ErrUnspecifiedError.Code {
			continue
		}
		h.put(subsBucket, subKey(cl.ID, f.Filter), storage.Subscription{
			ID:                string(subKey(cl.ID, f.Filter)),
			T:                 storage.SubscriptionKey,
			Client:            cl.ID,
			Filter:            f.Filter,
			Qos:               reasonCodes[i],
			Identifier:        f.Identifier,
			NoLocal:           f.NoLocal,
			RetainHandling:    f.RetainHandling,
			RetainAsPublished: f.RetainAsPublished,
		})
	}
}

// OnUnsubscribed removes subscriptions of a persistent session.
func (h *persistHook) OnUnsubscribed(cl *mochi.Client, pk packets.Packet) {
	if !sessionPersists(cl) || takenOver(cl) || !h.current(cl) {
		return
	}
	for _, f := range pk.Filters {
		h.del(subsBucket, subKey(cl.ID, f.Filter))
	}
}

// ---- retained messages ----

// OnRetainMessage records or removes the retained message of a topic
// ($SYS topics are regenerated, never stored).
func (h *persistHook) OnRetainMessage(cl *mochi.Client, pk packets.Packet, r int64) {
	if strings.HasPrefix(pk.TopicName, "$SYS") {
		return
	}
	if r != 1 {
		h.del(retainedBucket, []byte(pk.TopicName))
		return
	}
	m := storedMessage(cl.ID, pk)
	m.T = storage.RetainedKey
	h.put(retainedBucket, []byte(pk.TopicName), m)
}

// OnRetainedExpired removes an expired retained message.
func (h *persistHook) OnRetainedExpired(topic string) {
	h.del(retainedBucket, []byte(topic))
}

// ---- inflight and queued messages ----

// OnQosPublish records a QoS 1/2 message in flight to, or queued for, a
// persistent session (and the PUBREC state of an inbound QoS 2 message). The
// value is encoded by the store's writer at commit time, and not at all if
// the message is completed first.
//
// The engine calls it again for the same message (same QueueSeq) when the
// message is given its packet id as it is sent, and when an outgoing QoS 2
// flow moves to PUBREL: the record is then rewritten (putHeld) with the
// packet id, so that a restarted broker resends the message under the same
// id with DUP=1, or resends the PUBREL [MQTT-4.4.0-1]. The rewrite replaces
// the pending put of the same key in the store's batch when the message is
// sent before the next commit (a connected subscriber): no extra record is
// written then.
func (h *persistHook) OnQosPublish(cl *mochi.Client, pk packets.Packet, sent int64, resends int) {
	if !sessionPersists(cl) {
		return
	}
	if pk.QueueSeq != 0 && pk.FixedHeader.Type != packets.Pubrec {
		h.putHeld(cl, pk.QueueSeq, sent)
		return
	}
	m, ok := h.inflightMessage(cl, pk, sent)
	if !ok {
		return
	}
	seq := pk.QueueSeq // the record's key and place in the queue
	if pk.FixedHeader.Type == packets.Pubrec || seq == 0 {
		seq = h.nextSeq()
	}
	h.put(inflightBucket, heldKey(cl.ID, &pk), inflightRecord{Message: m, Seq: seq})
}

var errTopicAliasOnly = errors.New("topic replaced by an outbound topic alias")

// inflightMessage is the stored form of the outgoing message pk of cl's
// session, sent at sent (0: not yet). It is false, and logged, for a
// PUBLISH whose topic the engine replaced by an outbound alias, which means
// nothing to a later connection: the record could not be replayed.
func (h *persistHook) inflightMessage(cl *mochi.Client, pk packets.Packet, sent int64) (storage.Message, bool) {
	if pk.FixedHeader.Type == packets.Publish && pk.TopicName == "" {
		h.logError("inflight message with only a topic alias not persisted", errTopicAliasOnly, "client", cl.ID)
		return storage.Message{}, false
	}
	m := storedMessage(cl.ID, pk)
	m.T = storage.InflightKey
	m.Sent = sent
	return m, true
}

// heldStripes is the number of locks that serialise the writes of outgoing
// messages' records, striped by client id (see putHeld).
const heldStripes = 32

// heldLock returns the lock of the records of session id's outgoing
// messages.
func (h *persistHook) heldLock(id string) *sync.Mutex {
	return &h.heldMu[maphash.String(h.heldSeed, id)%heldStripes]
}

// putHeld writes the record of the outgoing message seq of cl's session as
// the engine holds it now: queued (no packet id), sent (its packet id, and
// DUP=1 for any resend after a restart [MQTT-3.3.1-1]), or, for QoS 2,
// released (the PUBREL with its packet id). A message the engine no longer
// holds (acknowledged or dropped) is not written.
//
// Several goroutines report one message (the publisher queues it, the
// writer gives it its id, the reader takes its PUBREC or PUBACK): the state
// is read, and the put or delete enqueued, under the session's lock, so the
// store's last operation on the key always follows the engine's last state
// (a put from the publisher cannot land after the id's put, nor after the
// delete of an acknowledged message).
func (h *persistHook) putHeld(cl *mochi.Client, seq uint64, sent int64) {
	mu := h.heldLock(cl.ID)
	mu.Lock()
	defer mu.Unlock()
	cur, ok := h.heldState(cl, seq)
	if !ok {
		return
	}
	m, ok := h.inflightMessage(cl, cur, sent)
	if !ok {
		return
	}
	if cur.FixedHeader.Type == packets.Publish && cur.PacketID != 0 {
		m.FixedHeader.Dup = true // it may have reached the client
	}
	h.put(inflightBucket, queuedKey(cl.ID, seq), inflightRecord{Message: m, Seq: seq})
}

// heldState returns the engine's current packet for the message seq of
// cl's session. A session taken over meanwhile holds it in the new
// connection's state.
func (h *persistHook) heldState(cl *mochi.Client, seq uint64) (packets.Packet, bool) {
	if pk, ok := cl.State.Inflight.GetSeq(seq); ok {
		return pk, true
	}
	if h.srv != nil {
		if now, ok := h.srv.Clients.Get(cl.ID); ok && now != cl {
			return now.State.Inflight.GetSeq(seq)
		}
	}
	return packets.Packet{}, false
}

// delHeld removes the record of pk, held for session id; for an outgoing
// message under the session's lock (see putHeld).
func (h *persistHook) delHeld(id string, pk *packets.Packet) {
	if pk.QueueSeq == 0 || pk.FixedHeader.Type == packets.Pubrec {
		h.del(inflightBucket, heldKey(id, pk)) // an inbound QoS 2 state, or a legacy key
		return
	}
	mu := h.heldLock(id)
	mu.Lock()
	defer mu.Unlock()
	h.del(inflightBucket, queuedKey(id, pk.QueueSeq))
}

// inflightRecord is the stored form of an inflight or queued message: mochi's
// storage.Message (its JSON fields, flattened) and the record's place in the
// queue. Records written before Seq existed decode with Seq 0 and are
// returned first, in key order.
type inflightRecord struct {
	storage.Message
	Seq uint64 `json:"fg_seq,omitempty"`
}

// MarshalBinary encodes the record as JSON (storage.Message's own
// MarshalBinary, promoted, would drop Seq).
func (r inflightRecord) MarshalBinary() ([]byte, error) {
	return json.Marshal(r)
}

// nextSeq returns a number greater than any returned before, in this run
// and, as it is at least the wall clock in nanoseconds and at least the
// largest loaded (StoredInflightMessages), in earlier runs too.
func (h *persistHook) nextSeq() uint64 {
	for {
		last := h.seq.Load()
		n := max(last+1, uint64(time.Now().UnixNano()))
		if h.seq.CompareAndSwap(last, n) {
			return n
		}
	}
}

// OnQosComplete removes a message the client has acknowledged (PUBACK,
// PUBCOMP), or the state of a QoS 2 publish from the client it released
// (PUBREL).
func (h *persistHook) OnQosComplete(cl *mochi.Client, pk packets.Packet) {
	if sessionPersists(cl) {
		h.delHeld(cl.ID, &pk)
	}
}

// OnQosDropped removes a message the engine gave up (expired, queue full,
// clean start), except for an old connection whose session was taken over.
func (h *persistHook) OnQosDropped(cl *mochi.Client, pk packets.Packet) {
	if sessionPersists(cl) && !takenOver(cl) && h.current(cl) {
		h.delHeld(cl.ID, &pk)
	}
}

// storedMessage converts a publish (or an ack kept in flight) to its stored
// form. The topic alias is not kept: it belongs to one connection.
func storedMessage(clientID string, pk packets.Packet) storage.Message {
	props := pk.Properties.Copy(false)
	return storage.Message{
		Client:      clientID,
		Origin:      pk.Origin,
		FixedHeader: pk.FixedHeader,
		TopicName:   pk.TopicName,
		Payload:     pk.Payload,
		Created:     pk.Created,
		PacketID:    pk.PacketID,
		Properties: storage.MessageProperties{
			PayloadFormat:          props.PayloadFormat,
			PayloadFormatFlag:      props.PayloadFormatFlag,
			MessageExpiryInterval:  props.MessageExpiryInterval,
			ContentType:            props.ContentType,
			ResponseTopic:          props.ResponseTopic,
			CorrelationData:        props.CorrelationData,
			SubscriptionIdentifier: props.SubscriptionIdentifier,
			User:                   props.User,
		},
	}
}

// ---- $SYS counters ----

// OnSysInfoTick keeps the latest counters and writes them at most every
// sysInfoEvery.
func (h *persistHook) OnSysInfoTick(sys *system.Info) {
	info := sys.Clone()
	h.sysMu.Lock()
	h.sysLast = info
	due := time.Since(h.sysWritten) >= sysInfoEvery
	if due {
		h.sysWritten = time.Now()
	}
	h.sysMu.Unlock()
	if due {
		h.put(sysInfoBucket, []byte(sysInfoKey), storage.SystemInfo{Info: *info, ID: sysInfoKey, T: storage.SysInfoKey})
	}
}

// ---- loading at start ----

// StoredClients returns the persisted sessions. Undecodable records are
// logged and removed; only a failing store is an error (the engine then
// refuses to start).
func (h *persistHook) StoredClients() ([]storage.Client, error) {
	var out []storage.Client
	loaded := make(map[string]bool)
	err := h.load(clientsBucket, func(k, v []byte) error {
		var c storage.Client
		if err := c.UnmarshalBinary(v); err != nil || c.ID != string(k) {
			return errBadRecord
		}
		out = append(out, c)
		loaded[c.ID] = true
		return nil
	})
	h.mu.Lock()
	h.loaded = loaded
	for id := range loaded {
		h.stored[id] = true
	}
	h.mu.Unlock()
	return out, err
}

// StoredSubscriptions returns the subscriptions of the persisted sessions;
// those of sessions that no longer exist are removed.
func (h *persistHook) StoredSubscriptions() ([]storage.Subscription, error) {
	var out []storage.Subscription
	err := h.load(subsBucket, func(k, v []byte) error {
		var s storage.Subscription
		if err := s.UnmarshalBinary(v); err != nil || !bytes.Equal(k, subKey(s.Client, s.Filter)) {
			return errBadRecord
		}
		if !h.isLoaded(s.Client) {
			return errOrphan
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// StoredInflightMessages returns the inflight and queued messages of the
// persisted sessions in the order they were queued; those of sessions that
// no longer exist are removed. With the broker's queues it restores them
// itself and returns none (restoreInflight).
func (h *persistHook) StoredInflightMessages() ([]storage.Message, error) {
	if h.srv != nil && h.queues != nil {
		return nil, h.restoreInflight()
	}
	type loaded struct {
		key []byte
		r   inflightRecord
	}
	var recs []loaded
	err := h.load(inflightBucket, func(k, v []byte) error {
		var r inflightRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return errBadRecord
		}
		if _, ok := recordKeyOK(k, &r); !ok {
			return errBadRecord
		}
		if !h.isLoaded(r.Client) {
			return errOrphan
		}
		recs = append(recs, loaded{key: bytes.Clone(k), r: r})
		return nil
	})
	// Stable: records without a sequence (older versions) stay in key order.
	slices.SortStableFunc(recs, func(a, b loaded) int { return cmp.Compare(a.r.Seq, b.r.Seq) })
	prev := make(map[string]uint64)
	out := make([]storage.Message, len(recs))
	for i := range recs {
		r := &recs[i].r
		if r.Seq > h.seq.Load() {
			h.seq.Store(r.Seq) // before any new record: the engine loads before it serves
		}
		if r.FixedHeader.Type != packets.Pubrec {
			r.Message.QueueSeq = h.requeue(recs[i].key, r.Client, r.Seq, prev, func(seq uint64) inflightRecord {
				rec := *r
				rec.Seq = seq
				return rec
			})
		}
		out[i] = r.Message
	}
	return out, err
}

// recordKeyOK tells whether k is the key of record r: its queue key, or
// the key by packet id of an inbound QoS 2 state or of a message written
// before queue keys existed (legacy).
func recordKeyOK(k []byte, r *inflightRecord) (legacy, ok bool) {
	if r.FixedHeader.Type == packets.Pubrec {
		return false, bytes.Equal(k, inflightKey(r.Client, r.PacketID, true))
	}
	if bytes.Equal(k, queuedKey(r.Client, r.Seq)) {
		return false, true
	}
	return true, bytes.Equal(k, inflightKey(r.Client, r.PacketID, false))
}

// requeue returns the queue sequence of a restored message of session cid,
// stored under key with sequence seq, given the session's messages before
// it (oldest first; prev holds the last sequence given per session): its
// own sequence if it follows the one before, else the next one. A record
// whose key changes (one keyed by packet id, written by an older version;
// or out of order) is rewritten under its queue key (rec builds it).
func (h *persistHook) requeue(key []byte, cid string, seq uint64, prev map[string]uint64, rec func(seq uint64) inflightRecord) uint64 {
	if seq <= prev[cid] {
		seq = prev[cid] + 1
	}
	prev[cid] = seq
	if nk := queuedKey(cid, seq); !bytes.Equal(key, nk) {
		h.del(inflightBucket, key)
		h.put(inflightBucket, nk, rec(seq))
	}
	return seq
}

// restoreCandidate is one persisted inflight record, before it is decoded.
type restoreCandidate struct {
	key     []byte
	seq     uint64
	inbound bool // the PUBREC state of an inbound QoS 2 publish
}

// recordSeq reads the queue sequence number of an encoded inflightRecord
// without decoding it: encoding/json writes the fields in order, Seq last,
// so the value ends with "fg_seq":<digits>} (or has no Seq: 0). A record
// that does not even end with } is undecodable. Scanning the whole JSON of
// every queued message only to order them took most of the restore time.
func recordSeq(v []byte) (uint64, bool) {
	if len(v) < 2 || v[0] != '{' || v[len(v)-1] != '}' {
		return 0, false
	}
	const key = `"fg_seq":`
	end := len(v) - 1
	start := end
	for start > 0 && v[start-1] >= '0' && v[start-1] <= '9' {
		start--
	}
	if start == end || start < len(key) || string(v[start-len(key):start]) != key {
		return 0, true // no Seq (written before it existed)
	}
	seq, err := strconv.ParseUint(string(v[start:end]), 10, 64)
	return seq, err == nil
}

// restoreInflight puts the persisted inflight and queued messages back into
// the engine's sessions without ever holding more than the queue limits
// and the memory budget allow (the engine's own loading decoded every
// record at once: 200 queued 1 MB messages took over 1 GiB at start).
//
// A first pass over the bucket reads only keys and queue sequence numbers,
// and removes the records of unknown sessions. Then, session by session,
// the records are read and decoded newest first, each admitted against the
// session's max_queued / max_queued_bytes and the budget; at the first
// refusal the rest (older) are deleted from the store and counted
// (Stats.QueuedRestoreDropped). The kept messages go to the engine oldest
// first. Peak memory: what is kept, plus one record being decoded.
func (h *persistHook) restoreInflight() error {
	bySession := make(map[string][]restoreCandidate)
	var remove [][]byte
	bad := 0
	err := h.db.ForEach(inflightBucket, func(k, v []byte) error {
		i := bytes.IndexByte(k, 0)
		seq, ok := recordSeq(v)
		queueKey := len(k) == i+10 && k[i+1] == 'q'
		if i <= 0 || (len(k) != i+3 && !(len(k) == i+4 && k[i+3] == 'i') && !queueKey) || !ok {
			bad++
			remove = append(remove, bytes.Clone(k))
			return nil
		}
		cid := string(k[:i])
		if !h.isLoaded(cid) {
			remove = append(remove, bytes.Clone(k))
			return nil
		}
		bySession[cid] = append(bySession[cid], restoreCandidate{key: bytes.Clone(k), seq: seq, inbound: len(k) == i+4})
		if seq > h.seq.Load() {
			h.seq.Store(seq) // before any new record: the engine loads before it serves
		}
		return nil
	})
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(bySession))
	for id := range bySession {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		cands := bySession[id]
		delete(bySession, id)
		// Inbound QoS 2 states first (always kept), then the queue newest
		// first; records without a sequence (older versions) are the
		// oldest, in key order.
		slices.SortStableFunc(cands, func(a, b restoreCandidate) int {
			if a.inbound != b.inbound {
				if a.inbound {
					return -1
				}
				return 1
			}
			return cmp.Compare(b.seq, a.seq)
		})
		cl, ok := h.srv.Clients.Get(id)
		if !ok {
			for _, c := range cands {
				remove = append(remove, c.key)
			}
			continue
		}
		rs := h.queues.newRestoreSession()
		var kept []packets.Packet
		var keptKeys [][]byte
		dropped := 0
		ids := make(map[uint16]bool) // packet ids of the newer outgoing records

		for j, c := range cands {
			var r inflightRecord
			var decodeErr error
			err := h.db.GetFunc(inflightBucket, c.key, func(v []byte) error {
				decodeErr = json.Unmarshal(v, &r) // copies what it keeps: v is the mmap
				return nil
			})
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if _, keyOK := recordKeyOK(c.key, &r); decodeErr != nil || !keyOK {
				bad++
				remove = append(remove, c.key)
				continue
			}
			pk := restoredPacket(&r.Message)
			if pk.FixedHeader.Type == packets.Pubrec {
				// An inbound QoS 2 flow's state (the client's packet ids):
				// a few bytes, always kept.
				cl.State.InboundQos2.Set(pk)
				continue
			}
			if pk.PacketID != 0 {
				// A message sent under this id (or its PUBREL). An older
				// record with the same id is a message completed before the
				// id was given again, its delete lost in a crash: removed.
				if ids[pk.PacketID] {
					remove = append(remove, c.key)
					continue
				}
				ids[pk.PacketID] = true
			}
			if pk.FixedHeader.Type == packets.Publish && !rs.admit(queuedSize(&pk)) {
				// This one and every older one do not fit.
				for _, old := range cands[j:] {
					remove = append(remove, old.key)
				}
				dropped = len(cands) - j
				break
			}
			pk.QueueSeq = r.Seq
			kept = append(kept, pk)
			keptKeys = append(keptKeys, c.key)
		}
		slices.Reverse(kept)
		slices.Reverse(keptKeys)
		prev := make(map[string]uint64, 1)
		for j := range kept {
			pk := &kept[j]
			pk.QueueSeq = h.requeue(keptKeys[j], id, pk.QueueSeq, prev, func(seq uint64) inflightRecord {
				m := storedMessage(id, *pk)
				m.T = storage.InflightKey
				return inflightRecord{Message: m, Seq: seq}
			})
		}
		h.queues.adopt(cl, kept)
		if dropped > 0 {
			h.queues.logRestoreDrops(id, dropped, rs.refusal)
		}
	}
	if bad > 0 {
		h.log.Warn("undecodable persisted records removed", "bucket", inflightBucket, "count", bad)
	}
	for _, k := range remove {
		h.del(inflightBucket, k)
	}
	return nil
}

// restoredPacket is storage.Message.ToPacket without its deep copy: the
// record was just decoded, nothing else refers to its slices, and a copy of
// a 1 MB payload per message is what the restore must not allocate.
func restoredPacket(m *storage.Message) packets.Packet {
	pk := packets.Packet{
		FixedHeader: m.FixedHeader,
		PacketID:    m.PacketID,
		TopicName:   m.TopicName,
		Payload:     m.Payload,
		Origin:      m.Origin,
		Created:     m.Created,
		Properties: packets.Properties{
			PayloadFormat:          m.Properties.PayloadFormat,
			PayloadFormatFlag:      m.Properties.PayloadFormatFlag,
			MessageExpiryInterval:  m.Properties.MessageExpiryInterval,
			ContentType:            m.Properties.ContentType,
			ResponseTopic:          m.Properties.ResponseTopic,
			CorrelationData:        m.Properties.CorrelationData,
			SubscriptionIdentifier: m.Properties.SubscriptionIdentifier,
			TopicAlias:             m.Properties.TopicAlias,
			User:                   m.Properties.User,
		},
	}
	return pk
}

// StoredRetainedMessages returns the retained messages.
func (h *persistHook) StoredRetainedMessages() ([]storage.Message, error) {
	var out []storage.Message
	err := h.load(retainedBucket, func(k, v []byte) error {
		var m storage.Message
		if err := m.UnmarshalBinary(v); err != nil || m.TopicName != string(k) {
			return errBadRecord
		}
		out = append(out, m)
		return nil
	})
	return out, err
}

// StoredSysInfo returns the last persisted $SYS counters, if any.
func (h *persistHook) StoredSysInfo() (storage.SystemInfo, error) {
	var v storage.SystemInfo
	b, err := h.db.Get(sysInfoBucket, []byte(sysInfoKey))
	if errors.Is(err, ErrNotFound) {
		return v, nil
	}
	if err != nil {
		return v, err
	}
	if err := v.UnmarshalBinary(b); err != nil {
		h.log.Warn("stored $SYS counters unreadable; starting from zero", "error", err)
		return storage.SystemInfo{}, nil
	}
	return v, nil
}

var (
	errBadRecord = errors.New("undecodable record")
	errOrphan    = errors.New("record of a session that no longer exists")
)

// load reads a bucket with decode, which returns errBadRecord or errOrphan
// for records to remove; those are deleted (and bad ones logged) after the
// read transaction.
func (h *persistHook) load(bucket string, decode func(k, v []byte) error) error {
	var remove [][]byte
	bad := 0
	err := h.db.ForEach(bucket, func(k, v []byte) error {
		switch err := decode(k, v); {
		case err == nil:
		case errors.Is(err, errBadRecord):
			bad++
			remove = append(remove, bytes.Clone(k))
		case errors.Is(err, errOrphan):
			remove = append(remove, bytes.Clone(k))
		default:
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if bad > 0 {
		h.log.Warn("undecodable persisted records removed", "bucket", bucket, "count", bad)
	}
	for _, k := range remove {
		h.del(bucket, k)
	}
	return nil
}

func (h *persistHook) isLoaded(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.loaded[id]
}

// ---- writes ----

// The store only fails an enqueue after it was closed (or for an empty key,
// which these keys never are): such a failure is logged, rate-limited.

func (h *persistHook) put(bucket string, key []byte, v interface{ MarshalBinary() ([]byte, error) }) {
	if err := h.db.PutMarshaler(bucket, key, v); err != nil {
		h.logError("persist write failed", err, "bucket", bucket)
	}
}

func (h *persistHook) del(bucket string, key []byte) {
	if err := h.db.Delete(bucket, key); err != nil {
		h.logError("persist delete failed", err, "bucket", bucket)
	}
}

func (h *persistHook) deletePrefix(bucket string, prefix []byte) {
	if err := h.db.DeletePrefix(bucket, prefix); err != nil {
		h.logError("persist delete failed", err, "bucket", bucket)
	}
}

func (h *persistHook) logError(msg string, err error, args ...any) {
	h.logs.Error("", msg, append(args, "error", err)...)
}
