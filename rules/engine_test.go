package rules

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"

	"github.com/fieldgate/fieldgate/bus"
)

// harness runs an engine on a memory bus with a fake clock.
type harness struct {
	t      *testing.T
	bus    *bus.Memory
	clock  *fakeClock
	engine *Engine
	cancel context.CancelFunc
	done   chan error
}

func newHarness(t *testing.T, cfg Config, tune func(*Options)) *harness {
	t.Helper()
	clock := newFakeClock(t0)
	b := bus.NewMemory(clock.Now)
	opts := Options{Bus: b, Clock: clock, GatewayID: "gw1", StatsInterval: -1}
	if tune != nil {
		tune(&opts)
	}
	e, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, bus: b, clock: clock, engine: e, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- e.Run(ctx) }()
	t.Cleanup(h.stop)
	h.waitFor("rules running", func() bool {
		for _, r := range e.Stats().Rules {
			if r.Enabled && !r.Running {
				return false
			}
		}
		return true
	})
	return h
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Error("Run did not return within 10s of cancel")
	}
}

// waitFor polls cond for up to 10 s.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	if !testwait.Until(10*time.Second, cond) {
		h.t.Fatalf("timed out waiting for %s; stats %+v", what, h.engine.Stats())
	}
}

func (h *harness) publish(topic, payload string) {
	h.t.Helper()
	if err := h.bus.Publish(context.Background(), bus.Message{Topic: topic, Payload: []byte(payload), QoS: 1, Origin: "dev1"}); err != nil {
		h.t.Fatal(err)
	}
}

