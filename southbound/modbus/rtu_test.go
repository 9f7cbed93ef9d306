package modbus

import (
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/gateway/bus"
)

// TestRTUOverPty polls two slaves sharing one RTU line (a pty pair; the
// slave is the small RTU responder in helpers_test.go), writes to one, and
// sees a third slave whose replies have a bad CRC counted as crc errors.
func TestRTUOverPty(t *testing.T) {
	b1, b2, b3 := newBank(), newBank(), newBank()
	b1.setBytes(b1.holding, 0, []byte{0x41, 0x46, 0x00, 0x00})
	b1.coils[0] = true
	b2.setBytes(b2.input, 10, []byte{0x00, 0x2a})
	b2.holding[0] = 0
	b3.holding[0] = 1
	slave := startRTUSlave(t, map[byte]*bank{1: b1, 2: b2, 3: b3}, map[byte]bool{3: true})

	rtu := &RTU{Port: slave.path, Baud: 115200, Parity: "N", StopBits: 2}
	groups := []PollGroup{{Name: "g", Interval: 50 * time.Millisecond}}
	cfg := DefaultConfig()
	cfg.OfflineAfter = 1
	cfg.Devices = []Device{
		{Name: "s1", RTU: rtu, UnitID: 1, Timeout: 200 * time.Millisecond, PollGroups: groups, Points: []Point{
			{Name: "f", Register: RegHolding, Address: 0, Type: TypeFloat32},
			{Name: "c", Register: RegCoil, Address: 0}}},
		{Name: "s2", RTU: rtu, UnitID: 2, Timeout: 200 * time.Millisecond, PollGroups: groups, Points: []Point{
			{Name: "i", Register: RegInput, Address: 10, Type: TypeInt16},
			{Name: "sp", Register: RegHolding, Address: 0, Type: TypeUint16, Writable: true, ReadBack: true}}},
		{Name: "s3", RTU: rtu, UnitID: 3, Timeout: 200 * time.Millisecond, PollGroups: groups, Points: []Point{
			{Name: "x", Register: RegHolding, Address: 0, Type: TypeUint16}}},
	}
	b := bus.NewMemory(nil)
	rec := record(t, b, "southbound/#")
	s := newService(t, cfg, b, Options{})
	if len(s.lines) != 1 {
		t.Fatalf("%d lines for one port", len(s.lines))
	}
	runService(t, s)
	rec.waitFor(t, "values from both slaves", 10*time.Second, func(m []bus.Message) bool {
		f, _ := last(m, "southbound/s1/f")
		i, _ := last(m, "southbound/s2/i")
		st, _ := last(m, "southbound/s2/status")
		return strings.Contains(string(f.Payload), `"v":12.375,"q":"good"`) &&
			strings.Contains(string(i.Payload), `"v":42,"q":"good"`) && strings.Contains(string(st.Payload), "online")
	})
	if err := b.Publish(t.Context(), bus.Message{Topic: "southbound/s2/sp/set", Payload: []byte(`{"id":1,"v":777}`)}); err != nil {
		t.Fatal(err)
	}
	msgs := rec.waitFor(t, "write result and s3 offline", 10*time.Second, func(m []bus.Message) bool {
		st, _ := last(m, "southbound/s3/status")
		_, ok := last(m, "southbound/s2/sp/set/result")
		return ok && strings.Contains(string(st.Payload), "offline")
	})
	if r, _ := last(msgs, "southbound/s2/sp/set/result"); string(r.Payload) != `{"id":1,"ok":true,"err":null,"v":777}` {
		t.Errorf("result %s", r.Payload)
	}
	if b2.holdingAt(0) != 777 {
		t.Errorf("holding = %d", b2.holdingAt(0))
	}
	for _, st := range s.Stats() {
		switch st.Name {
		case "s3":
			if st.Errors[ErrKindCRC] == 0 {
				t.Errorf("s3: %+v", st)
			}
		default:
			if st.FailedPolls != 0 {
				t.Errorf("%s: %+v", st.Name, st)
			}
		}
	}
}
