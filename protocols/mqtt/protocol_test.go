package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// Protocol behaviour of the broker, driven by real MQTT clients over
// loopback (paho.golang for MQTT 5, paho.mqtt.golang for MQTT 3.1 and
// 3.1.1), and by raw packets only where the bytes on the wire are the point.

func u32(v uint32) *uint32 { return &v }
func u16(v uint16) *uint16 { return &v }
func intp(v int) *int      { return &v }

// waitOffline waits until the broker has seen client id disconnect, so that
// what is published next is queued for its session rather than raced
// against the closing connection.
func waitOffline(t testing.TB, tb *testBroker, id string) {
	t.Helper()
	testwait.For(t, waitFor, "the broker to see client "+id+" disconnected", func() bool {
		cl, ok := tb.srv.Clients.Get(id)
		return !ok || cl.Closed()
	})
}

// ---- versions and QoS ----

func TestProtocolVersionsInterop(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	versions := []struct {
		name    string
		version uint // 3 = MQTT 3.1, 4 = 3.1.1, 5 = 5.0
	}{{"3.1", 3}, {"3.1.1", 4}, {"5.0", 5}}

	type receiver func() (topic, payload string)
	var recvs []receiver
	var pubs []func(topic, payload string)
	for _, v := range versions {
		id := "ver" + strings.ReplaceAll(v.name, ".", "")
		if v.version == 5 {
			s := connectV5(t, tb, id+"s", nil)
			s.sub(t, "ver/#", 1, nil)
			recvs = append(recvs, func() (string, string) {
				m := recv(t, s.Msgs, waitFor, "message on v"+v.name)
				return m.Topic, string(m.Payload)
			})
			p := connectV5(t, tb, id+"p", nil)
			pubs = append(pubs, func(topic, payload string) {
				p.pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
			})
			continue
		}
		s := connectV3(t, tb, id+"s", v.version, nil)
		s.sub(t, "ver/#", 1)
		recvs = append(recvs, func() (string, string) {
			m := recv(t, s.Msgs, waitFor, "message on v"+v.name)
			return m.Topic(), string(m.Payload())
		})
		p := connectV3(t, tb, id+"p", v.version, nil)
		pubs = append(pubs, func(topic, payload string) { p.pub(t, topic, 1, false, payload) })
	}
	for i, v := range versions {
		pubs[i]("ver/"+v.name, "from "+v.name)
		for j, r := range recvs {
			topic, payload := r()
			if topic != "ver/"+v.name || payload != "from "+v.name {
				t.Errorf("v%s → v%s: got %q %q", v.name, versions[j].name, topic, payload)
			}
		}
	}
}

func TestQoSEndToEnd(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	for _, proto := range []string{"v5", "v311"} {
		for pq := byte(0); pq <= 2; pq++ {
			for sq := byte(0); sq <= 2; sq++ {
				name := fmt.Sprintf("%s/pub%d/sub%d", proto, pq, sq)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					topic := "qos/" + name
					id := fmt.Sprintf("q%s%d%d", proto, pq, sq)
					want := min(pq, sq)
					var got []byte // delivered QoS of each delivery
					if proto == "v5" {
						s := connectV5(t, tb, id+"s", nil)
						s.sub(t, topic, sq, nil)
						p := connectV5(t, tb, id+"p", nil)
						p.pub(t, &paho.Publish{Topic: topic, QoS: pq, Payload: []byte("x")})
						m := recv(t, s.Msgs, waitFor, "message")
						got = append(got, m.QoS)
						for _, m := range drain(s.Msgs, 150*time.Millisecond, waitFor, 10) {
							got = append(got, m.QoS)
						}
					} else {
						s := connectV3(t, tb, id+"s", 4, nil)
						s.sub(t, topic, sq)
						p := connectV3(t, tb, id+"p", 4, nil)
						p.pub(t, topic, pq, false, "x")
						m := recv(t, s.Msgs, waitFor, "message")
						got = append(got, m.Qos())
						for _, m := range drain(s.Msgs, 150*time.Millisecond, waitFor, 10) {
							got = append(got, m.Qos())
						}
					}
					if !slices.Equal(got, []byte{want}) {
						t.Errorf("delivered QoS %v, want exactly one delivery at QoS %d", got, want)
					}
				})
			}
		}
	}
}

// ---- retained messages ----

func TestRetainedSetDeliverClear(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	p := connectV5(t, tb, "retpub", nil)
	p.pub(t, &paho.Publish{Topic: "ret/a", QoS: 1, Retain: true, Payload: []byte("r1")})

	// A later subscriber of each version gets it, flagged retained.
	s5 := connectV5(t, tb, "retsub5", nil)
	s5.sub(t, "ret/#", 1, nil)
	m := recv(t, s5.Msgs, waitFor, "retained message (v5)")
	if m.Topic != "ret/a" || string(m.Payload) != "r1" || !m.Retain {
		t.Errorf("v5 got %s %q retain=%v, want ret/a \"r1\" retained", m.Topic, m.Payload, m.Retain)
	}
	s3 := connectV3(t, tb, "retsub3", 4, nil)
	s3.sub(t, "ret/#", 1)
	m3 := recv(t, s3.Msgs, waitFor, "retained message (v3)")
	if m3.Topic() != "ret/a" || string(m3.Payload()) != "r1" || !m3.Retained() {
		t.Errorf("v3 got %s %q retain=%v, want ret/a \"r1\" retained", m3.Topic(), m3.Payload(), m3.Retained())
	}

	// An empty retained payload clears it (and is delivered to current subscribers).
	p.pub(t, &paho.Publish{Topic: "ret/a", QoS: 1, Retain: true})
	recv(t, s5.Msgs, waitFor, "the clearing publish")
	late := connectV5(t, tb, "retlate", nil)
	late.sub(t, "ret/#", 1, nil)
	none(t, late.Msgs, quietFor, "retained message after it was cleared")
}

