// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/xid"

	"github.com/mochi-mqtt/server/v2/packets"
)

const (
	defaultKeepalive             uint16 = 10 // the default connection keepalive value in seconds.
	defaultClientProtocolVersion byte   = 4  // the default mqtt protocol version of connecting clients (if somehow unspecified).
	minimumKeepalive             uint16 = 5  // the minimum recommended keepalive - values under with display a warning.
)

var (
	ErrMinimumKeepalive = errors.New("client keepalive is below minimum recommended value and may exhibit connection instability")
)

// ReadFn is the function signature for the function used for reading and processing new packets.
type ReadFn func(*Client, packets.Packet) error

// Clients contains a map of the clients known by the broker.
type Clients struct {
	internal map[string]*Client // clients known by the broker, keyed on client id.
	sync.RWMutex
}

// NewClients returns an instance of Clients.
func NewClients() *Clients {
	return &Clients{
		internal: make(map[string]*Client),
	}
}

// Add adds a new client to the clients map, keyed on client id.
func (cl *Clients) Add(val *Client) {
	cl.Lock()
	defer cl.Unlock()
	cl.internal[val.ID] = val
}

// GetAll returns all the clients.
func (cl *Clients) GetAll() map[string]*Client {
	cl.RLock()
	defer cl.RUnlock()
	m := map[string]*Client{}
	for k, v := range cl.internal {
		m[k] = v
	}
	return m
}

// appendAll appends every client to dst. fieldgate patch (idle memory):
// GetAll's new map each time, without the map.
func (cl *Clients) appendAll(dst []*Client) []*Client {
	cl.RLock()
	defer cl.RUnlock()
	for _, v := range cl.internal {
		dst = append(dst, v)
	}
	return dst
}

// Get returns the value of a client if it exists.
func (cl *Clients) Get(id string) (*Client, bool) {
	cl.RLock()
	defer cl.RUnlock()
	val, ok := cl.internal[id]
	return val, ok
}

// Len returns the length of the clients map.
func (cl *Clients) Len() int {
	cl.RLock()
	defer cl.RUnlock()
	val := len(cl.internal)
	return val
}

// Delete removes a client from the internal map.
func (cl *Clients) Delete(id string) {
	cl.Lock()
	defer cl.Unlock()
	delete(cl.internal, id)
}

// GetByListener returns clients matching a listener id.
func (cl *Clients) GetByListener(id string) []*Client {
	cl.RLock()
	defer cl.RUnlock()
	// fieldgate patch: len, not cl.Len(): taking the read lock twice
	// deadlocks when a writer (Delete) is waiting in between.
	clients := make([]*Client, 0, len(cl.internal))
	for _, client := range cl.internal {
		if client.Net.Listener == id && !client.Closed() {
			clients = append(clients, client)
		}
	}
	return clients
}

// Client contains information about a client known by the broker.
type Client struct {
	Properties   ClientProperties // client properties
	State        ClientState      // the operational state of the client.
	Net          ClientConnection // network connection state of the client
	ID           string           // the client id.
	ops          *ops             // ops provides a reference to server ops.
	sync.RWMutex                  // mutex
}

// ClientConnection contains the connection transport and metadata for the client.
type ClientConnection struct {
	Conn     net.Conn      // the net.Conn used to establish the connection
	bconn    *connReader   // a buffered net.Conn for reading packets; fieldgate patch (idle memory): was a bufio.Reader
	outbuf   *bytes.Buffer // a buffer for writing packets
	Remote   string        // the remote address of the client
	Listener string        // listener id of the client
	// fieldgate patch (deferred acks): true while the reading goroutine
	// handles a packet; what is written meanwhile (its PUBACKs, PUBRECs…)
	// waits in outbuf and goes out in one write when the reader has no more
	// buffered input (Client.Read) or another write flushes. (fieldgate
	// patch (parked reads): after Listener, with the bools, to keep the
	// struct small.)
	deferWrites atomic.Bool
	Inline      bool // if true, the client is the built-in 'inline' embedded client
	parks       bool // fieldgate patch (parked reads): Conn is a ReadParker that parks
}

// ClientProperties contains the properties which define the client behaviour.
type ClientProperties struct {
	Props           packets.Properties
	Will            Will
	Username        []byte
	ProtocolVersion byte
	Clean           bool
}

// Will contains the last will and testament details for a client connection.
//
// fieldgate patch (will properties): the will's MQTT 5 publication
// properties are kept (upstream kept only the user properties). The field
// list must stay identical to storage.ClientWill, which converts to Will.
type Will struct {
	Payload               []byte                 // -
	User                  []packets.UserProperty // -
	TopicName             string                 // -
	Flag                  uint32                 // 0,1
	WillDelayInterval     uint32                 // -
	Qos                   byte                   // -
	Retain                bool                   // -
	CorrelationData       []byte                 // fieldgate patch (will properties)
	ContentType           string                 // fieldgate patch (will properties)
	ResponseTopic         string                 // fieldgate patch (will properties)
	MessageExpiryInterval uint32                 // fieldgate patch (will properties)
	PayloadFormat         byte                   // fieldgate patch (will properties)
	PayloadFormatFlag     bool                   // fieldgate patch (will properties)
}

