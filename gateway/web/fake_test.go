package web

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/rules"
	"github.com/fieldgate/fieldgate/uplink"
)

// fakeBackend is a Backend over an in-memory config and a bus.Memory-like
// subscriber list, for tests of the API without a gateway.
type fakeBackend struct {
	mu       sync.Mutex
	cfg      config.Config
	applied  int
	subs     map[int]subscription
	next     int
	ring     *LogRing
	reg      *prometheus.Registry
	ready    bool
	clients  []Client
	written  []string
	uplinkOK bool
	msgs     int64
	sub      func(filter string, h bus.Handler) (func(), error) // overrides subs when set
	pending  []string                                           // settings waiting for a restart (parts_test.go)
	restarts int                                                // Restart calls
}

type subscription struct {
	filter string
	h      bus.Handler
}

func newFakeBackend() *fakeBackend {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	c := config.Default()
	c.Gateway.ID = "gw-test"
	return &fakeBackend{cfg: c, subs: map[int]subscription{}, ring: NewLogRing(100), reg: reg, ready: true,
		clients: []Client{{ID: "sensor-1", Listener: "tcp", Remote: "127.0.0.1:50000", Protocol: "mqtt 5"}}}
}

func (f *fakeBackend) Config() config.Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg
}

func (f *fakeBackend) ApplyConfig(ctx context.Context, c config.Config) ([]string, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var restart []string
	if c.Broker.Listeners != f.cfg.Broker.Listeners {
		restart = append(restart, "broker.listeners")
	}
	f.cfg = c
	f.applied++
	f.pending = append(f.pending, restart...)
	return f.pending, nil
}

func (f *fakeBackend) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Status{Version: "test", Started: time.Now().Add(-time.Hour), GatewayID: f.cfg.Gateway.ID,
		Board:   map[string]any{"model": "test board", "temperature_c": 41.5},
		Clients: map[string]int{"tcp": len(f.clients)}, MessagesIn: 10 + f.msgs, MessagesOut: 5 + f.msgs/2,
		Uplink: f.uplinkStatus(), Devices: []DeviceStatus{{Name: "meter", Kind: "modbus-tcp", Online: true}},
		Parts: fakeParts(), Restart: f.restartStatus(), Rules: fakeRuleStats(f.cfg.Rules)}
}

// fakeRuleStats gives every configured rule and action a few counters
// (rules_test.go, e2e/rules.mjs).
func fakeRuleStats(c rules.Config) *rules.Stats {
	st := &rules.Stats{Rules: []rules.RuleStats{}, Actions: []rules.ActionStats{}}
	for _, r := range c {
		st.Rules = append(st.Rules, rules.RuleStats{ID: r.ID, Enabled: r.Enabled, Running: r.Enabled, Matched: 7, Passed: 5, Filtered: 1, Failed: 1})
		for i, a := range r.Actions {
			kind := "log"
			switch {
			case a.Republish != nil:
				kind = "republish"
			case a.Uplink != nil:
				kind = "uplink"
			case a.HTTP != nil:
				kind = "http"
			}
			st.Actions = append(st.Actions, rules.ActionStats{Rule: r.ID, Index: i, Kind: kind, Success: 5})
		}
	}
	return st
}

func (f *fakeBackend) Clients() []Client {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Client(nil), f.clients...)
}

func (f *fakeBackend) DisconnectClient(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, c := range f.clients {
		if c.ID == id {
			f.clients = append(f.clients[:i], f.clients[i+1:]...)
			return nil
		}
	}
	return errors.New("not connected")
}

func (f *fakeBackend) Subscribe(filter string, h bus.Handler) (func(), error) {
	if f.sub != nil {
		return f.sub(filter, h)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.next
	f.next++
	f.subs[id] = subscription{filter, h}
	return func() {
		f.mu.Lock()
		delete(f.subs, id)
		f.mu.Unlock()
	}, nil
}

// publish delivers m to the matching subscribers.
func (f *fakeBackend) publish(m bus.Message) {
	f.mu.Lock()
	var hs []bus.Handler
	for _, s := range f.subs {
		if bus.Match(s.filter, m.Topic) {
			hs = append(hs, s.h)
		}
	}
	f.mu.Unlock()
	for _, h := range hs {
		h(m)
	}
}

func (f *fakeBackend) subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

func (f *fakeBackend) TestUplink(ctx context.Context, c uplink.Config) error {
	if f.uplinkOK {
		return nil
	}
	return errors.New("DNS: no such host " + c.Servers[0].Host)
}

func (f *fakeBackend) ReadNow(ctx context.Context, device string) (Reading, error) {
	if device != "meter" {
		return Reading{}, errors.New("no such device")
	}
	return Reading{Time: time.Now(), Points: []PointReading{{Name: "voltage", Value: 230.5, Unit: "V", Raw: []uint16{0x4366, 0x8000}}}}, nil
}

func (f *fakeBackend) WritePoint(ctx context.Context, device, point string, value any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.written = append(f.written, device+"/"+point)
	return nil
}

func (f *fakeBackend) SerialPorts() ([]SerialPort, error) {
	return []SerialPort{{Path: "/dev/ttyUSB0", Description: "FTDI"}}, nil
}

func (f *fakeBackend) Logs(minLevel slog.Level, part string, max int) []LogEntry {
	return f.ring.Logs(minLevel, part, max)
}

func (f *fakeBackend) Registry() *prometheus.Registry { return f.reg }

func (f *fakeBackend) Ready() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

// uplinkStatus pretends the uplink connects as soon as it is enabled.
func (f *fakeBackend) uplinkStatus() uplink.Status {
	u := f.cfg.Uplink
	if !u.Enabled || len(u.Servers) == 0 {
		return uplink.Status{State: "disabled"}
	}
	return uplink.Status{State: "connected", Connected: true, Transport: "quic", Server: u.Servers[0].Host, Since: time.Now()}
}