func TestRetainHandlingV5(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	p := connectV5(t, tb, "rhpub", nil)
	p.pub(t, &paho.Publish{Topic: "rh/t", QoS: 1, Retain: true, Payload: []byte("kept")})

	for _, tc := range []struct {
		handling           byte
		first, resubscribe bool // retained message expected on the first subscribe, on the second
	}{
		{0, true, true},
		{1, true, false},
		{2, false, false},
	} {
		t.Run(fmt.Sprintf("rh%d", tc.handling), func(t *testing.T) {
			t.Parallel()
			s := connectV5(t, tb, fmt.Sprintf("rh%d", tc.handling), nil)
			subscribe := func() {
				s.sub(t, "rh/#", 1, func(sp *paho.Subscribe) { sp.Subscriptions[0].RetainHandling = tc.handling })
			}
			for i, want := range []bool{tc.first, tc.resubscribe} {
				subscribe()
				if want {
					m := recv(t, s.Msgs, waitFor, fmt.Sprintf("retained message on subscribe %d", i+1))
					if string(m.Payload) != "kept" || !m.Retain {
						t.Errorf("subscribe %d: got %q retain=%v", i+1, m.Payload, m.Retain)
					}
				} else {
					none(t, s.Msgs, quietFor, fmt.Sprintf("retained message on subscribe %d", i+1))
				}
			}
		})
	}
}

func TestRetainAsPublishedV5(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	rap := connectV5(t, tb, "rap1", nil)
	rap.sub(t, "rap/#", 1, func(s *paho.Subscribe) { s.Subscriptions[0].RetainAsPublished = true })
	plain := connectV5(t, tb, "rap0", nil)
	plain.sub(t, "rap/#", 1, nil)

	p := connectV5(t, tb, "rappub", nil)
	p.pub(t, &paho.Publish{Topic: "rap/t", QoS: 1, Retain: true, Payload: []byte("live")})
	if m := recv(t, rap.Msgs, waitFor, "message (retain as published)"); !m.Retain {
		t.Error("retain-as-published subscriber got the live message without the retain flag")
	}
	if m := recv(t, plain.Msgs, waitFor, "message"); m.Retain {
		t.Error("ordinary subscriber got a live message with the retain flag")
	}
}

// ---- wills ----

func TestWillOnKilledConnection(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	w := connectV5(t, tb, "willwatch", nil)
	w.sub(t, "will/#", 1, nil)

	for _, tc := range []struct {
		name    string
		version uint
	}{{"v31", 3}, {"v311", 4}, {"v5", 5}} {
		topic := "will/" + tc.name
		if tc.version == 5 {
			c := connectV5(t, tb, "willc"+tc.name, func(cp *paho.Connect, _ *paho.ClientConfig) {
				cp.WillMessage = &paho.WillMessage{Topic: topic, QoS: 1, Payload: []byte("gone " + tc.name)}
			})
			c.kill()
		} else {
			c := connectV3(t, tb, "willc"+tc.name, tc.version, func(o *pahov3.ClientOptions) {
				o.SetWill(topic, "gone "+tc.name, 1, false)
			})
			c.kill()
		}
		m := recv(t, w.Msgs, waitFor, "will of "+tc.name)
		if m.Topic != topic || string(m.Payload) != "gone "+tc.name || m.QoS != 1 {
			t.Errorf("%s: will %s %q QoS %d", tc.name, m.Topic, m.Payload, m.QoS)
		}
	}
}

// The will's properties are sent with the will message [MQTT-3.1.3-10 ff.].
func TestWillPropertiesPassThrough(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	w := connectV5(t, tb, "wpwatch", nil)
	w.sub(t, "wp/#", 1, nil)
	// paho.golang does not encode these will properties, so the CONNECT is
	// built with the engine's own codec and sent on a raw socket.
	connect := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), ClientIdentifier: "wpc", Keepalive: 30, Clean: true,
			WillFlag: true, WillTopic: "wp/t", WillQos: 1, WillPayload: []byte("gone"),
			WillProperties: packets.Properties{
				ContentType: "text/plain", ResponseTopic: "wp/resp", CorrelationData: []byte("c1"),
				User: []packets.UserProperty{{Key: "k", Val: "v"}},
			},
		},
	}
	connect.Mods.AllowResponseInfo = true // the codec's switch for response topic and correlation data
	var buf bytes.Buffer
	if err := connect.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", tb.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 64)
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	if n, err := conn.Read(ack); err != nil || n < 4 || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK: % x, %v", ack[:n], err)
	}
	_ = conn.Close() // no DISCONNECT: the will is published
	m := recv(t, w.Msgs, waitFor, "will")
	p := m.Properties
	if p == nil || !slices.Equal(p.User, paho.UserProperties{{Key: "k", Value: "v"}}) {
		t.Fatalf("will user properties %+v", p)
	}
	if p.ContentType != "text/plain" || p.ResponseTopic != "wp/resp" || string(p.CorrelationData) != "c1" {
		t.Fatalf("will delivered with content type %q, response topic %q, correlation data %q; want the will's",
			p.ContentType, p.ResponseTopic, p.CorrelationData)
	}
}

func TestWillNotSentOnCleanDisconnect(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	w := connectV5(t, tb, "cdwatch", nil)
	w.sub(t, "cdwill/#", 1, nil)

	c3 := connectV3(t, tb, "cd3", 4, func(o *pahov3.ClientOptions) { o.SetWill("cdwill/v3", "gone", 1, false) })
	c3.Disconnect(100)
	c5 := connectV5(t, tb, "cd5", func(cp *paho.Connect, _ *paho.ClientConfig) {
		cp.WillMessage = &paho.WillMessage{Topic: "cdwill/v5", QoS: 1, Payload: []byte("gone")}
	})
	c5.close()
	waitOffline(t, tb, "cd3")
	waitOffline(t, tb, "cd5")
	none(t, w.Msgs, 2*quietFor, "will after a clean DISCONNECT")
}

func TestWillDelayHonoured(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	w := connectV5(t, tb, "wdwatch", nil)
	w.sub(t, "wd/#", 1, nil)
	c := connectV5(t, tb, "wdc", func(cp *paho.Connect, _ *paho.ClientConfig) {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: u32(60)}
		cp.WillMessage = &paho.WillMessage{Topic: "wd/t", QoS: 1, Payload: []byte("late")}
		cp.WillProperties = &paho.WillProperties{WillDelayInterval: u32(2)}
	})
	killed := time.Now()
	c.kill()
	none(t, w.Msgs, time.Until(killed.Add(1500*time.Millisecond)), "will before its 2 s delay")
	m := recv(t, w.Msgs, time.Until(killed.Add(3200*time.Millisecond)), "will within 3.2 s of a 2 s delay")
	if string(m.Payload) != "late" {
		t.Errorf("will payload %q", m.Payload)
	}
	t.Logf("will arrived %v after the kill", time.Since(killed).Round(time.Millisecond))
}