// Packet returns the will as the PUBLISH packet to send, from the client
// origin, created now. fieldgate patch (will properties).
func (w Will) Packet(origin string) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{
			Type:   packets.Publish,
			Retain: w.Retain, // [MQTT-3.1.2-14] [MQTT-3.1.2-15]
			Qos:    w.Qos,
		},
		TopicName: w.TopicName,
		Payload:   w.Payload,
		Properties: packets.Properties{ // [MQTT-3.1.3-10] ff.
			User:                  w.User,
			CorrelationData:       w.CorrelationData,
			ContentType:           w.ContentType,
			ResponseTopic:         w.ResponseTopic,
			MessageExpiryInterval: w.MessageExpiryInterval,
			PayloadFormat:         w.PayloadFormat,
			PayloadFormatFlag:     w.PayloadFormatFlag,
		},
		Origin:  origin,
		Created: time.Now().Unix(),
	}
}

// ClientState tracks the state of the client.
type ClientState struct {
	TopicAliases    TopicAliases         // a map of topic aliases
	stopCause       atomic.Value         // reason for stopping
	Inflight        *Inflight            // a map of in-flight qos messages
	InboundQos2     *Inflight            // fieldgate patch (inbound QoS 2 state): PUBRECs of client publishes awaiting PUBREL, by the client's packet id
	Subscriptions   *Subscriptions       // a map of the subscription filters a client maintains
	disconnected    int64                // the time the client disconnected in unix time, for calculating expiry
	outbound        *outboundPacketQueue // queue for pending outbound packets; fieldgate patch (idle memory): grows as needed, was a channel
	endOnce         sync.Once            // only end once
	isTakenOver     atomic.Bool          // used to identify orphaned clients
	packetID        uint32               // the current highest packetID
	sendMu          sync.Mutex           // fieldgate patch: serialises sendWaiting, so waiting packets leave in order
	aliasMu         sync.Mutex           // fieldgate patch (topic aliases): held from a server alias assignment until its packet is written
	writerStarted   atomic.Bool          // fieldgate patch: the write loop is running (started on first use)
	open            context.Context      // indicate that the client is open for packet exchange
	cancelOpen      context.CancelFunc   // cancel function for open context
	outboundQty     int32                // number of messages currently in the outbound queue
	Keepalive       uint16               // the number of seconds the connection can wait
	ServerKeepalive bool                 // keepalive was set by the server

	// fieldgate patch (retained flow control): pending retained
	// deliveries, nil until a subscription has more than fit at once.
	retained atomic.Pointer[retainedFeed]
}

// newClient returns a new instance of Client. This is almost exclusively used by Server
// for creating new clients, but it lives here because it's not dependent.
func newClient(c net.Conn, o *ops) *Client {
	ctx, cancel := context.WithCancel(context.Background())
	cl := &Client{
		State: ClientState{
			Inflight:      NewInflights(),
			InboundQos2:   NewInflights(),
			Subscriptions: NewSubscriptions(),
			TopicAliases:  NewTopicAliases(o.options.Capabilities.TopicAliasMaximum),
			open:          ctx,
			cancelOpen:    cancel,
			Keepalive:     defaultKeepalive,
			outbound:      newOutboundPacketQueue(int(writesPending(c, o))), // fieldgate patch (idle memory)
		},
		Properties: ClientProperties{
			ProtocolVersion: defaultClientProtocolVersion, // default protocol version
		},
		ops: o,
	}

	if c != nil {
		cl.Net = ClientConnection{
			Conn:   c,
			bconn:  newConnReader(c, o.options.ClientNetReadBufferSize), // fieldgate patch (idle memory)
			Remote: c.RemoteAddr().String(),
		}
		cl.setParker(c) // fieldgate patch (parked reads)
	}

	return cl
}

// writesPending is the capacity of a client's outbound queue: the server's
// MaximumClientWritesPending, or less when the connection asks for less
// with a MaxWritesPending method (in-process sessions, whose reader drains
// the queue at once: the 64 KB of the default was most of what one held).
// fieldgate patch (per-session memory).
func writesPending(c net.Conn, o *ops) int32 {
	n := o.options.Capabilities.MaximumClientWritesPending
	if w, ok := c.(interface{ MaxWritesPending() int }); ok {
		if m := w.MaxWritesPending(); m > 0 && int64(m) < int64(n) {
			n = int32(m)
		}
	}
	return n
}

