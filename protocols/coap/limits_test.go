package coap

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/membudget"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// overlapping returns n distinct filters that all match topic: topic with
// every subset of its levels replaced by '+' (topic must have enough
// levels).
func overlapping(topic string, n int) []string {
	levels := strings.Split(topic, "/")
	out := make([]string, 0, n)
	for mask := 0; len(out) < n && mask < 1<<len(levels); mask++ {
		f := make([]string, len(levels))
		for i, l := range levels {
			if mask&(1<<i) != 0 {
				f[i] = "+"
			} else {
				f[i] = l
			}
		}
		out = append(out, strings.Join(f, "/"))
	}
	return out
}

// observeMsg is a GET with Observe=0 of /ps/{filter}.
func observeMsg(typ message.Type, mid uint16, token []byte, filter string) message.Message {
	opts := message.Options{{ID: message.Observe, Value: []byte{}}, {ID: message.URIPath, Value: []byte("ps")}}
	for _, seg := range strings.Split(filter, "/") {
		opts = append(opts, message.Option{ID: message.URIPath, Value: []byte(seg)})
	}
	return message.Message{Type: typ, Code: codes.GET, MessageID: int32(mid), Token: token, Options: opts}
}

// readAll reads what arrives at p until quiet passes with nothing.
func (p *rawPeer) readAll(quiet time.Duration) []message.Message {
	var out []message.Message
	buf := make([]byte, 2048)
	for {
		_ = p.conn.SetReadDeadline(time.Now().Add(quiet))
		n, err := p.conn.Read(buf)
		if err != nil {
			return out
		}
		m := message.Message{Options: make(message.Options, 0, 16)}
		if _, err := coder.DefaultCoder.Decode(buf[:n], &m); err != nil {
			p.t.Fatalf("undecodable datagram from the gateway: %v", err)
		}
		out = append(out, m)
	}
}

// TestObservationFlood is issue 17 item 7: one endpoint registered 1,023
// overlapping observations, and one 131-byte publish then sent it 1,023
// datagrams (867× amplification). Now the endpoint gets at most
// max_observations_per_endpoint (16) of them, the rest 4.29, and one publish
// sends it one notification.
func TestObservationFlood(t *testing.T) {
	budget := membudget.New(0)
	e := startEnvOpts(t, nil, func(c *Config) { c.NotifyType = NotifyNon }, WithBudget(budget))
	p := newRawPeer(t, e.addr)
	const topic = "f/l1/l2/l3/l4/l5/l6/l7/l8/l9"
	filters := overlapping(topic, 1023)
	got := make(chan []message.Message, 1)
	go func() { got <- p.readAll(2 * time.Second) }()
	for i, f := range filters {
		p.send(observeMsg(message.Confirmable, uint16(1000+i), []byte(fmt.Sprintf("t%04d", i)), f))
		if i%64 == 63 {
			time.Sleep(5 * time.Millisecond) // kept sleep: paces the flood so UDP socket buffers drain; nothing to observe
		}
	}
	answers := <-got
	accepted, tooMany, other := 0, 0, map[string]int{}
	for _, a := range answers {
		switch {
		case a.Code == codes.Content && hasObserve(a):
			accepted++
		case a.Code == codes.TooManyRequests:
			tooMany++
		default:
			other[a.Code.String()]++
		}
	}
	t.Logf("1,023 registrations from one endpoint: %d accepted, %d refused 4.29, other %v", accepted, tooMany, other)
	s := e.g.Stats()
	if accepted != 16 || s.Observers != 16 {
		t.Fatalf("%d registrations accepted, %d observers; want 16", accepted, s.Observers)
	}
	if tooMany == 0 || len(other) > 0 {
		t.Fatalf("refusals: %d 4.29, others %v", tooMany, other)
	}
	if used := budget.Account(budgetAccount).Used(); used != 16*observationCost {
		t.Fatalf("budget holds %d bytes for 16 observations, want %d", used, 16*observationCost)
	}

	// One 131-byte publish: one datagram to the endpoint.
	payload := []byte(strings.Repeat("x", 131))
	if err := e.b.Publish(ctxT(t), bus.Message{Topic: topic, Payload: payload}); err != nil {
		t.Fatal(err)
	}
	notes := p.readAll(time.Second)
	t.Logf("one %d-byte publish sent the endpoint %d datagram(s); %d notifications coalesced", len(payload), len(notes), e.g.Stats().Coalesced)
	if len(notes) != 1 || string(notes[0].Payload) != string(payload) {
		t.Fatalf("%d datagrams for one publish, want 1", len(notes))
	}
	if c := e.g.Stats().Coalesced; c != 15 {
		t.Fatalf("coalesced %d, want 15", c)
	}
	// The most specific observation (the topic itself) got it.
	if tok := string(notes[0].Token); tok != "t0000" {
		t.Fatalf("notification for token %q, want the exact filter's t0000", tok)
	}
}