func TestWillDelayCancelledByReconnect(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	w := connectV5(t, tb, "wrwatch", nil)
	w.sub(t, "wr/#", 1, nil)
	withWill := func(clean bool) func(*paho.Connect, *paho.ClientConfig) {
		return func(cp *paho.Connect, _ *paho.ClientConfig) {
			cp.CleanStart = clean
			cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: u32(60)}
			cp.WillMessage = &paho.WillMessage{Topic: "wr/t", QoS: 1, Payload: []byte("late")}
			cp.WillProperties = &paho.WillProperties{WillDelayInterval: u32(2)}
		}
	}
	c := connectV5(t, tb, "wrc", withWill(true))
	killed := time.Now()
	c.kill()
	waitOffline(t, tb, "wrc")
	time.Sleep(300 * time.Millisecond) // kept sleep: the will delay runs on the broker's real clock; the client comes back 0.3 s into its 2 s delay
	again := connectV5(t, tb, "wrc", withWill(false))
	if !again.Connack.SessionPresent {
		t.Error("reconnect within the session expiry: session present = false")
	}
	none(t, w.Msgs, time.Until(killed.Add(3200*time.Millisecond)), "will of a client that came back within the delay")
}

// A will is published when the will delay ends or the session ends,
// whichever is first [MQTT-3.1.3-9]: a session that expires after 1 s takes
// a will with a 5 s delay with it.
func TestWillDelayBoundedBySessionExpiry(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	w := connectV5(t, tb, "wswatch", nil)
	w.sub(t, "ws/#", 1, nil)
	c := connectV5(t, tb, "wsc", func(cp *paho.Connect, _ *paho.ClientConfig) {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: u32(1)}
		cp.WillMessage = &paho.WillMessage{Topic: "ws/t", QoS: 1, Payload: []byte("session over")}
		cp.WillProperties = &paho.WillProperties{WillDelayInterval: u32(5)}
	})
	killed := time.Now()
	c.kill()
	recv(t, w.Msgs, 3500*time.Millisecond, "will when the 1 s session expired (will delay 5 s)")
	t.Logf("will arrived %v after the kill", time.Since(killed).Round(time.Millisecond))
}

// ---- persistent sessions ----

// payloads returns the payloads of v5 messages as strings.
func payloads(ms []*paho.Publish) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = string(m.Payload)
	}
	return out
}

func TestPersistentSessionV3(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	persistent := func(o *pahov3.ClientOptions) { o.SetCleanSession(false) }
	c := connectV3(t, tb, "ps3", 4, persistent)
	if c.SessionPresent {
		t.Error("first connect: session present = true")
	}
	c.sub(t, "ps3/#", 1)
	c.Disconnect(100)
	waitOffline(t, tb, "ps3")

	p := connectV5(t, tb, "ps3pub", nil)
	for i := range 3 {
		p.pub(t, &paho.Publish{Topic: "ps3/t", QoS: byte(1 + i%2), Payload: []byte(strconv.Itoa(i))})
	}
	again := connectV3(t, tb, "ps3", 4, persistent)
	if !again.SessionPresent {
		t.Error("reconnect with clean session false: session present = false")
	}
	var got []string
	for range 3 {
		got = append(got, string(recv(t, again.Msgs, waitFor, "queued message").Payload()))
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"0", "1", "2"}) {
		t.Errorf("queued messages %v, want 0, 1, 2 (order: TestOfflineQueueOrder)", got)
	}
}

func TestPersistentSessionV5(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	persistent := func(clean bool) func(*paho.Connect, *paho.ClientConfig) {
		return func(cp *paho.Connect, _ *paho.ClientConfig) {
			cp.CleanStart = clean
			cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: u32(60)}
		}
	}
	c := connectV5(t, tb, "ps5", persistent(true))
	c.sub(t, "ps5/#", 2, nil)
	c.close()
	waitOffline(t, tb, "ps5")

	p := connectV5(t, tb, "ps5pub", nil)
	for i := range 4 {
		p.pub(t, &paho.Publish{Topic: "ps5/t", QoS: byte(1 + i%2), Payload: []byte(strconv.Itoa(i))})
	}
	again := connectV5(t, tb, "ps5", persistent(false))
	if !again.Connack.SessionPresent {
		t.Error("reconnect with clean start false: session present = false")
	}
	var got []*paho.Publish
	for range 4 {
		got = append(got, recv(t, again.Msgs, waitFor, "queued message"))
	}
	ps := payloads(got)
	slices.Sort(ps)
	if !slices.Equal(ps, []string{"0", "1", "2", "3"}) {
		t.Errorf("queued messages %v, want 0, 1, 2, 3 (order: TestOfflineQueueOrder)", ps)
	}
	for _, m := range got {
		i, _ := strconv.Atoi(string(m.Payload))
		if want := byte(1 + i%2); m.QoS != want {
			t.Errorf("message %d delivered at QoS %d, want %d", i, m.QoS, want)
		}
	}
}

// Messages queued for an offline session arrive in the order they were
// published (MQTT 4.6, ordered topic).
func TestOfflineQueueOrder(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	persistent := func(clean bool) func(*paho.Connect, *paho.ClientConfig) {
		return func(cp *paho.Connect, _ *paho.ClientConfig) {
			cp.CleanStart = clean
			cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: u32(60)}
		}
	}
	c := connectV5(t, tb, "order", persistent(true))
	c.sub(t, "order/#", 1, nil)
	c.close()
	waitOffline(t, tb, "order")
	p := connectV5(t, tb, "orderpub", nil)
	const n = 8
	var want []string
	for i := range n {
		want = append(want, strconv.Itoa(i))
		p.pub(t, &paho.Publish{Topic: "order/t", QoS: 1, Payload: []byte(want[i])})
	}
	again := connectV5(t, tb, "order", persistent(false))
	var got []string
	for range n {
		got = append(got, string(recv(t, again.Msgs, waitFor, "queued message").Payload))
	}
	if !slices.Equal(got, want) {
		t.Errorf("queued messages arrived as %v, want %v (MQTT 4.6: ordered topic)", got, want)
	}
}