// WriteLoop ranges over pending outbound messages and writes them to the client connection.
func (cl *Client) WriteLoop() {
	cl.State.writerStarted.Store(true)
	cl.writeLoop()
}

// writerIdle is how long a write loop waits for a packet before it ends
// (a variable for tests). fieldgate patch (idle memory).
var writerIdle = 10 * time.Second

// startWriter starts the write loop when a packet is queued for the client
// and none runs (the first time, or after it ended idle): an idle
// connection does not hold a writer goroutine and its stack. Call it after
// queueing. fieldgate patch (idle memory).
func (cl *Client) startWriter() {
	if !cl.State.writerStarted.Load() && cl.State.writerStarted.CompareAndSwap(false, true) {
		go cl.writeLoop()
	}
}

func (cl *Client) writeLoop() {
	// fieldgate patch (idle memory): the loop ends after writerIdle with
	// nothing to write (its stack, often 8 KiB, is freed); the next packet
	// queued starts it again (startWriter).
	idle := time.NewTimer(writerIdle)
	defer idle.Stop()
	for {
		pk, res := cl.State.outbound.pop(cl.State.open.Done(), idle, writerIdle) // fieldgate patch (idle memory): a queue, not a channel
		switch res {
		case popClosed:
			return
		case popIdle:
			cl.State.writerStarted.Store(false)
			// A packet queued before the flag was cleared found the loop
			// running: carry on for it, unless a new loop took it.
			if cl.State.outbound.Len() == 0 || !cl.State.writerStarted.CompareAndSwap(false, true) {
				return
			}
			continue
		}
		if err := cl.WritePacket(*pk); err != nil {
			// TODO : Figure out what to do with error
			cl.ops.log.Debug("failed publishing packet", "error", err, "client", cl.ID, "packet", pk)
		}
		atomic.AddInt32(&cl.State.outboundQty, -1)
		putPacket(pk) // fieldgate patch (hot path): queued packets are pooled
		if cl.State.outbound.Len() <= retainedQueueRoom/2 {
			cl.wakeRetained() // fieldgate patch (retained flow control)
		}
		// fieldgate patch (no QoS>0 drop): packets that found the queue
		// full wait in the inflight store; refill from them.
		if cl.State.Inflight.Waiting() > 0 && cl.State.outbound.Len() <= cl.State.outbound.Cap()/2 {
			cl.sendWaiting()
		}
	}
}

// ParseConnect parses the connect parameters and properties for a client.
func (cl *Client) ParseConnect(lid string, pk packets.Packet) {
	cl.Net.Listener = lid

	cl.Properties.ProtocolVersion = pk.ProtocolVersion
	cl.Properties.Username = pk.Connect.Username
	cl.Properties.Clean = pk.Connect.Clean
	cl.Properties.Props = pk.Properties.Copy(false)

	if cl.Properties.Props.ReceiveMaximum > cl.ops.options.Capabilities.MaximumInflight { // 3.3.4 Non-normative
		cl.Properties.Props.ReceiveMaximum = cl.ops.options.Capabilities.MaximumInflight
	}

	// fieldgate patch (keepalive 0): 0 disables keep alive, which in-process
	// sessions and many devices use on purpose; only a small non-zero value
	// is worth a warning. fieldgate patch (keepalive minimum): the minimum
	// itself is not below the minimum (upstream warned for 5 with minimum 5).
	if pk.Connect.Keepalive > 0 && pk.Connect.Keepalive < minimumKeepalive {
		cl.ops.log.Warn(
			ErrMinimumKeepalive.Error(),
			"client", pk.Connect.ClientIdentifier, // cl.ID is set below
			"keepalive", pk.Connect.Keepalive,
			"minimum", minimumKeepalive,
		)
	}

	cl.State.Keepalive = pk.Connect.Keepalive                                              // [MQTT-3.2.2-22]
	cl.State.Inflight.ResetReceiveQuota(int32(cl.ops.options.Capabilities.ReceiveMaximum)) // server receive max per client
	cl.State.Inflight.ResetSendQuota(int32(cl.Properties.Props.ReceiveMaximum))            // client receive max
	cl.State.TopicAliases.Outbound = NewOutboundTopicAliases(cl.Properties.Props.TopicAliasMaximum)

	cl.ID = pk.Connect.ClientIdentifier
	if cl.ID == "" {
		cl.ID = xid.New().String() // [MQTT-3.1.3-6] [MQTT-3.1.3-7]
		cl.Properties.Props.AssignedClientID = cl.ID
	}

	if pk.Connect.WillFlag {
		cl.Properties.Will = Will{
			Qos:               pk.Connect.WillQos,
			Retain:            pk.Connect.WillRetain,
			Payload:           pk.Connect.WillPayload,
			TopicName:         pk.Connect.WillTopic,
			WillDelayInterval: pk.Connect.WillProperties.WillDelayInterval,
			User:              pk.Connect.WillProperties.User,
			// fieldgate patch (will properties)
			CorrelationData:       pk.Connect.WillProperties.CorrelationData,
			ContentType:           pk.Connect.WillProperties.ContentType,
			ResponseTopic:         pk.Connect.WillProperties.ResponseTopic,
			MessageExpiryInterval: pk.Connect.WillProperties.MessageExpiryInterval,
			PayloadFormat:         pk.Connect.WillProperties.PayloadFormat,
			PayloadFormatFlag:     pk.Connect.WillProperties.PayloadFormatFlag,
		}
		if pk.Properties.SessionExpiryIntervalFlag &&
			pk.Properties.SessionExpiryInterval < pk.Connect.WillProperties.WillDelayInterval {
			cl.Properties.Will.WillDelayInterval = pk.Properties.SessionExpiryInterval
		}
		if pk.Connect.WillFlag {
			cl.Properties.Will.Flag = 1 // atomic for checking
		}
	}
}

