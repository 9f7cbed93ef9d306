package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Client helpers shared by the protocol tests: a paho.golang (MQTT 5)
// client, a paho.mqtt.golang (MQTT 3.1 / 3.1.1) client, each with a channel
// of received messages, and a raw-socket client for the few tests where the
// bytes on the wire are the point.

const (
	waitFor  = 3 * time.Second        // how long to wait for something that must happen
	quietFor = 300 * time.Millisecond // how long to wait to be sure something does not happen
)

// ---- MQTT 5: paho.golang ----

type v5Client struct {
	*paho.Client
	Connack    *paho.Connack
	Msgs       chan *paho.Publish
	ServerDisc chan *paho.Disconnect
	conn       net.Conn
}

// dialV5 connects an MQTT 5 client with id to the broker's TCP listener.
// mutate may change the CONNECT and the client config. The client is
// disconnected at test end. A refused CONNACK is returned with an error.
func dialV5(t testing.TB, tb *testBroker, id string, mutate func(*paho.Connect, *paho.ClientConfig)) (*v5Client, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", tb.Addr("tcp"), waitFor)
	if err != nil {
		return nil, err
	}
	c := &v5Client{
		Msgs:       make(chan *paho.Publish, 10000),
		ServerDisc: make(chan *paho.Disconnect, 1),
		conn:       conn,
	}
	cfg := paho.ClientConfig{
		ClientID: id,
		Conn:     conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				select {
				case c.Msgs <- pr.Packet:
				default:
					t.Errorf("%s: message channel full", id)
				}
				return true, nil
			},
		},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case c.ServerDisc <- d:
			default:
			}
		},
		OnClientError: func(error) {},
		PacketTimeout: waitFor,
	}
	cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}
	if mutate != nil {
		mutate(cp, &cfg)
	}
	c.Client = paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	c.Connack = ca
	if err != nil {
		_ = conn.Close()
		if ca != nil {
			return c, fmt.Errorf("connect %s: reason 0x%02x: %w", id, ca.ReasonCode, err)
		}
		return nil, fmt.Errorf("connect %s: %w", id, err)
	}
	t.Cleanup(func() { c.close() })
	return c, nil
}

// connectV5 is dialV5 that fails the test on error.
func connectV5(t testing.TB, tb *testBroker, id string, mutate func(*paho.Connect, *paho.ClientConfig)) *v5Client {
	t.Helper()
	c, err := dialV5(t, tb, id, mutate)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// close disconnects normally (reason 0) and waits for the client to stop.
func (c *v5Client) close() {
	_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	select {
	case <-c.Done():
	case <-time.After(waitFor):
	}
}

// kill closes the client's socket without DISCONNECT, as a crash would.
func (c *v5Client) kill() {
	_ = c.conn.Close()
	select {
	case <-c.Done():
	case <-time.After(waitFor):
	}
}

// sub subscribes to filter at qos with the given options applied, and
// fails the test unless the SUBACK grants it.
func (c *v5Client) sub(t testing.TB, filter string, qos byte, mutate func(*paho.Subscribe)) *paho.Suback {
	t.Helper()
	s := &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}}
	if mutate != nil {
		mutate(s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	sa, err := c.Subscribe(ctx, s)
	if err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	for i, r := range sa.Reasons {
		if r >= 0x80 {
			t.Fatalf("subscribe %s: filter %d refused with 0x%02x", filter, i, r)
		}
	}
	return sa
}

// pub publishes and fails the test on error (including a refusing ack).
func (c *v5Client) pub(t testing.TB, p *paho.Publish) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	r, err := c.Publish(ctx, p)
	if err != nil {
		t.Fatalf("publish %s: %v", p.Topic, err)
	}
	return r
}

// ---- MQTT 3.1 / 3.1.1: paho.mqtt.golang ----

type v3Client struct {
	pahov3.Client
	Msgs           chan pahov3.Message
	SessionPresent bool

	mu   sync.Mutex
	conn net.Conn
}

// dialV3 connects an MQTT 3 client (version 3 = MQTT 3.1, 4 = MQTT 3.1.1)
// with a clean session unless mutate says otherwise. Messages of every
// subscription made with sub go to Msgs. It is disconnected at test end.
func dialV3(t testing.TB, tb *testBroker, id string, version uint, mutate func(*pahov3.ClientOptions)) (*v3Client, error) {
	t.Helper()
	c := &v3Client{Msgs: make(chan pahov3.Message, 10000)}
	o := pahov3.NewClientOptions().
		AddBroker(tb.tcpURL()).
		SetClientID(id).
		SetProtocolVersion(version).
		SetCleanSession(true).
		SetKeepAlive(30 * time.Second).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(waitFor).
		SetWriteTimeout(waitFor).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) {
			select {
			case c.Msgs <- m:
			default:
				t.Errorf("%s: message channel full", id)
			}
		}).
		SetCustomOpenConnectionFn(func(u *url.URL, _ pahov3.ClientOptions) (net.Conn, error) {
			conn, err := net.DialTimeout("tcp", u.Host, waitFor)
			if err != nil {
				return nil, err
			}
			c.mu.Lock()
			c.conn = conn
			c.mu.Unlock()
			return conn, nil
		})
	if mutate != nil {
		mutate(o)
	}
	c.Client = pahov3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(waitFor) {
		return nil, fmt.Errorf("connect %s: timeout", id)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect %s: %w", id, err)
	}
	c.SessionPresent = tok.(*pahov3.ConnectToken).SessionPresent()
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func connectV3(t testing.TB, tb *testBroker, id string, version uint, mutate func(*pahov3.ClientOptions)) *v3Client {
	t.Helper()
	c, err := dialV3(t, tb, id, version, mutate)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// kill closes the client's socket without DISCONNECT.
func (c *v3Client) kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		_ = c.conn.Close()
	}
}