func TestOfflineQoS0Queueing(t *testing.T) {
	t.Parallel()
	for _, queue := range []bool{false, true} {
		for _, proto := range []string{"v311", "v5"} {
			t.Run(fmt.Sprintf("queue_qos0=%v/%s", queue, proto), func(t *testing.T) {
				t.Parallel()
				tb := startBroker(t, "", func(c *Config) { c.QueueQoS0 = queue })
				const id = "q0sess"
				// reconnect connects the persistent session and returns what
				// it received until things went quiet.
				var reconnect func(first bool) []string
				if proto == "v5" {
					reconnect = func(first bool) []string {
						c := connectV5(t, tb, id, func(cp *paho.Connect, _ *paho.ClientConfig) {
							cp.CleanStart = first
							cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: u32(60)}
						})
						if first {
							c.sub(t, "q0/#", 1, nil)
							c.close()
							return nil
						}
						return payloads(drain(c.Msgs, quietFor, waitFor, 100))
					}
				} else {
					reconnect = func(first bool) []string {
						c := connectV3(t, tb, id, 4, func(o *pahov3.ClientOptions) { o.SetCleanSession(false) })
						if first {
							c.sub(t, "q0/#", 1)
							c.Disconnect(100)
							return nil
						}
						var out []string
						for _, m := range drain(c.Msgs, quietFor, waitFor, 100) {
							out = append(out, string(m.Payload()))
						}
						return out
					}
				}
				reconnect(true)
				waitOffline(t, tb, id)
				p := connectV5(t, tb, "q0pub", nil)
				for i := range 3 {
					p.pub(t, &paho.Publish{Topic: "q0/t", QoS: 0, Payload: []byte("qos0-" + strconv.Itoa(i))})
				}
				p.pub(t, &paho.Publish{Topic: "q0/t", QoS: 1, Payload: []byte("qos1")})
				got := reconnect(false)
				slices.Sort(got)
				want := []string{"qos1"}
				if queue {
					want = []string{"qos0-0", "qos0-1", "qos0-2", "qos1"}
				}
				if !slices.Equal(got, want) {
					t.Errorf("after reconnect got %v, want %v", got, want)
				}
			})
		}
	}
}

func TestSessionExpiry(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	c := connectV5(t, tb, "sexp", func(cp *paho.Connect, _ *paho.ClientConfig) {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: u32(1)}
	})
	c.sub(t, "sexp/#", 1, nil)
	c.close()
	waitOffline(t, tb, "sexp")
	p := connectV5(t, tb, "sexppub", nil)
	p.pub(t, &paho.Publish{Topic: "sexp/t", QoS: 1, Payload: []byte("for a dead session")})
	// The broker drops the expired session (on its own clock): within the
	// 3 s the test always allowed, and no longer a fixed 3 s wait.
	testwait.For(t, 3*time.Second, "the session with expiry 1 s to be dropped", func() bool {
		_, ok := tb.srv.Clients.Get("sexp")
		return !ok
	})
	again := connectV5(t, tb, "sexp", func(cp *paho.Connect, _ *paho.ClientConfig) {
		cp.CleanStart = false
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: u32(60)}
	})
	if again.Connack.SessionPresent {
		t.Error("session with expiry 1 s still present after 3 s")
	}
	none(t, again.Msgs, quietFor, "message queued for an expired session")
}

func TestMaxQueuedDropsOldest(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", func(c *Config) {
		c.Limits.MaxInflight = 10
		c.Limits.MaxQueued = 20
	})
	persistent := func(clean bool) func(*paho.Connect, *paho.ClientConfig) {
		return func(cp *paho.Connect, _ *paho.ClientConfig) {
			cp.CleanStart = clean
			cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: u32(60)}
		}
	}
	c := connectV5(t, tb, "mq", persistent(true))
	c.sub(t, "mq/#", 1, nil)
	c.close()
	waitOffline(t, tb, "mq")

	p := connectV5(t, tb, "mqpub", nil)
	const n = 100
	for i := range n {
		p.pub(t, &paho.Publish{Topic: "mq/t", QoS: 1, Payload: []byte(strconv.Itoa(i))})
	}
	again := connectV5(t, tb, "mq", persistent(false))
	got := drain(again.Msgs, quietFor, 2*waitFor, 2*n)
	seen := map[int]int{}
	for _, m := range got {
		i, err := strconv.Atoi(string(m.Payload))
		if err != nil {
			t.Fatalf("payload %q", m.Payload)
		}
		if i < n-30 {
			t.Errorf("received message %d: the oldest should have been dropped (newest 30 are %d..%d)", i, n-30, n-1)
		}
		seen[i]++
	}
	if len(seen) == 0 || len(seen) > 30 {
		t.Errorf("received %d distinct queued messages, want 1..30", len(seen))
	}
	if seen[n-1] == 0 {
		t.Errorf("newest message %d not received", n-1)
	}
	if d := tb.Stats().QueuedDropped.Load(); d < int64(n-30) {
		t.Errorf("QueuedDropped = %d, want >= %d", d, n-30)
	}
	if len(got) > len(seen) {
		t.Errorf("%d deliveries of %d distinct queued messages: a queued message was sent more than once", len(got), len(seen))
	}
	t.Logf("received %d, QueuedDropped %d", len(got), tb.Stats().QueuedDropped.Load())
}

// ---- keep alive ----

func TestKeepAliveTimeout(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	c := dialRaw(t, tb.Addr("tcp"), 4)
	c.connect("ka", 1, nil)
	start := time.Now()
	_, err := c.read(5 * time.Second)
	elapsed := time.Since(start)
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("silent client with keep alive 1 s: not disconnected within 5 s (read: %v)", err)
	}
	t.Logf("disconnected after %v", elapsed.Round(time.Millisecond))
	// MQTT-3.1.2-24: the server closes after one and a half keep alive
	// periods without a packet; not before.
	if elapsed < 1400*time.Millisecond || elapsed > 2500*time.Millisecond {
		t.Errorf("silent client with keep alive 1 s disconnected after %v, want ≈1.5 s", elapsed.Round(time.Millisecond))
	}
}

