package modbus

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/bus"
)

// tcpDevice is a device config for a TCP slave.
func tcpDevice(name, addr string, points ...Point) Device {
	return Device{Name: name, TCP: &TCP{Address: addr}, UnitID: 1, Timeout: 300 * time.Millisecond,
		PollGroups: []PollGroup{{Name: "fast", Interval: 50 * time.Millisecond}}, Points: points}
}

func newService(t *testing.T, cfg Config, b bus.Bus, opts Options) *Service {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	s, err := New(cfg, b, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPollPublishesPoints(t *testing.T) {
	bk := newBank()
	bk.setBytes(bk.holding, 0, []byte{0x41, 0x46, 0x00, 0x00}) // FLOAT32 12.375
	bk.setBytes(bk.holding, 2, []byte{0xff, 0x85})             // INT16 -123
	bk.setBytes(bk.holding, 4, []byte{0x02, 0x6c})             // 620 → 22 °C
	bk.holding[3] = 0
	bk.setBytes(bk.holding, 5, make([]byte, 6))               // the gap the planner reads over
	bk.setBytes(bk.holding, 8, []byte("pump\x00\x00"))        // STRING, after a gap of 3
	bk.setBytes(bk.input, 0, []byte{0x03, 0x04, 0x01, 0x02})  // UINT32 CDAB
	bk.coils[0], bk.coils[1], bk.coils[2] = true, false, true // one read of 3 bits
	slave := startTCPSlave(t, bk, "")

	cfg := DefaultConfig()
	cfg.MaxGap = 3
	cfg.Devices = []Device{tcpDevice("m1", slave.addr,
		Point{Name: "f", Register: RegHolding, Address: 0, Type: TypeFloat32},
		Point{Name: "i", Register: RegHolding, Address: 2, Type: TypeInt16},
		Point{Name: "temp", Register: RegHolding, Address: 4, Type: TypeInt16, Scale: 0.1, Offset: -40, Unit: "°C"},
		Point{Name: "label", Register: RegHolding, Address: 8, Type: TypeString, Length: 3},
		Point{Name: "u", Register: RegInput, Address: 0, Type: TypeUint32, ByteOrder: OrderCDAB},
		Point{Name: "c0", Register: RegCoil, Address: 0},
		Point{Name: "c2", Register: RegCoil, Address: 2, OnChange: true},
	)}
	b := bus.NewMemory(nil)
	rec := record(t, b, "#")
	s := newService(t, cfg, b, Options{Now: func() time.Time { return fixedNow }})
	if n := len(s.devices[0].groups[0].reqs); n != 3 {
		t.Fatalf("planned %d requests, want 3 (holding 0+11, input 0+2, coil 0+3)", n)
	}
	runService(t, s)

	msgs := rec.waitFor(t, "three polls", 5*time.Second, func(m []bus.Message) bool {
		return count(m, "southbound/m1/f") >= 3
	})
	ts := `"ts":1748779200000`
	want := map[string]string{
		"southbound/m1/f":      `{"v":12.375,"q":"good",` + ts + `}`,
		"southbound/m1/i":      `{"v":-123,"q":"good",` + ts + `}`,
		"southbound/m1/label":  `{"v":"pump","q":"good",` + ts + `}`,
		"southbound/m1/u":      `{"v":16909060,"q":"good",` + ts + `}`,
		"southbound/m1/c0":     `{"v":true,"q":"good",` + ts + `}`,
		"southbound/m1/c2":     `{"v":true,"q":"good",` + ts + `}`,
		"southbound/m1/status": `{"state":"online",` + ts + `}`,
	}
	for topic, payload := range want {
		m, ok := last(msgs, topic)
		if !ok || string(m.Payload) != payload {
			t.Errorf("%s = %s, want %s", topic, m.Payload, payload)
		}
		if m.Origin != Origin {
			t.Errorf("%s origin %q", topic, m.Origin)
		}
	}
	var temp struct {
		V    float64 `json:"v"`
		Unit string  `json:"unit"`
	}
	m, _ := last(msgs, "southbound/m1/temp")
	if err := json.Unmarshal(m.Payload, &temp); err != nil || math.Abs(temp.V-22) > 1e-9 || temp.Unit != "°C" {
		t.Errorf("temp = %s", m.Payload)
	}
	if st, _ := last(msgs, "southbound/m1/status"); !st.Retain || st.QoS != 1 {
		t.Errorf("status not retained QoS 1: %+v", st)
	}
	if n := count(msgs, "southbound/m1/c2"); n != 1 {
		t.Errorf("on_change point published %d times, want 1", n)
	}
	polls := s.Stats()[0].Polls
	if reads := bk.reads.Load(); reads > int64(3*polls+3) {
		t.Errorf("%d reads for %d polls: batching broken", reads, polls)
	}
}

func TestGroupModeAndClockNotSynced(t *testing.T) {
	bk := newBank()
	bk.holding[0], bk.holding[1] = 7, 8
	slave := startTCPSlave(t, bk, "")
	cfg := DefaultConfig()
	cfg.PublishMode = PublishGroup
	cfg.Devices = []Device{tcpDevice("m1", slave.addr,
		Point{Name: "a", Register: RegHolding, Address: 0, Type: TypeUint16},
		Point{Name: "b", Register: RegHolding, Address: 1, Type: TypeInt16, Unit: "V"},
	)}
	b := bus.NewMemory(nil)
	rec := record(t, b, "southbound/m1/fast")
	boot := time.Date(1970, 1, 1, 0, 0, 5, 0, time.UTC)
	runService(t, newService(t, cfg, b, Options{Now: func() time.Time { return boot }}))
	msgs := rec.waitFor(t, "a group message", 5*time.Second, func(m []bus.Message) bool { return len(m) > 0 })
	want := `{"ts":5000,"ts_sync":false,"values":{"a":{"v":7,"q":"good"},"b":{"v":8,"q":"good","unit":"V"}}}`
	if got := string(msgs[0].Payload); got != want {
		t.Fatalf("group payload\n got %s\nwant %s", got, want)
	}
}

func TestDeadband(t *testing.T) {
	bk := newBank()
	bk.holding[0] = 100
	slave := startTCPSlave(t, bk, "")
	cfg := DefaultConfig()
	cfg.Devices = []Device{tcpDevice("m1", slave.addr,
		Point{Name: "a", Register: RegHolding, Address: 0, Type: TypeUint16, Deadband: 5})}
	b := bus.NewMemory(nil)
	rec := record(t, b, "southbound/m1/a")
	var polls = make(chan struct{}, 100)
	s := newService(t, cfg, b, Options{OnPoll: func(PollInfo) { polls <- struct{}{} }})
	runService(t, s)
	waitPolls := func(n int) {
		for range n {
			select {
			case <-polls:
			case <-time.After(5 * time.Second):
				t.Fatal("no poll")
			}
		}
	}
	waitPolls(2)
	bk.setBytes(bk.holding, 0, []byte{0, 103}) // inside the deadband
	waitPolls(3)
	bk.setBytes(bk.holding, 0, []byte{0, 106}) // outside
	msgs := rec.waitFor(t, "106", 5*time.Second, func(m []bus.Message) bool {
		mm, _ := last(m, "southbound/m1/a")
		return strings.Contains(string(mm.Payload), `"v":106`)
	})
	for _, m := range msgs {
		if strings.Contains(string(m.Payload), `"v":103`) {
			t.Fatalf("value inside the deadband published: %s", m.Payload)
		}
	}
}

func TestWrites(t *testing.T) {
	bk := newBank()
	bk.coils[5] = false
	for a := uint16(10); a < 20; a++ {
		bk.holding[a] = 0
	}
	bk.input[0] = 1
	slave := startTCPSlave(t, bk, "")
	cfg := DefaultConfig()
	d := tcpDevice("m1", slave.addr,
		Point{Name: "relay", Register: RegCoil, Address: 5, Writable: true, ReadBack: true},
		Point{Name: "sp", Register: RegHolding, Address: 10, Type: TypeInt16, Scale: 0.1, Writable: true, ReadBack: true},
		Point{Name: "big", Register: RegHolding, Address: 12, Type: TypeFloat64, ByteOrder: OrderDCBA, Writable: true, ReadBack: true},
		Point{Name: "ro", Register: RegHolding, Address: 16, Type: TypeUint16},
		Point{Name: "in", Register: RegInput, Address: 0, Type: TypeUint16},
		Point{Name: "name", Register: RegHolding, Address: 17, Type: TypeString, Length: 2, Writable: true},
	)
	d.PollGroups[0].Interval = 200 * time.Millisecond
	cfg.Devices = []Device{d}
	b := bus.NewMemory(nil)
	rec := record(t, b, "southbound/m1/+/set/result")
	status := record(t, b, "southbound/m1/status")
	now := fixedNow
	s := newService(t, cfg, b, Options{Now: func() time.Time { return now }})
	runService(t, s)
	status.waitFor(t, "online", 5*time.Second, func(m []bus.Message) bool { return len(m) > 0 })

	ctx := context.Background()
	set := func(point, payload string, origin string, expiry time.Duration) {
		t.Helper()
		if err := b.Publish(ctx, bus.Message{Topic: "southbound/m1/" + point + "/set", Payload: []byte(payload), Origin: origin, Expiry: expiry, Time: now.Add(-time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	set("relay", `true`, "", 0)
	set("sp", `{"id":"a1","v":21.5}`, "", 0)
	set("big", `{"id":2,"v":-1.25e10}`, "", 0)
	set("ro", `{"id":3,"v":1}`, "", 0)
	set("in", `{"id":4,"v":1}`, "", 0)
	set("sp", `{"id":5,"v":4000}`, "", 0)
	set("sp", `{"id":6,"v":1,"expires":1}`, "", 0)
	set("sp", `{"id":7,"v":1}`, "", 30*time.Second)
	set("nope", `{"id":8,"v":1}`, "", 0)
	set("sp", `{"id":9,"v":1}`, Origin, 0) // our own: ignored
	set("name", `{"id":10,"v":"hi"}`, "", 0)
	set("sp", `{"id":11`, "", 0)

	msgs := rec.waitFor(t, "10 results", 10*time.Second, func(m []bus.Message) bool { return len(m) >= 11 })
	results := map[string]string{}
	for _, m := range msgs {
		var r struct {
			ID  json.RawMessage `json:"id"`
			OK  bool
			Err *string
		}
		if err := json.Unmarshal(m.Payload, &r); err != nil {
			t.Fatalf("result %s: %v", m.Payload, err)
		}
		key := string(r.ID)
		if key == "null" {
			key = m.Topic
		}
		results[key] = string(m.Payload)
	}
	expect := map[string]string{
		"southbound/m1/relay/set/result": `"ok":true`,
		`"a1"`:                           `"ok":true,"err":null,"v":21.5`,
		"2":                              `"ok":true,"err":null,"v":-12500000000`,
		"3":                              `point ro is not writable`,
		"4":                              `point in is not writable`,
		"5":                              `out of range`,
		"6":                              `expired at 1`,
		"7":                              `expired (message expiry interval)`,
		"8":                              `no point \"nope\"`,
		"10":                             `"ok":true`,
		"southbound/m1/sp/set/result":    `bad command object`,
	}
	for k, want := range expect {
		if got := results[k]; !strings.Contains(got, want) {
			t.Errorf("result %s = %s, want it to contain %s", k, got, want)
		}
	}
	if _, ok := results["9"]; ok {
		t.Error("a set published with our own origin was executed")
	}
	if !bk.coils[5] || bk.holdingAt(10) != 215 || bk.holdingAt(17) != 'h'<<8|'i' {
		t.Errorf("slave memory: coil %v, sp %d, name %#x", bk.coils[5], bk.holdingAt(10), bk.holdingAt(17))
	}
	raw := make([]byte, 8)
	for i := range 4 {
		binary.BigEndian.PutUint16(raw[2*i:], bk.holdingAt(12+uint16(i)))
	}
	if f := math.Float64frombits(binary.LittleEndian.Uint64(raw)); f != -1.25e10 {
		t.Errorf("FLOAT64 DCBA written as %x = %v", raw, f)
	}
	st := s.Stats()[0]
	if st.Writes != 11 || st.WriteErrors != 7 {
		t.Errorf("writes %d errors %d, want 11 and 7", st.Writes, st.WriteErrors)
	}
}

func TestExceptionTimeoutOfflineAndBack(t *testing.T) {
	bk := newBank()
	bk.holding[0] = 42
	slave := startTCPSlave(t, bk, "")
	cfg := DefaultConfig()
	cfg.OfflineAfter = 2
	d := tcpDevice("m1", slave.addr,
		Point{Name: "ok", Register: RegHolding, Address: 0, Type: TypeUint16},
		Point{Name: "missing", Register: RegHolding, Address: 100, Type: TypeUint16}, // exception
	)
	d.Timeout = 100 * time.Millisecond
	cfg.Devices = []Device{d}
	b := bus.NewMemory(nil)
	rec := record(t, b, "southbound/#")
	s := newService(t, cfg, b, Options{Now: func() time.Time { return fixedNow }})
	runService(t, s)

	// The status is published after the poll's values: wait for both.
	msgs := rec.waitFor(t, "bad quality and a status", 5*time.Second, func(m []bus.Message) bool {
		mm, ok := last(m, "southbound/m1/missing")
		_, hasStatus := last(m, "southbound/m1/status")
		return ok && hasStatus && strings.Contains(string(mm.Payload), `"v":null,"q":"bad"`)
	})
	if st, _ := last(msgs, "southbound/m1/status"); !strings.Contains(string(st.Payload), "online") {
		t.Fatalf("an exception took the device offline: %s", st.Payload)
	}

	// The device goes away: stale values, then offline.
	_ = slave.srv.Stop()
	msgs = rec.waitFor(t, "offline", 5*time.Second, func(m []bus.Message) bool {
		st, _ := last(m, "southbound/m1/status")
		return strings.Contains(string(st.Payload), "offline")
	})
	if m, _ := last(msgs, "southbound/m1/ok"); !strings.Contains(string(m.Payload), `"v":42,"q":"stale"`) {
		t.Errorf("value of an unreachable device: %s", m.Payload)
	}
	if n := countPayload(msgs, "southbound/m1/status", "offline"); n != 1 {
		t.Errorf("offline published %d times", n)
	}

	// It comes back on the same port.
	startTCPSlave(t, bk, slave.addr)
	rec.waitFor(t, "online again", 10*time.Second, func(m []bus.Message) bool {
		st, _ := last(m, "southbound/m1/status")
		return strings.Contains(string(st.Payload), `"online"`)
	})
	st := s.Stats()[0]
	if st.Errors[ErrKindException] == 0 || st.Errors[ErrKindConnection]+st.Errors[ErrKindTimeout] == 0 || !st.Online || st.FailedPolls < 2 {
		t.Errorf("stats %+v", st)
	}
}

func countPayload(msgs []bus.Message, topic, sub string) int {
	n := 0
	for _, m := range msgs {
		if m.Topic == topic && strings.Contains(string(m.Payload), sub) {
			n++
		}
	}
	return n
}

// garbageSlave answers every request on a TCP port with the given bytes.
func garbageSlave(t *testing.T, reply func(req []byte) []byte) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 260)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(reply(buf[:n])); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { _ = l.Close(); <-done })
	return l.Addr().String()
}

func TestGarbageAndSlowDevicesDoNotStopOthers(t *testing.T) {
	good := newBank()
	good.holding[0] = 1
	goodSlave := startTCPSlave(t, good, "")
	slow := newBank()
	slow.holding[0] = 2
	slow.delay = 400 * time.Millisecond
	slowSlave := startTCPSlave(t, slow, "")
	garbage := garbageSlave(t, func(req []byte) []byte {
		// A valid MBAP header with the request's transaction id, then junk.
		out := append([]byte(nil), req[:4]...)
		return append(out, 0, 5, 1, 3, 0xff, 0xee, 0xdd)
	})
	noise := garbageSlave(t, func([]byte) []byte { return []byte("HTTP/1.1 400 Bad Request\r\n\r\n") })

	cfg := DefaultConfig()
	p := Point{Name: "v", Register: RegHolding, Address: 0, Type: TypeUint16}
	slowDev := tcpDevice("slow", slowSlave.addr, p)
	slowDev.Timeout = 100 * time.Millisecond
	slowDev.Retries = 1
	cfg.Devices = []Device{tcpDevice("good", goodSlave.addr, p), slowDev, tcpDevice("garbage", garbage, p), tcpDevice("noise", noise, p)}
	b := bus.NewMemory(nil)
	rec := record(t, b, "southbound/#")
	s := newService(t, cfg, b, Options{})
	runService(t, s)
	rec.waitFor(t, "the others offline and good polled", 10*time.Second, func(m []bus.Message) bool {
		for _, d := range []string{"slow", "garbage", "noise"} {
			if st, _ := last(m, "southbound/"+d+"/status"); !strings.Contains(string(st.Payload), "offline") {
				return false
			}
		}
		return count(m, "southbound/good/v") >= 10
	})
	stats := map[string]DeviceStats{}
	for _, st := range s.Stats() {
		stats[st.Name] = st
	}
	if st := stats["good"]; st.FailedPolls != 0 || !st.Online {
		t.Errorf("good: %+v", st)
	}
	if st := stats["slow"]; st.Errors[ErrKindTimeout] < 2 {
		t.Errorf("slow: %+v", st)
	}
	if st := stats["garbage"]; st.Errors[ErrKindGarbage] == 0 {
		t.Errorf("garbage: %+v", st)
	}
	if st := stats["noise"]; st.Errors[ErrKindGarbage]+st.Errors[ErrKindConnection] == 0 {
		t.Errorf("noise: %+v", st)
	}
	t.Logf("errors: slow %v garbage %v noise %v", stats["slow"].Errors, stats["garbage"].Errors, stats["noise"].Errors)
}

func TestReadNowAndDevices(t *testing.T) {
	bk := newBank()
	bk.setBytes(bk.holding, 0, []byte{0, 0, 0x12, 0x34})
	bk.discrete[3] = true
	slave := startTCPSlave(t, bk, "")
	cfg := DefaultConfig()
	cfg.Devices = []Device{tcpDevice("m1", slave.addr,
		Point{Name: "u", Register: RegHolding, Address: 0, Type: TypeUint32, Unit: "Wh"},
		Point{Name: "d", Register: RegDiscrete, Address: 3},
		Point{Name: "x", Register: RegHolding, Address: 50, Type: TypeUint16})}
	s := newService(t, cfg, bus.NewMemory(nil), Options{})
	runService(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	snap, err := s.ReadNow(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Reading{}
	for _, r := range snap.Readings {
		got[r.Point] = r
	}
	if r := got["u"]; r.Value.Uint != 0x1234 || r.Quality != QualityGood || len(r.Raw) != 2 || r.Raw[1] != 0x1234 || r.Unit != "Wh" {
		t.Errorf("u = %+v", r)
	}
	if r := got["d"]; !r.Value.Bool || r.Raw[0] != 1 {
		t.Errorf("d = %+v", r)
	}
	if r := got["x"]; r.Quality != QualityBad || !strings.Contains(r.Err, "illegal data address") {
		t.Errorf("x = %+v", r)
	}
	if _, err := s.ReadNow(ctx, "nope"); err == nil {
		t.Error("ReadNow of an unknown device")
	}
	devs := s.Devices()
	if len(devs) != 1 || devs[0].Transport != "tcp" || devs[0].Address != slave.addr || devs[0].Points != 3 {
		t.Errorf("devices = %+v", devs)
	}
}

// TestWriteRegisterBit writes one bit of a holding register. simonvetter's
// server has no Mask Write Register (function 22), like many devices: with
// the default bit_writes the result says so and names the setting; with
// read_modify_write the bit changes and the other 15 stay. (Function 22
// against a device that has it: TestPymodbusThroughBroker.)
func TestWriteRegisterBit(t *testing.T) {
	bk := newBank()
	bk.holding[20] = 0x8001
	slave := startTCPSlave(t, bk, "")
	cfg := DefaultConfig()
	mask := tcpDevice("mask", slave.addr,
		Point{Name: "b3", Register: RegHolding, Address: 20, Type: TypeBit, Bit: 3, Writable: true})
	rmw := tcpDevice("rmw", slave.addr,
		Point{Name: "b3", Register: RegHolding, Address: 20, Type: TypeBit, Bit: 3, Writable: true, ReadBack: true},
		Point{Name: "b15", Register: RegHolding, Address: 20, Type: TypeBit, Bit: 15, Writable: true, ReadBack: true})
	rmw.UnitID = 2 // a second device on the same TCP address
	rmw.BitWrites = BitWritesReadModifyWrite
	cfg.Devices = []Device{mask, rmw}
	b := bus.NewMemory(nil)
	rec := record(t, b, "southbound/+/+/set/result")
	status := record(t, b, "southbound/+/status")
	s := newService(t, cfg, b, Options{Now: func() time.Time { return fixedNow }})
	runService(t, s)
	status.waitFor(t, "both online", 5*time.Second, func(m []bus.Message) bool { return len(m) >= 2 })

	set := func(dev, point, payload string) {
		t.Helper()
		if err := b.Publish(context.Background(), bus.Message{Topic: "southbound/" + dev + "/" + point + "/set", Payload: []byte(payload)}); err != nil {
			t.Fatal(err)
		}
	}
	result := func(n int) string {
		t.Helper()
		msgs := rec.waitFor(t, fmt.Sprintf("%d results", n), 5*time.Second, func(m []bus.Message) bool { return len(m) >= n })
		return string(msgs[n-1].Payload)
	}

	set("mask", "b3", `{"id":1,"v":true}`)
	if r := result(1); !strings.Contains(r, `"ok":false`) || !strings.Contains(r, "function 22") || !strings.Contains(r, "bit_writes: read_modify_write") {
		t.Fatalf("mask write to a device without function 22: %s", r)
	}
	if got := bk.holdingAt(20); got != 0x8001 {
		t.Fatalf("register after a refused mask write: %#04x", got)
	}

	set("rmw", "b3", `{"id":2,"v":true}`)
	if r := result(2); !strings.Contains(r, `"ok":true`) || !strings.Contains(r, `"v":true`) {
		t.Fatalf("read-modify-write set: %s", r)
	}
	if got := bk.holdingAt(20); got != 0x8009 {
		t.Fatalf("register after setting bit 3: %#04x, want 0x8009", got)
	}
	set("rmw", "b15", `false`)
	if r := result(3); !strings.Contains(r, `"ok":true`) {
		t.Fatalf("read-modify-write clear: %s", r)
	}
	if got := bk.holdingAt(20); got != 0x0009 {
		t.Fatalf("register after clearing bit 15: %#04x, want 0x0009", got)
	}
}

// TestKeepStatusOnStop: devices passed to KeepStatus keep their retained
// status when the service stops (a config change replaces it); the others
// say offline "stopped".
func TestKeepStatusOnStop(t *testing.T) {
	bk := newBank()
	slave := startTCPSlave(t, bk, "")
	cfg := DefaultConfig()
	a := tcpDevice("a", slave.addr, Point{Name: "x", Register: RegHolding, Address: 0, Type: TypeUint16})
	gone := tcpDevice("gone", slave.addr, Point{Name: "x", Register: RegHolding, Address: 0, Type: TypeUint16})
	gone.UnitID = 2
	cfg.Devices = []Device{a, gone}
	b := bus.NewMemory(nil)
	status := record(t, b, "southbound/+/status")
	s := newService(t, cfg, b, Options{Now: func() time.Time { return fixedNow }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	status.waitFor(t, "both online", 5*time.Second, func(m []bus.Message) bool { return len(m) >= 2 })

	s.KeepStatus([]string{"a"})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	msgs := status.waitFor(t, "gone's goodbye", 5*time.Second, func(m []bus.Message) bool {
		st, _ := last(m, "southbound/gone/status")
		return strings.Contains(string(st.Payload), "stopped")
	})
	if st, _ := last(msgs, "southbound/a/status"); !strings.Contains(string(st.Payload), "online") {
		t.Fatalf("a device that stays reported %s on stop", st.Payload)
	}
}