// collect subscribes to filter and returns the messages received so far.
func (h *harness) collect(filter string) func() []bus.Message {
	var mu sync.Mutex
	var got []bus.Message
	unsub, err := h.bus.Subscribe(filter, func(m bus.Message) {
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(unsub)
	return func() []bus.Message {
		mu.Lock()
		defer mu.Unlock()
		return append([]bus.Message(nil), got...)
	}
}

func ruleStats(e *Engine, id string) RuleStats {
	for _, r := range e.Stats().Rules {
		if r.ID == id {
			return r
		}
	}
	return RuleStats{}
}

func actionStats(e *Engine, id string, i int) ActionStats {
	for _, a := range e.Stats().Actions {
		if a.Rule == id && a.Index == i {
			return a
		}
	}
	return ActionStats{}
}

// The example: a threshold rule republishing an alarm, with
// templates from the output and from the message's metadata.
func TestEngineThresholdRepublish(t *testing.T) {
	cfg := Config{{
		ID: "hot-boiler", Enabled: true,
		SQL: "SELECT payload.v AS t, topic, timestamp\nFROM \"southbound/boiler/temp\"\nWHERE payload.v > 80",
		Actions: []Action{
			{Republish: &RepublishAction{Topic: "alarms/${topic}", QoS: 1, Payload: `{"t": ${t}, "at": ${timestamp}, "gw": "${gateway_id}"}`}},
			{Log: &LogAction{}},
		},
	}}
	h := newHarness(t, cfg, nil)
	got := h.collect("alarms/#")
	h.publish("southbound/boiler/temp", `{"v": 70}`)
	h.publish("southbound/boiler/temp", `{"v": 90.5}`)
	h.waitFor("one alarm", func() bool { return len(got()) == 1 && ruleStats(h.engine, "hot-boiler").Matched == 2 })
	m := got()[0]
	if m.Topic != "alarms/southbound/boiler/temp" || m.QoS != 1 || m.Origin != "$rules/hot-boiler" {
		t.Fatalf("alarm %+v", m)
	}
	want := `{"t": 90.5, "at": 1735689600000, "gw": "gw1"}`
	if string(m.Payload) != want {
		t.Fatalf("payload %s, want %s", m.Payload, want)
	}
	st := ruleStats(h.engine, "hot-boiler")
	if st.Passed != 1 || st.Filtered != 1 || st.Failed != 0 {
		t.Fatalf("stats %+v", st)
	}
	if a := actionStats(h.engine, "hot-boiler", 0); a.Success != 1 || a.Kind != "republish" {
		t.Fatalf("action stats %+v", a)
	}
	h.waitFor("log action", func() bool { return actionStats(h.engine, "hot-boiler", 1).Success == 1 })
}

// Modbus-like readings averaged per device over 10 s windows, sent to a
// topic that an uplink-style tap takes durably; a refusing tap counts as a
// failed action.
func TestEngineWindowToUplink(t *testing.T) {
	cfg := Config{{
		ID: "avg", Enabled: true,
		SQL:     `SELECT topic(2) as device, avg(payload.value) as avg, count(*) as n FROM "modbus/+/temp" GROUP BY topic(2), TUMBLINGWINDOW(ss, 10)`,
		Actions: []Action{{Uplink: &UplinkAction{Topic: "sites/${gateway_id}/avg/${device}", QoS: 1}}},
	}}
	h := newHarness(t, cfg, nil)
	var mu sync.Mutex
	var outbox []bus.Message
	refuse := false
	untap, err := h.bus.Tap("sites/#", func(m bus.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if refuse {
			return bus.ErrQuotaExceeded
		}
		outbox = append(outbox, m)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer untap()
	for _, p := range []struct{ dev, v string }{{"d1", "10"}, {"d2", "5"}, {"d1", "20"}} {
		h.publish("modbus/"+p.dev+"/temp", `{"value":`+p.v+`}`)
	}
	h.waitFor("3 messages in the window", func() bool { return ruleStats(h.engine, "avg").Passed == 3 })
	h.clock.Advance(10 * time.Second)
	h.waitFor("two averages in the outbox", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(outbox) == 2
	})
	mu.Lock()
	if outbox[0].Topic != "sites/gw1/avg/d1" || string(outbox[0].Payload) != `{"avg":15,"device":"d1","n":2}` || outbox[0].QoS != 1 {
		t.Fatalf("outbox[0] = %s %s q%d", outbox[0].Topic, outbox[0].Payload, outbox[0].QoS)
	}
	if outbox[1].Topic != "sites/gw1/avg/d2" || string(outbox[1].Payload) != `{"avg":5,"device":"d2","n":1}` {
		t.Fatalf("outbox[1] = %s %s", outbox[1].Topic, outbox[1].Payload)
	}
	refuse = true
	mu.Unlock()
	h.publish("modbus/d1/temp", `{"value":1}`)
	h.waitFor("message in the window", func() bool { return ruleStats(h.engine, "avg").Passed == 4 })
	h.clock.Advance(10 * time.Second)
	h.waitFor("refusal counted", func() bool { return actionStats(h.engine, "avg", 0).Failed == 1 })
	if a := actionStats(h.engine, "avg", 0); a.Success != 2 {
		t.Fatalf("action stats %+v", a)
	}
}

// A rule's queue is bounded: while its goroutine is stuck, the publisher is
// never blocked and what does not fit is dropped and counted.
func TestEngineFullQueueDropsNeverBlocks(t *testing.T) {
	cfg := Config{{ID: "slow", Enabled: true, SQL: `SELECT * FROM "in/#"`,
		Actions: []Action{{Republish: &RepublishAction{Topic: "out/x"}}}}}
	h := newHarness(t, cfg, func(o *Options) { o.QueueSize = 4 })
	release := make(chan struct{})
	var once sync.Once
	unsub, err := h.bus.Subscribe("out/#", func(bus.Message) { <-release }) // blocks the rule's goroutine
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	defer once.Do(func() { close(release) })
	start := time.Now()
	for range 100 {
		h.publish("in/a", "x")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("100 publishes took %s: the publisher was blocked", d)
	}
	h.waitFor("drops counted", func() bool {
		st := ruleStats(h.engine, "slow")
		return st.Dropped >= 95 && st.Dropped+uint64(st.Queued)+st.Matched == 100
	})
	once.Do(func() { close(release) })
	h.waitFor("queue drained", func() bool {
		st := ruleStats(h.engine, "slow")
		return st.Dropped+st.Matched == 100 && st.Queued == 0
	})
}

// An expression that fails on every message is counted, and neither stops
// the rule nor the other rules.
func TestEngineEvaluationErrorsCounted(t *testing.T) {
	cfg := Config{
		{ID: "bad", Enabled: true, SQL: `SELECT payload.v * 2 as x FROM "t/#"`, Actions: []Action{{Log: &LogAction{}}}},
		{ID: "good", Enabled: true, SQL: `SELECT payload.v as x FROM "t/#"`, Actions: []Action{{Log: &LogAction{}}}},
	}
	h := newHarness(t, cfg, nil)
	for range 10 {
		h.publish("t/1", `{"v":"not a number"}`)
	}
	h.waitFor("errors counted", func() bool {
		return ruleStats(h.engine, "bad").Failed == 10 && ruleStats(h.engine, "good").Passed == 10
	})
	if st := ruleStats(h.engine, "bad"); !strings.Contains(st.LastError, "line 1, col 18") {
		t.Fatalf("last error %q has no position", st.LastError)
	}
}

// Reload applies a change live, refuses a bad rule with its position, and
// keeps an unchanged rule running with its state.
func TestEngineReload(t *testing.T) {
	win := Rule{ID: "win", Enabled: true, SQL: `SELECT count(*) as n FROM "w/#" GROUP BY TUMBLINGWINDOW(ss, 10)`,
		Actions: []Action{{Republish: &RepublishAction{Topic: "out/win"}}}}
	flt := Rule{ID: "flt", Enabled: true, SQL: `SELECT payload.v as v FROM "f/#" WHERE payload.v > 1`,
		Actions: []Action{{Republish: &RepublishAction{Topic: "out/flt"}}}}
	h := newHarness(t, Config{win, flt}, nil)
	got := h.collect("out/#")
	h.publish("w/1", "a")
	h.waitFor("window holds one", func() bool { return ruleStats(h.engine, "win").Passed == 1 })

	bad := flt
	bad.SQL = "SELECT\n  payload.v, avgg(payload.v) FROM \"f/#\""
	err := h.engine.Reload(Config{win, bad})
	if err == nil || !strings.Contains(err.Error(), `[1].sql: line 2, col 14: unknown function "avgg"`) {
		t.Fatalf("bad reload: %v", err)
	}
	changed := flt
	changed.SQL = `SELECT payload.v as v FROM "f/#" WHERE payload.v > 100`
	if err := h.engine.Reload(Config{win, changed}); err != nil {
		t.Fatal(err)
	}
	h.publish("f/1", `{"v": 50}`)
	h.publish("f/1", `{"v": 500}`)
	h.publish("w/1", "b")
	h.waitFor("both rules saw the messages", func() bool {
		return ruleStats(h.engine, "flt").Matched == 2 && ruleStats(h.engine, "win").Passed == 2
	})
	h.clock.Advance(10 * time.Second)
	h.waitFor("two outputs", func() bool { return len(got()) == 2 })
	var n struct{ N int }
	for _, m := range got() {
		switch m.Topic {
		case "out/flt":
			if string(m.Payload) != `{"v":500}` {
				t.Fatalf("flt output %s", m.Payload)
			}
		case "out/win":
			if err := json.Unmarshal(m.Payload, &n); err != nil || n.N != 2 {
				t.Fatalf("window output %s: the unchanged rule lost its state", m.Payload)
			}
		}
	}
	// disabling stops the rule
	off := changed
	off.Enabled = false
	if err := h.engine.Reload(Config{win, off}); err != nil {
		t.Fatal(err)
	}
	h.publish("f/1", `{"v": 500}`)
	if st := ruleStats(h.engine, "flt"); st.Running || st.Matched != 2 {
		t.Fatalf("disabled rule: %+v", st)
	}
}

// A rule never takes its own output, and a chain of rules is cut after
// maxHops.
func TestEngineLoops(t *testing.T) {
	cfg := Config{
		{ID: "self", Enabled: true, SQL: `SELECT * FROM "loop/#"`, Actions: []Action{{Republish: &RepublishAction{Topic: "loop/again"}}}},
		{ID: "ping", Enabled: true, SQL: `SELECT payload FROM "a/#"`, Actions: []Action{{Republish: &RepublishAction{Topic: "b/x", Payload: "${payload}"}}}},
		{ID: "pong", Enabled: true, SQL: `SELECT payload FROM "b/#"`, Actions: []Action{{Republish: &RepublishAction{Topic: "a/x", Payload: "${payload}"}}}},
	}
	h := newHarness(t, cfg, nil)
	h.publish("loop/1", "x")
	h.publish("a/1", "x")
	h.waitFor("the chain is cut", func() bool {
		return ruleStats(h.engine, "ping").Loops+ruleStats(h.engine, "pong").Loops == 1
	})
	if st := ruleStats(h.engine, "self"); st.Matched != 1 {
		t.Fatalf("self: %+v", st)
	}
	if n := ruleStats(h.engine, "ping").Matched + ruleStats(h.engine, "pong").Matched; n != maxHops {
		t.Fatalf("chain ran %d times, want %d", n, maxHops)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	_, err := New(Config{{ID: "x y", SQL: "SELECT", Actions: []Action{{}}}}, Options{Bus: bus.NewMemory(nil)})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{`[0].id: "x y" must be`, `[0].sql: line 1, col 7: unexpected end of input`, `[0].actions[0]: an action sets exactly one`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Fatal("no bus accepted")
	}
	if !errors.Is(ErrQueueFull, ErrQueueFull) {
		t.Fatal("unreachable")
	}
}

func TestTestFunction(t *testing.T) {
	rows, err := Test(`SELECT payload.v * 2 as d FROM "t/#" WHERE payload.v > 1`, "t/1", []byte(`{"v":3}`), "gw")
	if err != nil || len(rows) != 1 || rows[0]["d"] != int64(6) {
		t.Fatalf("rows %v err %v", rows, err)
	}
	rows, err = Test(`SELECT avg(payload.v) as a FROM "t/#" GROUP BY TUMBLINGWINDOW(ss, 10)`, "t/1", []byte(`{"v":3}`), "gw")
	if err != nil || len(rows) != 1 || rows[0]["a"] != 3.0 {
		t.Fatalf("window rows %v err %v", rows, err)
	}
	if _, err := Test(`SELECT * FROM "t/#"`, "x/1", nil, ""); err == nil {
		t.Fatal("topic outside FROM accepted")
	}
	if _, err := Test(`SELECT avgg(1) FROM "t/#"`, "t/1", nil, ""); err == nil || err.Error() != `line 1, col 8: unknown function "avgg"` {
		t.Fatalf("err %v", err)
	}
}