func TestKeepAlivePingKeepsConnection(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	c := dialRaw(t, tb.Addr("tcp"), 4)
	c.connect("kaping", 2, nil)
	for range 3 {
		time.Sleep(700 * time.Millisecond) // kept sleep: pacing the pings at 0.7 s, inside the 2 s keep alive, on the broker's real clock
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
		c.readType(packets.Pingresp, waitFor)
	}
}

func TestServerKeepAliveImposed(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", func(c *Config) { c.Limits.MaxKeepalive = 5 * time.Second })
	for _, tc := range []struct {
		ask  uint16
		want uint16 // 0: no server keep alive in the CONNACK
	}{{60, 5}, {0, 5}, {3, 0}} {
		c := connectV5(t, tb, fmt.Sprintf("ska%d", tc.ask), func(cp *paho.Connect, _ *paho.ClientConfig) { cp.KeepAlive = tc.ask })
		var got uint16
		if c.Connack.Properties != nil && c.Connack.Properties.ServerKeepAlive != nil {
			got = *c.Connack.Properties.ServerKeepAlive
		}
		if got != tc.want {
			t.Errorf("asked keep alive %d: CONNACK server keep alive %d, want %d", tc.ask, got, tc.want)
		}
	}
}

// ---- MQTT 5 properties ----

func TestTopicAliasFromPublisher(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	s := connectV5(t, tb, "tas", nil)
	s.sub(t, "alias/#", 1, nil)
	p := connectV5(t, tb, "tap", nil)
	p.pub(t, &paho.Publish{Topic: "alias/long/topic", QoS: 1, Payload: []byte("1"),
		Properties: &paho.PublishProperties{TopicAlias: u16(1)}})
	p.pub(t, &paho.Publish{Topic: "", QoS: 1, Payload: []byte("2"),
		Properties: &paho.PublishProperties{TopicAlias: u16(1)}})
	for _, want := range []string{"1", "2"} {
		m := recv(t, s.Msgs, waitFor, "aliased message "+want)
		if m.Topic != "alias/long/topic" || string(m.Payload) != want {
			t.Errorf("got %q %q, want alias/long/topic %q", m.Topic, m.Payload, want)
		}
	}
}

// A client may use topic aliases only up to the Topic Alias Maximum the
// CONNACK announces; none announced means 0 [MQTT-3.2.2-17], so the broker
// must announce the maximum it accepts.
func TestTopicAliasMaximumAnnounced(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	p := connectV5(t, tb, "tamax", nil)
	if pr := p.Connack.Properties; pr == nil || pr.TopicAliasMaximum == nil || *pr.TopicAliasMaximum == 0 {
		t.Fatal("regression: CONNACK carries no Topic Alias Maximum although the engine accepts aliases up to 1024 " +
			"(broker.go caps.TopicAliasMaximum; mochi SendConnack never sends it; hook.go OnPacketEncode Connack case could)")
	}
}

func TestMessageExpiryOffline(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	persistent := func(clean bool) func(*paho.Connect, *paho.ClientConfig) {
		return func(cp *paho.Connect, _ *paho.ClientConfig) {
			cp.CleanStart = clean
			cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: u32(60)}
		}
	}
	c := connectV5(t, tb, "mexp", persistent(true))
	c.sub(t, "mexp/#", 1, nil)
	c.close()
	waitOffline(t, tb, "mexp")
	p := connectV5(t, tb, "mexppub", nil)
	p.pub(t, &paho.Publish{Topic: "mexp/t", QoS: 1, Payload: []byte("short"),
		Properties: &paho.PublishProperties{MessageExpiry: u32(1)}})
	p.pub(t, &paho.Publish{Topic: "mexp/t", QoS: 1, Payload: []byte("long"),
		Properties: &paho.PublishProperties{MessageExpiry: u32(60)}})
	time.Sleep(3 * time.Second) // kept sleep: message expiry is measured on the broker's real clock and only applied at delivery; the 1 s message must be 3 s old when the session resumes
	again := connectV5(t, tb, "mexp", persistent(false))
	got := drain(again.Msgs, quietFor, waitFor, 10)
	if ps := payloads(got); !slices.Equal(ps, []string{"long"}) {
		t.Fatalf("after 3 s offline got %v, want only [long] (the 1 s message expired)", ps)
	}
	// MQTT-3.3.2-6: the expiry sent on is reduced by the time the message waited.
	if e := got[0].Properties; e == nil || e.MessageExpiry == nil || *e.MessageExpiry > 58 {
		var v any = "none"
		if e != nil && e.MessageExpiry != nil {
			v = *e.MessageExpiry
		}
		t.Errorf("message kept 3 s with expiry 60 delivered with expiry %v, want <= 58", v)
	}
}

func TestSubscriptionIdentifier(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	s := connectV5(t, tb, "sid", nil)
	s.sub(t, "sid/with/#", 1, func(sp *paho.Subscribe) {
		sp.Properties = &paho.SubscribeProperties{SubscriptionIdentifier: intp(42)}
	})
	s.sub(t, "sid/without/#", 1, nil)
	p := connectV5(t, tb, "sidpub", nil)
	p.pub(t, &paho.Publish{Topic: "sid/with/x", QoS: 1, Payload: []byte("a")})
	m := recv(t, s.Msgs, waitFor, "message")
	if m.Properties == nil || m.Properties.SubscriptionIdentifier == nil || *m.Properties.SubscriptionIdentifier != 42 {
		t.Errorf("message for a subscription with id 42 carries %+v", m.Properties)
	}
	p.pub(t, &paho.Publish{Topic: "sid/without/x", QoS: 1, Payload: []byte("b")})
	m = recv(t, s.Msgs, waitFor, "message")
	if m.Properties != nil && m.Properties.SubscriptionIdentifier != nil {
		t.Errorf("message for a subscription without id carries id %d", *m.Properties.SubscriptionIdentifier)
	}
}