// refreshDeadline refreshes the read/write deadline for the net.Conn connection.
func (cl *Client) refreshDeadline(keepalive uint16) {
	var expiry time.Time // nil time can be used to disable deadline if keepalive = 0
	if keepalive > 0 {
		// fieldgate patch (keep alive): one and a half periods as a duration;
		// keepalive+keepalive/2 in whole seconds made 1 s time out after 1 s.
		expiry = time.Now().Add(time.Duration(keepalive) * time.Second * 3 / 2) // [MQTT-3.1.2-22] [MQTT-3.1.2-24]
	}

	if cl.Net.Conn != nil {
		_ = cl.Net.Conn.SetDeadline(expiry) // [MQTT-3.1.2-22]
	}
}

// NextPacketID returns the next available (unused) packet id for the client.
// If no unused packet ids are available, an error is returned and the client
// should be disconnected.
func (cl *Client) NextPacketID() (i uint32, err error) {
	cl.Lock()
	defer cl.Unlock()

	i = atomic.LoadUint32(&cl.State.packetID)
	started := i
	overflowed := false
	for {
		if overflowed && i == started {
			return 0, packets.ErrQuotaExceeded
		}

		if i >= cl.ops.options.Capabilities.maximumPacketID {
			overflowed = true
			i = 0
			continue
		}

		i++

		if _, ok := cl.State.Inflight.Get(uint16(i)); !ok {
			atomic.StoreUint32(&cl.State.packetID, i)
			return i, nil
		}
	}
}

// sendWaiting queues the packets waiting in the inflight store (Expiry < 0)
// for sending, oldest first, as far as the send quota and the outbound queue
// allow. They stay in flight until acknowledged. fieldgate patch (send waiting).
func (cl *Client) sendWaiting() {
	cl.State.sendMu.Lock()
	defer cl.State.sendMu.Unlock()
	in := cl.State.Inflight
	for in.Waiting() > 0 && !cl.Closed() {
		if atomic.LoadInt32(&in.maximumSendQuota) > 0 && atomic.LoadInt32(&in.sendQuota) <= 0 {
			return
		}
		if cl.State.outbound.Len() >= cl.State.outbound.Cap() {
			return // the write loop calls again when it has drained the queue
		}
		pk, newID, ok := in.TakeNext()
		if !ok {
			return
		}
		if newID {
			// fieldgate patch (persisted packet ids): the id is recorded
			// before the packet can leave (and be acknowledged), so that a
			// restarted broker resends it under the same id [MQTT-4.4.0-1].
			cl.ops.hooks.OnQosPublish(cl, pk, pk.Created, 0)
		}
		in.DecreaseSendQuota()
		out := getPacket()
		*out = pk
		if !cl.State.outbound.push(out) { // only this function and publishers fill the queue: put it back in front
			putPacket(out)
			in.IncreaseSendQuota()
			in.Untake(pk)
			return
		}
		atomic.AddInt32(&cl.State.outboundQty, 1)
		cl.startWriter()
	}
}

