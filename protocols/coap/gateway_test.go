package coap

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/fieldgate/fieldgate/bus"
)

func TestPublish(t *testing.T) {
	e := startEnv(t, nil, nil)
	cc := e.dial()
	msgs := e.capture("p/#")
	json := message.AppJSON
	tests := []struct {
		name   string
		method codes.Code
		typ    message.Type
		path   string
		cf     *message.MediaType
		query  []string
		topic  string
		qos    byte
		retain bool
		expiry time.Duration
		ctype  string
	}{
		{name: "CON POST is QoS 1", method: codes.POST, typ: message.Confirmable, path: "/ps/p/con", topic: "p/con", qos: 1},
		{name: "NON POST is QoS 0", method: codes.POST, typ: message.NonConfirmable, path: "/ps/p/non", topic: "p/non", qos: 0},
		{name: "PUT on /ps", method: codes.PUT, typ: message.Confirmable, path: "/ps/p/put", topic: "p/put", qos: 1},
		{name: "EMQX 4 PUT /mqtt", method: codes.PUT, typ: message.Confirmable, path: "/mqtt/p/legacy", topic: "p/legacy", qos: 1},
		{name: "overrides", method: codes.POST, typ: message.NonConfirmable, path: "/ps/p/over", query: []string{"qos=2", "retain=true", "expiry=60"}, topic: "p/over", qos: 2, retain: true, expiry: time.Minute},
		{name: "short names", method: codes.POST, typ: message.Confirmable, path: "/ps/p/short", query: []string{"q=0", "r=1", "c=dev-7"}, topic: "p/short", qos: 0, retain: true},
		{name: "percent-decoded", method: codes.POST, typ: message.Confirmable, path: "/ps/p/a%20b", topic: "p/a b", qos: 1},
		{name: "json content format", method: codes.POST, typ: message.Confirmable, path: "/ps/p/json", cf: &json, topic: "p/json", qos: 1, ctype: "application/json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			payload := []byte("hello " + tc.name)
			code, body := do(t, cc, tc.method, tc.typ, tc.path, tc.cf, payload, query(tc.query...)...)
			if code != codes.Changed {
				t.Fatalf("code %v (%s), want 2.04", code, body)
			}
			m := recv(t, msgs)
			if m.Topic != tc.topic || !bytes.Equal(m.Payload, payload) || m.QoS != tc.qos || m.Retain != tc.retain || m.ContentType != tc.ctype {
				t.Fatalf("got topic %q payload %q qos %d retain %v ctype %q; want %q %q %d %v %q",
					m.Topic, m.Payload, m.QoS, m.Retain, m.ContentType, tc.topic, payload, tc.qos, tc.retain, tc.ctype)
			}
			if tc.expiry != 0 && (m.Expiry <= 0 || m.Expiry > tc.expiry) {
				t.Fatalf("expiry %v, want about %v", m.Expiry, tc.expiry)
			}
		})
	}
	if s := e.g.Stats(); s.Publishes != uint64(len(tests)) || s.Requests["POST"] == 0 || s.Requests["PUT"] != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestErrorCodes(t *testing.T) {
	e := startEnv(t, nil, nil)
	cc := e.dial()
	remove, err := e.b.Tap("full/#", func(bus.Message) error { return bus.ErrQuotaExceeded })
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	tests := []struct {
		name   string
		method codes.Code
		path   string
		query  []string
		want   codes.Code
	}{
		{"unknown path", codes.POST, "/nope/x", nil, codes.NotFound},
		{"method not allowed", codes.DELETE, "/ps/x", nil, codes.MethodNotAllowed},
		{"bad qos", codes.POST, "/ps/x", []string{"qos=3"}, codes.BadRequest},
		{"bad retain", codes.POST, "/ps/x", []string{"retain=maybe"}, codes.BadRequest},
		{"wildcard publish", codes.POST, "/ps/a/+", nil, codes.BadRequest},
		{"bad filter", codes.GET, "/ps/a/b#", nil, codes.BadRequest},
		{"bad password", codes.POST, "/ps/x", []string{"u=alice", "p=wrong"}, codes.Unauthorized},
		{"acl denied", codes.POST, "/ps/denied/x", []string{"u=alice", "p=secret"}, codes.Forbidden},
		{"quota exceeded", codes.POST, "/ps/full/x", nil, codes.ServiceUnavailable},
		{"no retained", codes.GET, "/ps/nothing/here", nil, codes.NotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var payload []byte
			if tc.method == codes.POST {
				payload = []byte("x")
			}
			code, body := do(t, cc, tc.method, message.Confirmable, tc.path, nil, payload, query(tc.query...)...)
			if code != tc.want {
				t.Fatalf("code %v (%s), want %v", code, body, tc.want)
			}
		})
	}
	errs := e.g.Stats().Errors
	if errs["4.04"] != 2 || errs["4.01"] != 1 || errs["4.03"] != 1 || errs["5.03"] != 1 {
		t.Fatalf("errors by code: %v", errs)
	}
}