func hasObserve(m message.Message) bool {
	for _, o := range m.Options {
		if o.ID == message.Observe {
			return true
		}
	}
	return false
}

// TestObservationsTotalCap: beyond max_observations, over all endpoints, a
// registration gets 5.03, and so it does beyond the memory budget.
func TestObservationsTotalCap(t *testing.T) {
	tests := []struct {
		name   string
		cfg    func(*Config)
		budget int64
	}{
		{"max_observations", func(c *Config) { c.MaxObservations = 5 }, 0},
		{"memory budget", nil, 6*deviceCost + 5*observationCost}, // six devices, five observations
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b *membudget.Budget
			if tc.budget > 0 {
				b = membudget.New(tc.budget)
			}
			e := startEnvOpts(t, nil, tc.cfg, WithBudget(b))
			for i := range 6 {
				p := newRawPeer(t, e.addr)
				p.send(observeMsg(message.Confirmable, uint16(i+1), []byte{byte(i)}, fmt.Sprintf("tot/%d", i)))
				a := p.read()
				want := codes.Content
				if i == 5 {
					want = codes.ServiceUnavailable
				}
				if a.Code != want {
					t.Fatalf("registration %d: %v, want %v", i+1, a.Code, want)
				}
			}
			if s := e.g.Stats(); s.Observers != 5 || s.ObservationsRefused != 1 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// TestObserverGoneExpires is issue 17 item 7: observations of an endpoint
// that went away never expired. Now an endpoint that does not answer is
// dropped within observe_check_interval + ack_timeout (here 1 s + 1 s),
// whether notifications flow (every fifth is CON) or not (a CoAP ping).
func TestObserverGoneExpires(t *testing.T) {
	for _, publishing := range []bool{false, true} {
		t.Run(fmt.Sprintf("publishing=%v", publishing), func(t *testing.T) {
			e := startEnv(t, nil, func(c *Config) {
				c.NotifyType = NotifyNon
				c.ObserveCheck = time.Second
				c.AckTimeout = time.Second
			})
			p := newRawPeer(t, e.addr)
			for i := range 3 {
				p.send(observeMsg(message.Confirmable, uint16(i+1), []byte{byte(i)}, fmt.Sprintf("gone/%d", i)))
				if a := p.read(); a.Code != codes.Content {
					t.Fatalf("registration: %v", a.Code)
				}
			}
			_ = p.conn.Close() // the endpoint goes away
			gone := time.Now()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if publishing {
				go func() {
					for ctx.Err() == nil {
						_ = e.b.Publish(ctx, bus.Message{Topic: "gone/0", Payload: []byte("x")})
						time.Sleep(10 * time.Millisecond) // kept sleep: paces the publisher, a load generator
					}
				}()
			}
			testwait.NoError(t, 5*time.Second, func() error {
				if s := e.g.Stats(); s.Observers > 0 {
					return fmt.Errorf("observations of a vanished endpoint still there: %+v", s)
				}
				return nil
			})
			cancel()
			s := e.g.Stats()
			t.Logf("observations ended %s after the endpoint went away (pings %d, notifications %d)", time.Since(gone).Round(10*time.Millisecond), s.Pings, s.Notifications)
			if s.ObservationsExpired != 3 {
				t.Fatalf("expired %d, want 3", s.ObservationsExpired)
			}
			if !publishing && s.Pings == 0 {
				t.Fatal("no ping sent")
			}
		})
	}
}

// TestLiveObserverKept: an endpoint that answers the pings (libcoap's
// coap-client answers an Empty CON with RST, RFC 7252 §4.3) keeps its
// observation past several checks, and gets the message.
func TestLiveObserverKept(t *testing.T) {
	client := coapClient(t)
	e := startEnv(t, nil, func(c *Config) {
		c.ObserveCheck = time.Second
		c.AckTimeout = 2 * time.Second
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out strings.Builder
	obs := exec.CommandContext(ctx, client, "-s", "6", "-B", "6", "coap://"+e.addr+"/ps/live/t")
	obs.Stdout = &out
	if err := obs.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "observing", func() bool { return e.g.Stats().Observers == 1 })
	eventually(t, "two pings", func() bool { return e.g.Stats().Pings >= 2 })
	if s := e.g.Stats(); s.Observers != 1 || s.ObservationsExpired != 0 {
		t.Fatalf("a live observer was dropped: %+v", s)
	}
	if err := e.b.Publish(ctxT(t), bus.Message{Topic: "live/t", Payload: []byte("still-here")}); err != nil {
		t.Fatal(err)
	}
	_ = obs.Wait()
	if !strings.Contains(out.String(), "still-here") {
		t.Fatalf("coap-client got %q", out.String())
	}
}

// TestPingAnsweredKeepsRawObserver: a bare peer that answers the ping with
// RST keeps its observation (the RST answers the ping, it does not cancel
// a notification).
func TestPingAnsweredKeepsRawObserver(t *testing.T) {
	e := startEnv(t, nil, func(c *Config) {
		c.ObserveCheck = time.Second
		c.AckTimeout = 2 * time.Second
	})
	p := newRawPeer(t, e.addr)
	p.send(observeMsg(message.Confirmable, 1, []byte{9}, "pinged"))
	if a := p.read(); a.Code != codes.Content {
		t.Fatalf("registration: %v", a.Code)
	}
	for range 2 {
		ping := p.read()
		if ping.Type != message.Confirmable || ping.Code != codes.Empty || len(ping.Token) != 0 {
			t.Fatalf("not a CoAP ping: %v", ping.String())
		}
		p.send(message.Message{Type: message.Reset, Code: codes.Empty, MessageID: ping.MessageID})
	}
	if s := e.g.Stats(); s.Observers != 1 || s.ObservationsExpired != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestPublishToSysAnswersAtOnce is issue 17 item 10: a CoAP POST to
// /ps/$SYS/x hung 30 s. It gets 4.03 at once.
func TestPublishToSysAnswersAtOnce(t *testing.T) {
	e := startEnv(t, nil, nil)
	cc := e.dial()
	for _, path := range []string{"/ps/$SYS/x", "/mqtt/$SYS/broker/uptime", "/ps/$sys/x"} {
		for _, typ := range []message.Type{message.Confirmable, message.NonConfirmable} {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			req, err := cc.NewPostRequest(ctx, path, message.TextPlain, strings.NewReader("x"))
			if err != nil {
				t.Fatal(err)
			}
			req.SetType(typ)
			start := time.Now()
			resp, err := cc.Do(req)
			cancel()
			if err != nil {
				t.Fatalf("POST %s (%v): no answer within 2 s: %v", path, typ, err)
			}
			if resp.Code() != codes.Forbidden {
				t.Fatalf("POST %s (%v): %v, want 4.03", path, typ, resp.Code())
			}
			t.Logf("POST %s (%v): 4.03 in %s", path, typ, time.Since(start).Round(time.Microsecond))
			cc.ReleaseMessage(resp)
			cc.ReleaseMessage(req)
		}
	}
}

// TestObservationCost measures what one observation costs, for
// observationCost (the budget's estimate).
func TestObservationCost(t *testing.T) {
	const endpoints, per = 40, 16
	e := startEnv(t, nil, nil)
	peers := make([]*rawPeer, endpoints)
	for i := range peers {
		peers[i] = newRawPeer(t, e.addr)
	}
	// One warm-up observation per endpoint: the endpoint's go-coap
	// connection and device session are not the observations' cost.
	for i, p := range peers {
		p.send(observeMsg(message.Confirmable, 1, []byte{0}, fmt.Sprintf("cost/%d/warm", i)))
		if a := p.read(); a.Code != codes.Content {
			t.Fatalf("registration: %v", a.Code)
		}
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for i, p := range peers {
		for j := 1; j < per; j++ {
			p.send(observeMsg(message.Confirmable, uint16(j+1), []byte{byte(j)}, fmt.Sprintf("cost/%d/level-%d/+/x", i, j)))
			if a := p.read(); a.Code != codes.Content {
				t.Fatalf("registration: %v", a.Code)
			}
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	n := int64(endpoints * (per - 1))
	cost := (int64(m1.HeapAlloc) - int64(m0.HeapAlloc)) / n
	t.Logf("per observation: %d bytes of heap", cost)
	if cost > observationCost {
		t.Errorf("an observation holds %d bytes, more than observationCost (%d): raise it", cost, observationCost)
	}
}

// publishMsg is a NON POST /ps/{topic}?c={clientID}.
func publishMsg(mid uint16, topic, clientID string) message.Message {
	opts := message.Options{{ID: message.URIPath, Value: []byte("ps")}, {ID: message.URIPath, Value: []byte(topic)},
		{ID: message.URIQuery, Value: []byte("c=" + clientID)}}
	return message.Message{Type: message.NonConfirmable, Code: codes.POST, MessageID: int32(mid), Token: []byte{byte(mid), byte(mid >> 8)}, Options: opts, Payload: []byte("x")}
}

// TestDeviceFlood: every new source or client id of a connectionless
// request is a broker session (the same per-peer cost as an MQTT-SN
// device); they count against the memory budget, and beyond it a new
// device gets 5.03 while the known ones go on.
func TestDeviceFlood(t *testing.T) {
	const devices, room = 2000, 100
	budget := membudget.New(room * deviceCost)
	e := startEnvOpts(t, nil, nil, WithBudget(budget))
	p := newRawPeer(t, e.addr)
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	g0 := runtime.NumGoroutine()
	got := make(chan []message.Message, 1)
	go func() { got <- p.readAll(2 * time.Second) }()
	for i := range devices {
		p.send(publishMsg(uint16(i+1), "flood", fmt.Sprintf("dev-%d", i)))
		if i%64 == 63 {
			time.Sleep(5 * time.Millisecond) // kept sleep: paces the flood so UDP socket buffers drain; nothing to observe
		}
	}
	answers := <-got
	runtime.GC()
	runtime.ReadMemStats(&m1)
	changed, unavailable := 0, 0
	for _, a := range answers {
		switch a.Code {
		case codes.Changed:
			changed++
		case codes.ServiceUnavailable:
			unavailable++
		}
	}
	s := e.g.Stats()
	t.Logf("%d new devices: %d sessions (%d published, %d refused 5.03); heap %+.1f MiB, goroutines %+d",
		devices, s.Sessions, changed, unavailable, float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/(1<<20), runtime.NumGoroutine()-g0)
	if s.Sessions > room || unavailable == 0 {
		t.Fatalf("%d sessions for a budget of %d, %d refused", s.Sessions, room, unavailable)
	}
	if used := budget.Account(sessionsAccount).Used(); used > room*deviceCost {
		t.Fatalf("budget used %d", used)
	}
}

// TestDeviceCost measures what one connectionless device costs, for
// deviceCost.
func TestDeviceCost(t *testing.T) {
	const n = 300
	e := startEnv(t, nil, nil)
	p := newRawPeer(t, e.addr)
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for i := range n {
		p.send(publishMsg(uint16(i+1), "cost", fmt.Sprintf("dev-%d", i)))
		if a := p.read(); a.Code != codes.Changed {
			t.Fatalf("publish: %v", a.Code)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	cost := (int64(m1.HeapAlloc+m1.StackInuse) - int64(m0.HeapAlloc+m0.StackInuse)) / n
	t.Logf("per CoAP device: %d bytes of heap and stacks", cost)
	limit := int64(deviceCost)
	if raceBuild {
		limit = limit * 3 / 2 // the detector's shadow memory and bigger stacks
	}
	if cost > limit {
		t.Errorf("a device holds %d bytes, more than deviceCost (%d, %d allowed in this build): raise it", cost, deviceCost, limit)
	}
}