// ResendInflightMessages attempts to resend any pending inflight messages to connected clients.
//
// fieldgate patch (resend): upstream wrote every inflight message at once,
// all with DUP=1, ignoring the client's receive maximum. Now the PUBREL (and
// inbound QoS 2 acks) are resent first, then the PUBLISH packets in queue
// order as far as the send quota allows, DUP=1 only on those written before
// [MQTT-3.3.1-1]; the rest wait and leave as acknowledgements return quota
// (processPacket calls sendWaiting).
func (cl *Client) ResendInflightMessages(force bool) error {
	in := cl.State.Inflight
	if in.Len() == 0 {
		return nil
	}

	for _, tk := range in.Requeue() {
		cl.ops.hooks.OnQosPublish(cl, tk, tk.Created, 0)
		err := cl.WritePacket(tk)
		if err != nil {
			return err
		}

		switch tk.FixedHeader.Type {
		case packets.Puback, packets.Pubcomp:
			if ok := in.Delete(tk.PacketID); ok {
				cl.ops.hooks.OnQosComplete(cl, tk)
				atomic.AddInt64(&cl.ops.info.Inflight, -1)
			}
		case packets.Pubrel:
			in.DecreaseSendQuota() // still counts until its PUBCOMP [MQTT-4.9.0-2]
		}
	}

	cl.State.sendMu.Lock()
	defer cl.State.sendMu.Unlock()
	for in.Waiting() > 0 {
		if atomic.LoadInt32(&in.maximumSendQuota) > 0 && atomic.LoadInt32(&in.sendQuota) <= 0 {
			break
		}
		pk, newID, ok := in.TakeNext()
		if !ok {
			break
		}
		if newID {
			cl.ops.hooks.OnQosPublish(cl, pk, pk.Created, 0) // fieldgate patch (persisted packet ids)
		}
		in.DecreaseSendQuota()
		if err := cl.WritePacket(pk); err != nil {
			return err
		}
	}

	return nil
}

// ClearInflights deletes all inflight messages for the client, e.g. for a disconnected user with a clean session.
func (cl *Client) ClearInflights() {
	for _, tk := range cl.State.InboundQos2.GetAll(false) { // fieldgate patch (inbound QoS 2 state)
		if ok := cl.State.InboundQos2.Delete(tk.PacketID); ok {
			cl.ops.hooks.OnQosDropped(cl, tk)
			atomic.AddInt64(&cl.ops.info.Inflight, -1)
		}
	}
	// fieldgate patch (queue without ids): the queue is taken whole, not
	// copied and sorted first.
	cl.State.Inflight.TakeAll(func(tk packets.Packet) {
		cl.ops.hooks.OnQosDropped(cl, tk)
		atomic.AddInt64(&cl.ops.info.Inflight, -1)
	})
}

// ClearExpiredInflights deletes any inflight messages which have expired.
func (cl *Client) ClearExpiredInflights(now, maximumExpiry int64) []uint16 {
	deleted := []uint16{}
	// fieldgate patch (first delivery): waiting ones expire too.
	// fieldgate patch (queue without ids): the expired ones are picked
	// without sorting the whole queue, and removed by sequence (a queued
	// message has no packet id yet: 0 in the list returned).
	for _, tk := range cl.State.Inflight.Expired(now, maximumExpiry) { // [MQTT-3.3.2-5]
		if _, ok := cl.State.Inflight.DeleteSeq(tk.QueueSeq); ok {
			cl.ops.hooks.OnQosDropped(cl, tk)
			atomic.AddInt64(&cl.ops.info.Inflight, -1)
			if tk.PacketID != 0 { // a queued message has no id yet
				deleted = append(deleted, tk.PacketID)
			}
		}
	}
	slices.Sort(deleted)

	return deleted
}

// Read reads incoming packets from the connected client and transforms them into
// packets to be handled by the packetHandler.
func (cl *Client) Read(packetHandler ReadFn) error {
	return cl.read(packetHandler, false)
}

// read is Read; resumed: the loop was started by waking a parked
// connection. fieldgate patch (parked reads): it returns errReadParked
// when it parked the connection.
func (cl *Client) read(packetHandler ReadFn, resumed bool) error {
	var err error

	for {
		if cl.Closed() {
			return nil
		}

		// fieldgate patch (deferred acks): before waiting for the network,
		// write out what was deferred while the packets already read were
		// handled. (Done here rather than in a reader wrapper, which would
		// deepen the idle reader's stack past 4 KiB.)
		if cl.Net.bconn.Buffered() == 0 {
			if err := cl.flushDeferred(); err != nil {
				return err
			}
			// fieldgate patch (parked reads): the keep alive deadline
			// is refreshed once per read from the network, not per packet.
			if cl.Net.parks {
				if cl.waitOrPark(resumed) {
					return errReadParked
				}
				resumed = false
			}
		}

		if !cl.Net.parks {
			cl.refreshDeadline(cl.State.Keepalive)
		}
		fh := new(packets.FixedHeader)
		err = cl.ReadFixedHeader(fh)
		if err != nil {
			return err
		}

		err = cl.readAndHandle(packetHandler, fh) // fieldgate patch (idle memory): the packet lives in its frame
		if err != nil {
			return err
		}
	}
}

// Stop instructs the client to shut down all processing goroutines and disconnect.
func (cl *Client) Stop(err error) {
	cl.State.endOnce.Do(func() {

		if cl.Net.Conn != nil {
			_ = cl.Net.Conn.Close() // omit close error
		}

		if err != nil {
			cl.State.stopCause.Store(err)
		}

		if cl.State.cancelOpen != nil {
			cl.State.cancelOpen()
		}

		atomic.StoreInt64(&cl.State.disconnected, time.Now().Unix())
	})
}