func TestUserPropertiesPassThrough(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	s := connectV5(t, tb, "ups", nil)
	s.sub(t, "up/#", 1, nil)
	p := connectV5(t, tb, "upp", nil)
	props := paho.UserProperties{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}, {Key: "a", Value: "3"}}
	p.pub(t, &paho.Publish{Topic: "up/t", QoS: 1, Payload: []byte("x"),
		Properties: &paho.PublishProperties{User: props, ContentType: "text/plain"}})
	m := recv(t, s.Msgs, waitFor, "message")
	if m.Properties == nil || !slices.Equal(m.Properties.User, props) {
		t.Errorf("user properties %+v, want %v in order", m.Properties, props)
	} else if m.Properties.ContentType != "text/plain" {
		t.Errorf("content type %q", m.Properties.ContentType)
	}
}

func TestRequestResponse(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	responder := connectV5(t, tb, "rresp", nil)
	responder.sub(t, "rr/req", 1, nil)
	requester := connectV5(t, tb, "rreq", nil)
	requester.sub(t, "rr/resp/rreq", 1, nil)

	requester.pub(t, &paho.Publish{Topic: "rr/req", QoS: 1, Payload: []byte("ping"),
		Properties: &paho.PublishProperties{ResponseTopic: "rr/resp/rreq", CorrelationData: []byte{0, 1, 0xff}}})
	req := recv(t, responder.Msgs, waitFor, "request")
	if req.Properties == nil || req.Properties.ResponseTopic != "rr/resp/rreq" || string(req.Properties.CorrelationData) != "\x00\x01\xff" {
		t.Fatalf("request properties %+v", req.Properties)
	}
	responder.pub(t, &paho.Publish{Topic: req.Properties.ResponseTopic, QoS: 1, Payload: []byte("pong"),
		Properties: &paho.PublishProperties{CorrelationData: req.Properties.CorrelationData}})
	resp := recv(t, requester.Msgs, waitFor, "response")
	if string(resp.Payload) != "pong" || resp.Properties == nil || string(resp.Properties.CorrelationData) != "\x00\x01\xff" {
		t.Errorf("response %q properties %+v", resp.Payload, resp.Properties)
	}
}

func TestSharedSubscription(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	var members []*v5Client
	for i := range 2 {
		m := connectV5(t, tb, fmt.Sprintf("shm%d", i), nil)
		m.sub(t, "$share/g/sh/t", 1, nil)
		members = append(members, m)
	}
	plain := connectV5(t, tb, "shplain", nil)
	plain.sub(t, "sh/t", 1, nil)
	p := connectV5(t, tb, "shpub", nil)
	const n = 100
	for i := range n {
		p.pub(t, &paho.Publish{Topic: "sh/t", QoS: 1, Payload: []byte(strconv.Itoa(i))})
	}
	count := map[string]int{}
	var per []int
	for _, m := range members {
		got := drain(m.Msgs, quietFor, waitFor, n+1)
		per = append(per, len(got))
		for _, x := range got {
			count[string(x.Payload)]++
		}
	}
	for i := range n {
		if c := count[strconv.Itoa(i)]; c != 1 {
			t.Errorf("message %d delivered %d times across the group, want 1", i, c)
		}
	}
	if per[0] == 0 || per[1] == 0 {
		t.Errorf("group members received %v: both should get some", per)
	}
	if got := drain(plain.Msgs, quietFor, waitFor, n+1); len(got) != n {
		t.Errorf("non-shared subscriber received %d, want %d", len(got), n)
	}
}

// Overlapping subscriptions of one client deliver once, at the highest
// granted QoS, with every matching subscription identifier. paho's Publish
// holds one identifier only, so the subscriber is a raw MQTT 5 client.
func TestOverlappingSubscriptions(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	s := dialRaw(t, tb.Addr("tcp"), 5)
	s.connect("overlap", 30, nil)
	s.subscribe(1, "a/#", 1, 1)
	s.subscribe(2, "a/+", 2, 2)

	p := connectV5(t, tb, "overpub", nil)
	p.pub(t, &paho.Publish{Topic: "a/b", QoS: 2, Payload: []byte("once")})

	pk := s.readType(packets.Publish, waitFor)
	if pk.FixedHeader.Qos != 2 || string(pk.Payload) != "once" {
		t.Errorf("delivered at QoS %d payload %q, want QoS 2", pk.FixedHeader.Qos, pk.Payload)
	}
	ids := slices.Clone(pk.Properties.SubscriptionIdentifier)
	slices.Sort(ids)
	if !slices.Equal(ids, []int{1, 2}) {
		t.Errorf("subscription identifiers %v, want [1 2]", pk.Properties.SubscriptionIdentifier)
	}
	s.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID})
	rel := s.readType(packets.Pubrel, waitFor)
	s.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: rel.PacketID})
	if again, err := s.read(quietFor); err == nil {
		t.Errorf("second delivery: %s %q", packets.PacketNames[again.FixedHeader.Type], again.Payload)
	}
}

// ---- conformance details ----

func TestAcksCarryNoPublishProperties(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	c := dialRaw(t, tb.Addr("tcp"), 5)
	c.connect("ackprops", 30, nil)
	pub := func(id uint16, qos byte) {
		pk := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
			TopicName:   "ack/t", PacketID: id, Payload: []byte("x"),
		}
		pk.Properties.User = []packets.UserProperty{{Key: "k", Val: "v"}}
		pk.Properties.ContentType = "text/plain"
		pk.Properties.ResponseTopic = "ack/resp"
		pk.Properties.CorrelationData = []byte("corr")
		c.send(pk)
	}
	check := func(what string, ack packets.Packet) {
		t.Helper()
		p := ack.Properties
		if ack.ReasonCode != 0 || ack.FixedHeader.Remaining > 3 || len(p.User) > 0 || p.ContentType != "" ||
			p.ResponseTopic != "" || len(p.CorrelationData) > 0 || p.ReasonString != "" {
			t.Errorf("%s: reason 0x%02x, remaining length %d, properties %+v; want success and no properties",
				what, ack.ReasonCode, ack.FixedHeader.Remaining, p)
		}
	}
	pub(1, 1)
	check("PUBACK", c.readType(packets.Puback, waitFor))
	pub(2, 2)
	check("PUBREC", c.readType(packets.Pubrec, waitFor))
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 2})
	check("PUBCOMP", c.readType(packets.Pubcomp, waitFor))
}

