package modbus

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	goserial "go.bug.st/serial"

	"github.com/fieldgate/fieldgate/bus"
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

// scriptedPort is a serial port that answers every request with the next
// chunks of reply, one chunk per read, and then nothing (a timeout). With
// hungUp it returns (0, nil) at once, as a hung-up tty does under a serial
// library that does not report it.
type scriptedPort struct {
	goserial.Port // the methods not below are not called
	chunks        [][]byte
	hungUp        bool
	timeout       time.Duration
	reads         int
	written       []byte
}

func (p *scriptedPort) Write(b []byte) (int, error) {
	p.written = append(p.written, b...)
	return len(b), nil
}

func (p *scriptedPort) Read(b []byte) (int, error) {
	p.reads++
	if p.hungUp {
		return 0, nil
	}
	if len(p.chunks) == 0 {
		time.Sleep(p.timeout) // the port's read timeout: fake time in the synctest tests, real (20 ms) under FuzzRTUReply
		return 0, nil
	}
	n := copy(b, p.chunks[0])
	if n == len(p.chunks[0]) {
		p.chunks = p.chunks[1:]
	} else {
		p.chunks[0] = p.chunks[0][n:]
	}
	return n, nil
}

func (p *scriptedPort) SetReadTimeout(d time.Duration) error { p.timeout = d; return nil }
func (p *scriptedPort) ResetInputBuffer() error              { return nil }
func (p *scriptedPort) ResetOutputBuffer() error             { return nil }
func (p *scriptedPort) Close() error                         { return nil }

// scriptedTransport is an RTU transport over p whose device node exists.
func scriptedTransport(t testing.TB, p *scriptedPort) *rtuTransport {
	dev := filepath.Join(t.TempDir(), "tty")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tr := newRTUTransport(RTU{Port: dev, Baud: 115200, DataBits: 8, Parity: "N", StopBits: 1})
	tr.port, tr.dev = p, dev
	return tr
}

// withReplyCRC appends the Modbus CRC to a reply.
func withReplyCRC(b []byte) []byte {
	return binary.LittleEndian.AppendUint16(b, crc16(b))
}

// TestRTUTransportHungUpDoesNotSpin: reads that return nothing at once are
// a hang-up: the transaction ends with a line error after a few reads
// (goburrow/serial under io.ReadAtLeast looped on them at ~6,500 reads/s).
func TestRTUTransportHungUpDoesNotSpin(t *testing.T) {
	p := &scriptedPort{hungUp: true}
	tr := scriptedTransport(t, p)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	tr.ctx = ctx
	start := time.Now()
	_, err := tr.Send([]byte{1, 3, 0, 0, 0, 1, 0x84, 0x0a})
	if !errors.Is(err, errPortGone) || errorKind(err) != ErrKindConnection {
		t.Fatalf("Send: %v (kind %s), want a line error", err, errorKind(err))
	}
	if p.reads != rtuEmptyReads {
		t.Errorf("%d reads, want %d", p.reads, rtuEmptyReads)
	}
	if tr.port != nil {
		t.Error("port left open after a line error")
	}
	t.Logf("hung-up port given up after %d reads in %v", p.reads, time.Since(start))
}

// TestRTUTransportFrames reads replies of known length split across reads,
// exceptions, unexpected replies and silence.
func TestRTUTransportFrames(t *testing.T) {
	readHolding := []byte{1, 3, 0, 0, 0, 2, 0xc4, 0x0b}
	regs := withReplyCRC([]byte{1, 3, 4, 0x04, 0xd2, 0x16, 0x2e})
	exc := withReplyCRC([]byte{1, 0x83, 2})
	other := withReplyCRC([]byte{1, 4, 2, 0, 7})
	tests := []struct {
		name   string
		chunks [][]byte
		want   []byte
		kind   string
	}{
		{"whole", [][]byte{regs}, regs, ""},
		{"byte by byte", [][]byte{regs[:1], regs[1:2], regs[2:3], regs[3:6], regs[6:]}, regs, ""},
		{"trailing bytes are not read", [][]byte{append(append([]byte(nil), regs...), 9, 9)}, regs, ""},
		{"exception", [][]byte{exc}, exc, ""},
		{"unexpected function, ended by silence", [][]byte{other}, other, ""},
		{"silence", nil, nil, ErrKindTimeout},
		{"partial", [][]byte{regs[:5]}, nil, ErrKindTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The port's read timeouts pass on the bubble's fake clock.
			synctest.Test(t, func(t *testing.T) {
				tr := scriptedTransport(t, &scriptedPort{chunks: tt.chunks})
				ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
				defer cancel()
				tr.ctx = ctx
				got, err := tr.Send(readHolding)
				if tt.kind != "" {
					if errorKind(err) != tt.kind {
						t.Fatalf("Send: %x, %v; want a %s error", got, err, tt.kind)
					}
					return
				}
				if err != nil || !bytes.Equal(got, tt.want) {
					t.Fatalf("Send: %x, %v; want %x", got, err, tt.want)
				}
			})
		})
	}
}

// TestRTUTransportCancel: a cancelled context ends a transaction that
// waits for its reply within a read tick.
func TestRTUTransportCancel(t *testing.T) {
	// The port's read timeouts and the cancel pass on the bubble's fake clock.
	synctest.Test(t, func(t *testing.T) {
		tr := scriptedTransport(t, &scriptedPort{})
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		tr.ctx = ctx
		time.AfterFunc(100*time.Millisecond, cancel)
		start := time.Now()
		_, err := tr.Send([]byte{1, 3, 0, 0, 0, 1, 0x84, 0x0a})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Send: %v, want cancelled", err)
		}
		if took := time.Since(start); took > 100*time.Millisecond+5*rtuReadTick {
			t.Errorf("cancelled transaction returned after %v", took)
		}
	})
}

// FuzzRTUReply feeds arbitrary bytes as the reply to a read: the transport
// and goburrow's decoding must never panic, never return more than one
// frame, and end by the deadline.
func FuzzRTUReply(f *testing.F) {
	f.Add([]byte{1, 3, 4, 0x04, 0xd2, 0x16, 0x2e, 0x6f, 0x3c}, uint8(1))
	f.Add([]byte{1, 0x83, 2, 0xc0, 0xf1}, uint8(2))
	f.Add([]byte{1, 3, 0xff}, uint8(3))
	f.Add([]byte{}, uint8(1))
	f.Fuzz(func(t *testing.T, reply []byte, split uint8) {
		var chunks [][]byte
		step := int(split%16) + 1
		for b := reply; len(b) > 0; {
			n := min(step, len(b))
			chunks = append(chunks, b[:n])
			b = b[n:]
		}
		p := &scriptedPort{chunks: chunks}
		dev := filepath.Join(t.TempDir(), "tty")
		if err := os.WriteFile(dev, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		c := newGoburrowClient(Device{RTU: &RTU{Port: dev, Baud: 115200, DataBits: 8, Parity: "N", StopBits: 1}}, 20*time.Millisecond)
		c.rtu.port, c.rtu.dev = p, dev
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		start := time.Now()
		res, err := c.Read(ctx, 1, RegHolding, 0, 2)
		if err == nil && len(res) != 4 {
			t.Fatalf("%d data bytes accepted for 2 registers", len(res))
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("read took %v", took)
		}
	})
}