// StopCause returns the reason the client connection was stopped, if any.
func (cl *Client) StopCause() error {
	if cl.State.stopCause.Load() == nil {
		return nil
	}
	return cl.State.stopCause.Load().(error)
}

// StopTime returns the the time the client disconnected in unix time, else zero.
func (cl *Client) StopTime() int64 {
	return atomic.LoadInt64(&cl.State.disconnected)
}

// Closed returns true if client connection is closed.
func (cl *Client) Closed() bool {
	return cl.State.open == nil || cl.State.open.Err() != nil
}

func (cl *Client) IsTakenOver() bool {
	return cl.State.isTakenOver.Load()
}

// ReadFixedHeader reads in the values of the next packet's fixed header.
func (cl *Client) ReadFixedHeader(fh *packets.FixedHeader) error {
	if cl.Net.bconn == nil {
		return ErrConnectionClosed
	}

	fresh := cl.Net.bconn.Buffered() == 0 || cl.Net.bconn.takeFresh() // fieldgate patch (cross-connection order; parked reads)
	b, err := cl.Net.bconn.ReadByte()
	if err != nil {
		if isPacketError(err) { // fieldgate patch: a listener refused the packet (a reason code)
			cl.logBadPacket("malformed packet", nil, err)
		}
		return err
	}

	err = fh.Decode(b)
	if err != nil {
		cl.logBadPacket("malformed packet", &packets.Packet{FixedHeader: *fh}, err) // fieldgate patch (no secrets in logs)
		return err
	}
	if fresh && fh.Type == packets.Publish {
		yieldToEarlierReaders() // fieldgate patch (cross-connection order)
	}

	var bu int
	fh.Remaining, bu, err = packets.DecodeLength(cl.Net.bconn)
	if err != nil {
		if isPacketError(err) { // fieldgate patch (no secrets in logs)
			cl.logBadPacket("malformed packet", &packets.Packet{FixedHeader: *fh}, err)
		}
		return err
	}

	// fieldgate patch (memory bomb): the whole packet's size, with the bu
	// bytes of its length, as MQTT 5 defines Maximum Packet Size.
	if cl.ops.options.Capabilities.MaximumPacketSize > 0 && uint32(fh.Remaining+1+bu) > cl.ops.options.Capabilities.MaximumPacketSize {
		// fieldgate patch (no secrets in logs): logged, rate-limited.
		cl.logBadPacket("packet over the maximum size", &packets.Packet{FixedHeader: *fh}, packets.ErrPacketTooLarge)
		return packets.ErrPacketTooLarge // [MQTT-3.2.2-15]
	}

	atomic.AddInt64(&cl.ops.info.BytesReceived, int64(bu+1))
	return nil
}

// ReadPacket reads the remaining buffer into an MQTT packet.
func (cl *Client) ReadPacket(fh *packets.FixedHeader) (pk packets.Packet, err error) {
	atomic.AddInt64(&cl.ops.info.PacketsReceived, 1)

	pk.ProtocolVersion = cl.Properties.ProtocolVersion // inherit client protocol version for decoding
	pk.FixedHeader = *fh
	// fieldgate patch (memory bomb): upstream allocated the whole announced
	// length before reading a byte of it; readBody grows the buffer as bytes
	// arrive and counts it against Options.PacketBudget.
	p, err := cl.readBody(pk.FixedHeader.Remaining)
	if err != nil {
		if isPacketError(err) {
			cl.logBadPacket("packet refused", &pk, err)
		}
		return pk, err
	}
	n := len(p)

	atomic.AddInt64(&cl.ops.info.BytesReceived, int64(n))

	// fieldgate patch (hot path): p is allocated for this packet alone, so
	// the decoded packet can keep referring to it; upstream decoded from a
	// second copy of it.
	px := p
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectDecode(px)
	case packets.Disconnect:
		err = pk.DisconnectDecode(px)
	case packets.Connack:
		err = pk.ConnackDecode(px)
	case packets.Publish:
		err = pk.PublishDecode(px)
		if err == nil {
			atomic.AddInt64(&cl.ops.info.MessagesReceived, 1)
		}
	case packets.Puback:
		err = pk.PubackDecode(px)
	case packets.Pubrec:
		err = pk.PubrecDecode(px)
	case packets.Pubrel:
		err = pk.PubrelDecode(px)
	case packets.Pubcomp:
		err = pk.PubcompDecode(px)
	case packets.Subscribe:
		err = pk.SubscribeDecode(px)
	case packets.Suback:
		err = pk.SubackDecode(px)
	case packets.Unsubscribe:
		err = pk.UnsubscribeDecode(px)
	case packets.Unsuback:
		err = pk.UnsubackDecode(px)
	case packets.Pingreq:
	case packets.Pingresp:
	case packets.Auth:
		err = pk.AuthDecode(px)
	default:
		err = fmt.Errorf("invalid packet type; %v", pk.FixedHeader.Type)
	}

	if err != nil {
		cl.logBadPacket("malformed packet", &pk, err) // fieldgate patch (no secrets in logs)
		return pk, err
	}

	pk, err = cl.ops.hooks.OnPacketRead(cl, pk)
	return
}