func (c *v3Client) sub(t testing.TB, filter string, qos byte) {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(waitFor) {
		t.Fatalf("subscribe %s: timeout", filter)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	if g := tok.(*pahov3.SubscribeToken).Result()[filter]; g >= 0x80 {
		t.Fatalf("subscribe %s: refused with 0x%02x", filter, g)
	}
}

func (c *v3Client) pub(t testing.TB, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(waitFor) {
		t.Fatalf("publish %s: timeout", topic)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

// ---- waiting on channels ----

// recv returns the next value from ch or fails the test after d.
func recv[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("no %s within %v", what, d)
	}
	var zero T
	return zero
}

// none fails the test if ch yields a value within d.
func none[T any](t testing.TB, ch <-chan T, d time.Duration, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected %s: %v", what, v)
	case <-time.After(d):
	}
}

// drain collects what ch yields until it has been quiet for quiet, or
// until max values, or until the overall deadline d.
func drain[T any](ch <-chan T, quiet, d time.Duration, max int) []T {
	var out []T
	deadline := time.After(d)
	for len(out) < max {
		select {
		case v := <-ch:
			out = append(out, v)
		case <-time.After(quiet):
			return out
		case <-deadline:
			return out
		}
	}
	return out
}

// ---- raw socket, with the engine's packet codec ----

type rawClient struct {
	t       testing.TB
	conn    net.Conn
	r       *bufio.Reader
	version byte
}

// dialRaw opens a TCP connection speaking MQTT version (3, 4 or 5).
func dialRaw(t testing.TB, addr string, version byte) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, waitFor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), version: version}
}

// connect sends CONNECT (clean, with the given id and keep alive; mutate may
// add a will or properties) and returns the CONNACK.
func (c *rawClient) connect(id string, keepalive uint16, mutate func(*packets.Packet)) packets.Packet {
	c.t.Helper()
	name := "MQTT"
	if c.version == 3 {
		name = "MQIsdp"
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}}
	pk.Connect.ProtocolName = []byte(name)
	pk.Connect.ClientIdentifier = id
	pk.Connect.Keepalive = keepalive
	pk.Connect.Clean = true
	if mutate != nil {
		mutate(&pk)
	}
	c.send(pk)
	ack, err := c.read(waitFor)
	if err != nil {
		c.t.Fatalf("raw connect %s: %v", id, err)
	}
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		c.t.Fatalf("raw connect %s: got %s reason 0x%02x", id, packets.PacketNames[ack.FixedHeader.Type], ack.ReasonCode)
	}
	return ack
}

// send encodes and writes pk.
func (c *rawClient) send(pk packets.Packet) {
	c.t.Helper()
	if _, err := c.conn.Write(c.encode(pk)); err != nil {
		c.t.Fatalf("raw write: %v", err)
	}
}

func (c *rawClient) encode(pk packets.Packet) []byte {
	c.t.Helper()
	pk.ProtocolVersion = c.version
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
		pk.FixedHeader.Qos = 1
		err = pk.PubrelEncode(&buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(&buf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1
		err = pk.SubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		c.t.Fatalf("raw client cannot encode packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		c.t.Fatalf("encode %s: %v", packets.PacketNames[pk.FixedHeader.Type], err)
	}
	return buf.Bytes()
}

// read reads and decodes the next packet, waiting at most d. io.EOF (or
// another read error) means the broker closed the connection.
func (c *rawClient) read(d time.Duration) (packets.Packet, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	defer func() { _ = c.conn.SetReadDeadline(time.Time{}) }()
	return readPacket(c.r, c.version)
}

// readType reads packets until one of type typ arrives, failing the test
// on a read error or after d.
func (c *rawClient) readType(typ byte, d time.Duration) packets.Packet {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		pk, err := c.read(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", packets.PacketNames[typ], err)
		}
		if pk.FixedHeader.Type == typ {
			return pk
		}
	}
}

// subscribe sends SUBSCRIBE for one filter (with a subscription identifier
// when id > 0) and waits for its SUBACK.
func (c *rawClient) subscribe(packetID uint16, filter string, qos byte, id int) {
	c.t.Helper()
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe},
		PacketID:    packetID,
		Filters:     packets.Subscriptions{{Filter: filter, Qos: qos}},
	}
	if id > 0 {
		pk.Properties.SubscriptionIdentifier = []int{id}
	}
	c.send(pk)
	ack := c.readType(packets.Suback, waitFor)
	if ack.PacketID != packetID || len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] >= 0x80 {
		c.t.Fatalf("subscribe %s: SUBACK id %d codes %v", filter, ack.PacketID, ack.ReasonCodes)
	}
}