func TestReceiveMaximumExceeded(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", func(c *Config) { c.Limits.ReceiveMaximum = 2 })
	c := dialRaw(t, tb.Addr("tcp"), 5)
	ack := c.connect("recvmax", 30, nil)
	if ack.Properties.ReceiveMaximum != 2 {
		t.Errorf("CONNACK receive maximum %d, want 2", ack.Properties.ReceiveMaximum)
	}
	for id := uint16(1); id <= 3; id++ {
		c.send(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2},
			TopicName:   "rm/t", PacketID: id, Payload: []byte("x"),
		})
	}
	var seen []string
	for {
		pk, err := c.read(waitFor)
		if err != nil {
			t.Fatalf("connection ended (%v) after %v without DISCONNECT 0x93", err, seen)
		}
		seen = append(seen, packets.PacketNames[pk.FixedHeader.Type])
		if pk.FixedHeader.Type == packets.Disconnect {
			if pk.ReasonCode != 0x93 {
				t.Errorf("DISCONNECT reason 0x%02x, want 0x93 (receive maximum exceeded)", pk.ReasonCode)
			}
			break
		}
	}
	if !slices.Equal(seen, []string{"Pubrec", "Pubrec", "Disconnect"}) {
		t.Errorf("got %v, want 2 PUBRECs then DISCONNECT", seen)
	}
}

// ---- $SYS ----

func TestSysTopics(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	p := connectV5(t, tb, "syspub", nil)
	p.pub(t, &paho.Publish{Topic: "sys/kept", QoS: 1, Retain: true, Payload: []byte("x")})
	s := connectV5(t, tb, "syssub", nil)
	s.sub(t, "$SYS/#", 0, nil)

	num := []string{
		"uptime", "clients/connected", "messages/received", "messages/sent",
		"load/bytes/received", "load/bytes/sent", "subscriptions", "retained",
	}
	atLeastOne := map[string]bool{ // counters our own traffic must have moved
		"clients/connected": true, "messages/received": true, "messages/sent": true,
		"load/bytes/received": true, "load/bytes/sent": true, "subscriptions": true, "retained": true,
	}
	latest := map[string]string{}
	ok := func() bool {
		if latest["version"] != "test" {
			return false
		}
		for _, k := range num {
			v, err := strconv.ParseInt(latest[k], 10, 64)
			if err != nil || v < 0 || atLeastOne[k] && v < 1 {
				return false
			}
		}
		return true
	}
	deadline := time.After(3500 * time.Millisecond)
	for !ok() {
		select {
		case m := <-s.Msgs:
			latest[strings.TrimPrefix(m.Topic, "$SYS/broker/")] = string(m.Payload)
		case <-deadline:
			t.Fatalf("$SYS values not all published within 3.5 s (sys interval 1 s); last seen: %v", latest)
		}
	}
}

// ---- graceful stop ----

func TestGracefulStopDisconnectsV5(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	c := connectV5(t, tb, "shutdown", nil)
	tb.stop()
	d := recv(t, c.ServerDisc, waitFor, "DISCONNECT on broker stop")
	if d.ReasonCode != 0x8B {
		t.Errorf("DISCONNECT reason 0x%02x, want 0x8B (server shutting down)", d.ReasonCode)
	}
}

// MQTT 3.1.1 has no DISCONNECT from the server: a v3 client is told by
// the connection closing. On a graceful stop it must not get a DISCONNECT.
func TestGracefulStopClosesV3(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	c := dialRaw(t, tb.Addr("tcp"), 4)
	c.connect("shutdown3", 30, nil)
	tb.stop()
	var got []string
	for {
		pk, err := c.read(waitFor)
		if err != nil {
			if ne := (net.Error)(nil); errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("v3 client still connected %v after the broker stopped", waitFor)
			}
			break
		}
		got = append(got, packets.PacketNames[pk.FixedHeader.Type])
	}
	if len(got) > 0 {
		t.Errorf("v3.1.1 client got %v on broker stop; MQTT 3.1.1 has no server DISCONNECT", got)
	}
}

// ---- the bus ----

func TestBusPublishReachesMQTT(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	s5 := connectV5(t, tb, "bps5", nil)
	s5.sub(t, "bus/in/#", 1, nil)
	s3 := connectV3(t, tb, "bps3", 4, nil)
	s3.sub(t, "bus/in/#", 2)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	err := tb.Publish(ctx, bus.Message{Topic: "bus/in/a", Payload: []byte("hello"), QoS: 1, Retain: true, Origin: "$test"})
	if err != nil {
		t.Fatal(err)
	}
	m := recv(t, s5.Msgs, waitFor, "bus message (v5)")
	if m.Topic != "bus/in/a" || string(m.Payload) != "hello" || m.QoS != 1 {
		t.Errorf("v5 got %s %q QoS %d", m.Topic, m.Payload, m.QoS)
	}
	m3 := recv(t, s3.Msgs, waitFor, "bus message (v3)")
	if m3.Topic() != "bus/in/a" || string(m3.Payload()) != "hello" || m3.Qos() != 1 {
		t.Errorf("v3 got %s %q QoS %d", m3.Topic(), m3.Payload(), m3.Qos())
	}
	late := connectV5(t, tb, "bpslate", nil)
	late.sub(t, "bus/in/#", 1, nil)
	if m := recv(t, late.Msgs, waitFor, "retained bus message"); string(m.Payload) != "hello" || !m.Retain {
		t.Errorf("late subscriber got %q retain=%v", m.Payload, m.Retain)
	}
}