// WritePacket encodes and writes a packet to the client.
func (cl *Client) WritePacket(pk packets.Packet) error {
	if cl.Closed() {
		return ErrConnectionClosed
	}

	if cl.Net.Conn == nil {
		return nil
	}

	if pk.Expiry > 0 {
		expiry := pk.Expiry - time.Now().Unix()
		if expiry < 1 {
			expiry = 1
		}
		pk.Properties.MessageExpiryInterval = uint32(expiry) // [MQTT-3.3.2-6]
	}

	pk.ProtocolVersion = cl.Properties.ProtocolVersion
	if pk.Mods.MaxSize == 0 { // NB we use this statement to embed client packet sizes in tests
		pk.Mods.MaxSize = cl.Properties.Props.MaximumPacketSize
	}

	if cl.Properties.Props.RequestProblemInfoFlag && cl.Properties.Props.RequestProblemInfo == 0x0 {
		pk.Mods.DisallowProblemInfo = true // [MQTT-3.1.2-29] strict, no problem info on any packet if set
	}

	if pk.FixedHeader.Type != packets.Connack || cl.Properties.Props.RequestResponseInfo == 0x1 || cl.ops.options.Capabilities.Compatibilities.AlwaysReturnResponseInfo {
		pk.Mods.AllowResponseInfo = true // [MQTT-3.1.2-28] we need to know which properties we can encode
	}

	pk = cl.ops.hooks.OnPacketEncode(cl, pk)

	// fieldgate patch (topic aliases): a server-to-client topic alias is
	// chosen here, as the packet is written, on this copy only: the inflight
	// store keeps the full topic, so a message resent on a later connection
	// (whose alias table starts empty) never depends on an alias. A re-delivery
	// (DUP) carries its topic and no alias.
	var alias uint16
	if pk.FixedHeader.Type == packets.Publish {
		pk.Properties.TopicAlias = 0
		pk.Properties.TopicAliasFlag = false
		if aliases := cl.State.TopicAliases.Outbound; aliases != nil && cl.Properties.ProtocolVersion == 5 &&
			cl.Properties.Props.TopicAliasMaximum > 0 && !pk.FixedHeader.Dup && pk.TopicName != "" {
			cl.State.aliasMu.Lock() // until the bytes are written, so the client learns aliases in order
			defer cl.State.aliasMu.Unlock()
			var known bool
			alias, known = aliases.Set(pk.TopicName)
			if alias > 0 {
				pk.Properties.TopicAlias = alias
				pk.Properties.TopicAliasFlag = true
				if known {
					pk.TopicName = ""
					alias = 0 // nothing to forget if the write fails
				}
			}
		}
	}

	var err error
	// fieldgate patch (hot path): encode into a pooled buffer, not a new one
	// per packet. OnPacketSent hooks must not keep the slice they are given.
	buf := getBuffer()
	defer putBuffer(buf)
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(buf)
	case packets.Connack:
		err = pk.ConnackEncode(buf)
	case packets.Publish:
		err = pk.PublishEncode(buf)
	case packets.Puback:
		err = pk.PubackEncode(buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(buf)
	case packets.Suback:
		err = pk.SubackEncode(buf)
	case packets.Unsubscribe:
		err = pk.UnsubscribeEncode(buf)
	case packets.Unsuback:
		err = pk.UnsubackEncode(buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(buf)
	case packets.Pingresp:
		err = pk.PingrespEncode(buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(buf)
	case packets.Auth:
		err = pk.AuthEncode(buf)
	default:
		err = fmt.Errorf("%w: %v", packets.ErrNoValidPacketAvailable, pk.FixedHeader.Type)
	}
	if err != nil {
		if alias > 0 {
			cl.State.TopicAliases.Outbound.Forget(alias) // the client never learned it
		}
		return err
	}

	if pk.Mods.MaxSize > 0 && uint32(buf.Len()) > pk.Mods.MaxSize {
		if alias > 0 {
			cl.State.TopicAliases.Outbound.Forget(alias)
		}
		return packets.ErrPacketTooLarge // [MQTT-3.1.2-24] [MQTT-3.1.2-25]
	}

	n, err := func() (int64, error) {
		cl.Lock()
		defer cl.Unlock()
		// fieldgate patch (deferred acks); a DISCONNECT is followed by a
		// close, so it and what precedes it go out at once.
		if cl.Net.deferWrites.Load() && pk.FixedHeader.Type != packets.Disconnect {
			if cl.Net.outbuf == nil {
				cl.Net.outbuf = getBuffer()
			}
			n, _ := cl.Net.outbuf.Write(buf.Bytes())
			if cl.Net.outbuf.Len() >= cl.ops.options.ClientNetWriteBufferSize {
				err = cl.flushOutbuf()
			}
			return int64(n), err
		}
		if cl.State.outbound.Len() == 0 {
			if cl.Net.outbuf == nil {
				return buf.WriteTo(cl.Net.Conn)
			}

			// first write to buffer, then flush buffer
			n, _ := cl.Net.outbuf.Write(buf.Bytes()) // will always be successful
			err = cl.flushOutbuf()
			return int64(n), err
		}

		// there are more writes in the queue
		if cl.Net.outbuf == nil {
			if buf.Len() >= cl.ops.options.ClientNetWriteBufferSize {
				return buf.WriteTo(cl.Net.Conn)
			}
			cl.Net.outbuf = getBuffer() // fieldgate patch (hot path): pooled
		}

		n, _ := cl.Net.outbuf.Write(buf.Bytes()) // will always be successful
		if cl.Net.outbuf.Len() < cl.ops.options.ClientNetWriteBufferSize && pk.FixedHeader.Type != packets.Disconnect {
			return int64(n), nil
		}

		err = cl.flushOutbuf()
		return int64(n), err
	}()
	if err != nil {
		return err
	}

	atomic.AddInt64(&cl.ops.info.BytesSent, n)
	atomic.AddInt64(&cl.ops.info.PacketsSent, 1)
	if pk.FixedHeader.Type == packets.Publish {
		atomic.AddInt64(&cl.ops.info.MessagesSent, 1)
		if pk.FixedHeader.Qos > 0 {
			// fieldgate patch (first delivery): a later resend of it is a
			// re-delivery, with DUP=1.
			cl.State.Inflight.MarkSent(pk.PacketID)
		}
	}

	cl.ops.hooks.OnPacketSent(cl, pk, buf.Bytes())

	return err
}

func (cl *Client) flushOutbuf() (err error) {
	if cl.Net.outbuf == nil {
		return
	}

	_, err = cl.Net.outbuf.WriteTo(cl.Net.Conn)
	if err == nil {
		putBuffer(cl.Net.outbuf) // fieldgate patch (hot path): back to the pool
		cl.Net.outbuf = nil
	}
	return
}

// packetPool holds the packets queued on Client.State.outbound (fieldgate
// patch, hot path): publishToClient used to allocate one per subscriber per
// message. Only the write loop takes packets off the queue, and it returns
// them here once written.
var packetPool = sync.Pool{New: func() any { return new(packets.Packet) }}

func getPacket() *packets.Packet { return packetPool.Get().(*packets.Packet) }

func putPacket(pk *packets.Packet) {
	*pk = packets.Packet{}
	packetPool.Put(pk)
}

// bufferPool holds the encoding and batching buffers (fieldgate patch).
var bufferPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuffer() *bytes.Buffer { return bufferPool.Get().(*bytes.Buffer) }

func putBuffer(b *bytes.Buffer) {
	if b.Cap() > 64<<10 {
		return // do not keep what an exceptionally large packet grew
	}
	b.Reset()
	bufferPool.Put(b)
}

// handle runs the packet handler with the client's writes deferred
// (fieldgate patch: deferred acks). Not inlined, like flushDeferred: the
// read loop's frame stays as small as upstream's.
//
//go:noinline
func (cl *Client) handle(packetHandler ReadFn, pk packets.Packet) error {
	cl.Net.deferWrites.Store(true)
	err := packetHandler(cl, pk)
	cl.Net.deferWrites.Store(false)
	if err != nil {
		_ = cl.flushDeferred()
	}
	return err
}

// flushDeferred writes what waits in the client's output buffer. Not
// inlined: it would enlarge the read loop's frame, which is on the stack of
// every idle connection (and tips it from 4 to 8 KiB).
//
//go:noinline
func (cl *Client) flushDeferred() error {
	cl.Lock()
	defer cl.Unlock()
	if cl.Net.outbuf == nil || cl.Net.Conn == nil {
		return nil
	}
	return cl.flushOutbuf()
}

// yieldToEarlierReaders lets the goroutines that became runnable with this
// one run first. fieldgate patch (cross-connection order): the Go runtime
// wakes the readers of the sockets that became readable together in the
// reverse order of their readiness (netpoll pushes each onto the head of
// its list, and the scheduler runs the list's head at once), so a PUBLISH
// that arrived just after another client's SUBSCRIBE was fanned out before
// that SUBSCRIBE was read, and the new subscriber missed it. Yielding once
// before handling a PUBLISH that came straight from the network puts this
// reader behind the ones woken with it.
//
//go:noinline
func yieldToEarlierReaders() { runtime.Gosched() }