func TestGetRetained(t *testing.T) {
	e := startEnv(t, nil, nil)
	cc := e.dial()
	ctx := ctxT(t)
	big := bytes.Repeat([]byte("0123456789"), 500) // 5000 bytes: Block2
	for topic, payload := range map[string][]byte{"r/small": []byte("21.5"), "r/big": big} {
		if err := e.b.Publish(ctx, bus.Message{Topic: topic, Payload: payload, Retain: true, ContentType: "application/json"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, topic := range []string{"r/small", "r/big"} {
		resp, err := cc.Get(ctx, "/ps/"+topic)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := resp.ReadBody()
		cf, _ := resp.ContentFormat()
		if resp.Code() != codes.Content || cf != message.AppJSON {
			t.Fatalf("%s: code %v cf %v", topic, resp.Code(), cf)
		}
		if topic == "r/big" && !bytes.Equal(body, big) {
			t.Fatalf("big retained: got %d bytes", len(body))
		}
		if topic == "r/small" && string(body) != "21.5" {
			t.Fatalf("small retained: %q", body)
		}
	}
	if code, _ := do(t, cc, codes.GET, message.Confirmable, "/ps/r/none", nil, nil); code != codes.NotFound {
		t.Fatalf("missing retained: %v", code)
	}
	if code, _ := do(t, cc, codes.GET, message.Confirmable, "/ps/denied/x", nil, nil, query("u=alice", "p=secret")...); code != codes.Forbidden {
		t.Fatalf("retained read denied by ACL: %v", code)
	}
}

// observer collects notifications.
type observer struct {
	ch chan *notification
}

type notification struct {
	payload []byte
	cf      message.MediaType
	typ     message.Type
}

func newObserver() *observer { return &observer{ch: make(chan *notification, 64)} }

func (o *observer) fn(n *pool.Message) {
	body, _ := n.ReadBody()
	cf, _ := n.ContentFormat()
	if len(body) == 0 {
		return // the registration answer
	}
	o.ch <- &notification{payload: body, cf: cf, typ: n.Type()}
}

func (o *observer) next(t testing.TB) *notification {
	t.Helper()
	select {
	case n := <-o.ch:
		return n
	case <-time.After(5 * time.Second):
		t.Fatal("no notification within 5s")
	}
	return nil
}

func TestObserve(t *testing.T) {
	for _, notify := range []string{NotifyNon, NotifyCon, NotifyQoS} {
		t.Run(notify, func(t *testing.T) {
			e := startEnv(t, nil, func(c *Config) { c.NotifyType = notify })
			cc := e.dial()
			ctx := ctxT(t)
			obs := newObserver()
			o, err := cc.Observe(ctx, "/ps/o/+/temp", obs.fn)
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, "observer", func() bool { return e.g.Stats().Observers == 1 })
			for i, qos := range []byte{0, 1} {
				payload := []byte(strings.Repeat("x", i+1))
				if err := e.b.Publish(ctx, bus.Message{Topic: "o/k1/temp", Payload: payload, QoS: qos, ContentType: "application/json"}); err != nil {
					t.Fatal(err)
				}
				n := obs.next(t)
				if !bytes.Equal(n.payload, payload) || n.cf != message.AppJSON {
					t.Fatalf("notification %q cf %v", n.payload, n.cf)
				}
				wantCON := notify == NotifyCon || (notify == NotifyQoS && qos > 0)
				if (n.typ == message.Confirmable) != wantCON {
					t.Fatalf("notify_type %s qos %d: type %v", notify, qos, n.typ)
				}
			}
			if err := o.Cancel(ctx); err != nil {
				t.Fatal(err)
			}
			eventually(t, "no observers", func() bool { return e.g.Stats().Observers == 0 })
			if err := e.b.Publish(ctx, bus.Message{Topic: "o/k1/temp", Payload: []byte("after")}); err != nil {
				t.Fatal(err)
			}
			select {
			case n := <-obs.ch:
				t.Fatalf("notification after cancel: %q", n.payload)
			case <-time.After(200 * time.Millisecond):
			}
		})
	}
}

func TestObserveBlockwise(t *testing.T) {
	e := startEnv(t, nil, nil)
	cc := e.dial()
	ctx := ctxT(t)
	obs := newObserver()
	if _, err := cc.Observe(ctx, "/ps/big", obs.fn); err != nil {
		t.Fatal(err)
	}
	eventually(t, "observer", func() bool { return e.g.Stats().Observers == 1 })
	big := bytes.Repeat([]byte("abcdefghij"), 600) // 6000 bytes
	if err := e.b.Publish(ctx, bus.Message{Topic: "big", Payload: big, QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if n := obs.next(t); !bytes.Equal(n.payload, big) {
		t.Fatalf("large notification: %d bytes", len(n.payload))
	}
}

func TestPublishBlockwise(t *testing.T) {
	e := startEnv(t, nil, func(c *Config) { c.MaxPayload = 8000 })
	cc := e.dial()
	msgs := e.capture("up")
	big := bytes.Repeat([]byte("0123456789"), 700) // 7000 bytes: Block1
	if code, body := do(t, cc, codes.POST, message.Confirmable, "/ps/up", nil, big); code != codes.Changed {
		t.Fatalf("code %v (%s)", code, body)
	}
	if m := recv(t, msgs); !bytes.Equal(m.Payload, big) {
		t.Fatalf("got %d bytes", len(m.Payload))
	}
	tooBig := bytes.Repeat([]byte("x"), 9000)
	if code, _ := do(t, cc, codes.POST, message.Confirmable, "/ps/up", nil, tooBig); code != codes.RequestEntityTooLarge {
		t.Fatalf("too large: %v, want 4.13", code)
	}
	noMessage(t, msgs, 100*time.Millisecond)
}

func TestConnectionMode(t *testing.T) {
	e := startEnv(t, nil, func(c *Config) { c.ConnectionRequired = true; c.Heartbeat = time.Second })
	cc := e.dial()
	msgs := e.capture("c/#")

	if code, _ := do(t, cc, codes.POST, message.Confirmable, "/ps/c/anon", nil, []byte("x")); code != codes.Unauthorized {
		t.Fatalf("anonymous publish with connection_required: %v", code)
	}
	if code, _ := do(t, cc, codes.POST, message.Confirmable, "/mqtt/connection", nil, nil, query("clientid=d1", "username=alice", "password=wrong")...); code != codes.Unauthorized {
		t.Fatalf("bad password: %v", code)
	}
	code, token := do(t, cc, codes.POST, message.Confirmable, "/mqtt/connection", nil, nil, query("clientid=d1", "username=alice", "password=secret")...)
	if code != codes.Created || len(token) == 0 {
		t.Fatalf("connect: %v %q", code, token)
	}
	auth := query("clientid=d1", "token="+string(token))
	if code, _ := do(t, cc, codes.POST, message.Confirmable, "/ps/c/x", nil, []byte("hi"), auth...); code != codes.Changed {
		t.Fatalf("publish: %v", code)
	}
	if m := recv(t, msgs); m.Topic != "c/x" || string(m.Payload) != "hi" {
		t.Fatalf("got %q %q", m.Topic, m.Payload)
	}
	if code, _ := do(t, cc, codes.POST, message.Confirmable, "/ps/c/x", nil, []byte("hi"), query("clientid=d1", "token=bad")...); code != codes.Unauthorized {
		t.Fatalf("bad token: %v", code)
	}
	if code, _ := do(t, cc, codes.POST, message.Confirmable, "/ps/denied/x", nil, []byte("hi"), auth...); code != codes.Forbidden {
		t.Fatalf("ACL publish: %v", code)
	}
	if code, _ := do(t, cc, codes.GET, message.Confirmable, "/ps/denied/#", nil, nil, append(auth, message.Option{ID: message.Observe, Value: []byte{}})...); code != codes.Forbidden {
		t.Fatalf("ACL observe: %v", code)
	}
	if e.g.Stats().Connections != 1 {
		t.Fatalf("connections: %+v", e.g.Stats())
	}
	// Heartbeats keep it alive past 1.5 × heartbeat.
	for range 4 {
		if code, _ := do(t, cc, codes.PUT, message.Confirmable, "/mqtt/connection", nil, nil, auth...); code != codes.Changed {
			t.Fatalf("heartbeat: %v", code)
		}
		time.Sleep(500 * time.Millisecond) // kept sleep: paces heartbeats as a device does; real time past 1.5 × heartbeat over UDP is what is under test
	}
	if code, _ := do(t, cc, codes.DELETE, message.Confirmable, "/mqtt/connection", nil, nil, auth...); code != codes.Deleted {
		t.Fatalf("disconnect: %v", code)
	}
	if code, _ := do(t, cc, codes.POST, message.Confirmable, "/ps/c/x", nil, []byte("hi"), auth...); code != codes.Unauthorized {
		t.Fatalf("after disconnect: %v", code)
	}
	// A connection that stops sending heartbeats is closed.
	_, token = do(t, cc, codes.POST, message.Confirmable, "/mqtt/connection", nil, nil, query("clientid=d2")...)
	if len(token) == 0 {
		t.Fatal("anonymous connection refused")
	}
	eventually(t, "connection closed for missed heartbeats", func() bool { return e.g.Stats().Connections == 0 })
	if code, _ := do(t, cc, codes.PUT, message.Confirmable, "/mqtt/connection", nil, nil, query("clientid=d2", "token="+string(token))...); code != codes.Unauthorized {
		t.Fatalf("heartbeat after expiry: %v", code)
	}
}