func TestBusSubscribeSeesClientPublishes(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	got := make(chan bus.Message, 10)
	unsub, err := tb.Subscribe("bus/out/#", func(m bus.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()

	p5 := connectV5(t, tb, "bsp5", nil)
	p5.pub(t, &paho.Publish{Topic: "bus/out/5", QoS: 1, Payload: []byte("five"),
		Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "k", Value: "v"}}}})
	m := recv(t, got, waitFor, "bus delivery of a v5 publish")
	if m.Topic != "bus/out/5" || string(m.Payload) != "five" || m.Origin != "bsp5" || m.QoS != 1 ||
		!slices.Equal(m.UserProperties, []bus.UserProperty{{Key: "k", Value: "v"}}) {
		t.Errorf("got %+v", m)
	}
	p3 := connectV3(t, tb, "bsp3", 4, nil)
	p3.pub(t, "bus/out/3", 2, false, "three")
	m = recv(t, got, waitFor, "bus delivery of a v3 publish")
	if m.Topic != "bus/out/3" || string(m.Payload) != "three" || m.Origin != "bsp3" || m.QoS != 2 {
		t.Errorf("got %+v", m)
	}
	unsub()
	p5.pub(t, &paho.Publish{Topic: "bus/out/5", QoS: 1, Payload: []byte("after")})
	none(t, got, quietFor, "delivery after unsubscribe")
}

func TestTapRunsBeforePuback(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	entered := make(chan bus.Message, 1)
	release := make(chan struct{})
	remove, err := tb.Tap("tap/#", func(m bus.Message) error {
		entered <- m
		<-release
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	s := connectV5(t, tb, "taps", nil)
	s.sub(t, "tap/#", 1, nil)
	p := connectV5(t, tb, "tapp", nil)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		_, err := p.Publish(ctx, &paho.Publish{Topic: "tap/t", QoS: 1, Payload: []byte("x")})
		done <- err
	}()
	m := recv(t, entered, waitFor, "tap call")
	if m.Origin != "tapp" || m.Topic != "tap/t" {
		t.Errorf("tap saw %+v", m)
	}
	select {
	case err := <-done:
		close(release)
		t.Fatalf("publisher acknowledged (err %v) while the tap was still running", err)
	case <-time.After(quietFor):
	}
	none(t, s.Msgs, 0, "delivery before the tap returned")
	close(release)
	if err := recv(t, done, waitFor, "PUBACK after the tap returned"); err != nil {
		t.Fatalf("publish: %v", err)
	}
	recv(t, s.Msgs, waitFor, "delivery after the tap accepted")
}

func TestTapRefusal(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, "", nil)
	remove, err := tb.Tap("refuse/#", func(bus.Message) error { return bus.ErrQuotaExceeded })
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	s := connectV5(t, tb, "refsub", nil)
	s.sub(t, "refuse/#", 2, nil)
	pingOK := func(c *rawClient) bool {
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
		pk, err := c.read(waitFor)
		return err == nil && pk.FixedHeader.Type == packets.Pingresp
	}
	publish := func(c *rawClient, qos byte, id uint16) {
		c.send(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
			TopicName:   "refuse/t", PacketID: id, Payload: []byte("no"),
		})
	}

	t.Run("v5 QoS 1 (paho)", func(t *testing.T) {
		p := connectV5(t, tb, "ref5q1", nil)
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		r, err := p.Publish(ctx, &paho.Publish{Topic: "refuse/t", QoS: 1, Payload: []byte("no")})
		if err == nil || r == nil || r.ReasonCode != 0x97 {
			t.Errorf("publish: response %+v err %v, want PUBACK 0x97", r, err)
		}
		none(t, s.Msgs, quietFor, "delivery of a refused message")
	})
	t.Run("v5 QoS 2", func(t *testing.T) {
		c := dialRaw(t, tb.Addr("tcp"), 5)
		c.connect("ref5q2", 30, nil)
		publish(c, 2, 7)
		pk, err := c.read(waitFor)
		if err != nil {
			t.Fatalf("no answer to a refused QoS 2 publish: %v", err)
		}
		if pk.FixedHeader.Type == packets.Puback {
			t.Fatalf("regression: refused v5 QoS 2 publish answered with PUBACK (reason 0x%02x) instead of PUBREC 0x97 "+
				"(mochi server.go processPublish always builds a Puback for a hook's reason code; hook.go refusal)", pk.ReasonCode)
		}
		if pk.FixedHeader.Type != packets.Pubrec || pk.PacketID != 7 || pk.ReasonCode != 0x97 {
			t.Errorf("got %s id %d reason 0x%02x, want PUBREC id 7 reason 0x97",
				packets.PacketNames[pk.FixedHeader.Type], pk.PacketID, pk.ReasonCode)
		}
		none(t, s.Msgs, quietFor, "delivery of a refused message")
	})
	t.Run("v311 QoS 1", func(t *testing.T) {
		c := dialRaw(t, tb.Addr("tcp"), 4)
		c.connect("ref3q1", 30, nil)
		publish(c, 1, 9)
		var got []string
		for {
			pk, err := c.read(waitFor)
			if err != nil {
				if ne := (net.Error)(nil); errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("v3 publisher refused by a tap still connected after %v (got %v)", waitFor, got)
				}
				break
			}
			got = append(got, packets.PacketNames[pk.FixedHeader.Type])
		}
		if slices.Contains(got, "Puback") {
			t.Errorf("v3 publisher refused by a tap got %v, want no PUBACK and the connection closed", got)
		}
		none(t, s.Msgs, quietFor, "delivery of a refused message")
		if len(got) > 0 {
			t.Errorf("v3.1.1 client got %v before the close; MQTT 3.1.1 has no server DISCONNECT", got)
		}
	})
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d QoS 0", v), func(t *testing.T) {
			c := dialRaw(t, tb.Addr("tcp"), v)
			c.connect(fmt.Sprintf("ref%dq0", v), 30, nil)
			publish(c, 0, 0)
			if !pingOK(c) {
				t.Error("QoS 0 publisher disconnected after a tap refusal; want the message dropped silently")
			}
			none(t, s.Msgs, quietFor, "delivery of a refused QoS 0 message")
		})
	}
	if n := tb.Stats().TapRefusals.Load(); n < 4 {
		t.Errorf("TapRefusals = %d, want >= 4", n)
	}

	// A gateway part's publish refused by a tap gets the refusal back.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	err = tb.Publish(ctx, bus.Message{Topic: "refuse/bus", QoS: 1, Payload: []byte("no"), Origin: "$test"})
	if r := bus.RefusalOf(err); r == nil || r.Code != 0x97 {
		t.Errorf("bus publish refused by a tap: err %v, want quota exceeded", err)
	}
	none(t, s.Msgs, quietFor, "delivery of a refused bus message")
}
