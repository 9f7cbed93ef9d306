package modbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creack/pty"
	smodbus "github.com/simonvetter/modbus"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// bank is a slave's memory behind simonvetter's server (and the test RTU
// slave). Addresses not set answer "illegal data address".
type bank struct {
	mu       sync.Mutex
	coils    map[uint16]bool
	discrete map[uint16]bool
	holding  map[uint16]uint16
	input    map[uint16]uint16
	delay    time.Duration // a slow device: every answer waits this long
	reads    atomic.Int64  // read requests served
	writes   atomic.Int64
}

func newBank() *bank {
	return &bank{coils: map[uint16]bool{}, discrete: map[uint16]bool{}, holding: map[uint16]uint16{}, input: map[uint16]uint16{}}
}

// setBytes stores wire-order bytes into consecutive registers.
func (b *bank) setBytes(regs map[uint16]uint16, addr uint16, raw []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := 0; i+1 < len(raw); i += 2 {
		regs[addr+uint16(i/2)] = binary.BigEndian.Uint16(raw[i:])
	}
}

func (b *bank) holdingAt(addr uint16) uint16 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.holding[addr]
}

func (b *bank) wait() {
	b.mu.Lock()
	d := b.delay
	b.mu.Unlock()
	if d > 0 {
		time.Sleep(d) // kept sleep: a slow device behind a real TCP socket, which no bubble can fake
	}
}

func (b *bank) HandleCoils(req *smodbus.CoilsRequest) ([]bool, error) {
	return b.bits(b.coils, req.Addr, req.Quantity, req.IsWrite, req.Args)
}

func (b *bank) HandleDiscreteInputs(req *smodbus.DiscreteInputsRequest) ([]bool, error) {
	return b.bits(b.discrete, req.Addr, req.Quantity, false, nil)
}

func (b *bank) HandleHoldingRegisters(req *smodbus.HoldingRegistersRequest) ([]uint16, error) {
	return b.regs(b.holding, req.Addr, req.Quantity, req.IsWrite, req.Args)
}

func (b *bank) HandleInputRegisters(req *smodbus.InputRegistersRequest) ([]uint16, error) {
	return b.regs(b.input, req.Addr, req.Quantity, false, nil)
}

func (b *bank) bits(m map[uint16]bool, addr, n uint16, write bool, args []bool) ([]bool, error) {
	b.wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]bool, n)
	for i := range out {
		v, ok := m[addr+uint16(i)]
		if !ok {
			return nil, smodbus.ErrIllegalDataAddress
		}
		out[i] = v
	}
	if write {
		b.writes.Add(1)
		for i, v := range args {
			m[addr+uint16(i)] = v
		}
		return nil, nil
	}
	b.reads.Add(1)
	return out, nil
}

func (b *bank) regs(m map[uint16]uint16, addr, n uint16, write bool, args []uint16) ([]uint16, error) {
	b.wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]uint16, n)
	for i := range out {
		v, ok := m[addr+uint16(i)]
		if !ok {
			return nil, smodbus.ErrIllegalDataAddress
		}
		out[i] = v
	}
	if write {
		b.writes.Add(1)
		for i, v := range args {
			m[addr+uint16(i)] = v
		}
		return nil, nil
	}
	b.reads.Add(1)
	return out, nil
}

// tcpSlave is simonvetter's Modbus TCP server on a loopback port.
type tcpSlave struct {
	srv  *smodbus.ModbusServer
	addr string
}

// startTCPSlave serves bk on a free loopback port (or on addr when given,
// to restart a stopped slave on the same port).
func startTCPSlave(t testing.TB, bk *bank, addr string) *tcpSlave {
	t.Helper()
	var s *tcpSlave
	// A given port may still be in TIME_WAIT or taken: try until it is free.
	testwait.NoError(t, 5*time.Second, func() error {
		a := addr
		if a == "" {
			a = freePort(t)
		}
		srv, err := smodbus.NewServer(&smodbus.ServerConfiguration{
			URL: "tcp://" + a, MaxClients: 20, Timeout: time.Minute,
			Logger: log.New(io.Discard, "", 0),
		}, bk)
		if err != nil {
			t.Fatalf("modbus server: %v", err)
		}
		if err := srv.Start(); err != nil {
			return fmt.Errorf("start modbus server on %s: %w", a, err)
		}
		s = &tcpSlave{srv: srv, addr: a}
		t.Cleanup(func() { _ = srv.Stop() })
		return nil
	})
	return s
}

// freePort returns a loopback address whose port was free a moment ago
// (simonvetter's server does not report the port it bound).
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	_ = l.Close()
	return a
}

// crc16 is the Modbus RTU CRC.
func crc16(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, c := range b {
		crc ^= uint16(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

// rtuSlave answers Modbus RTU on the master side of a pty for the banks of
// its units. simonvetter/modbus has no RTU server, so this small slave
// parses the frames and calls the same bank handlers as the TCP server.
type rtuSlave struct {
	path   string
	banks  map[byte]*bank
	badCRC map[byte]bool // units whose replies get a wrong CRC
	frames atomic.Int64
}

// startRTUSlave opens a pty pair and serves on its master until the test ends.
func startRTUSlave(t testing.TB, banks map[byte]*bank, badCRC map[byte]bool) *rtuSlave {
	t.Helper()
	master, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	s := &rtuSlave{path: tty.Name(), banks: banks, badCRC: badCRC}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.serve(master)
	}()
	t.Cleanup(func() {
		_ = master.Close()
		_ = tty.Close()
		<-done
	})
	return s
}

func (s *rtuSlave) serve(f *os.File) {
	buf := make([]byte, 0, 512)
	chunk := make([]byte, 256)
	for {
		n, err := f.Read(chunk)
		if err != nil {
			return
		}
		buf = append(buf, chunk[:n]...)
		for {
			size := rtuRequestSize(buf)
			if size == 0 || len(buf) < size {
				break
			}
			frame := buf[:size]
			if binary.LittleEndian.Uint16(frame[size-2:]) != crc16(frame[:size-2]) {
				buf = buf[:0] // resynchronise: drop what we have
				break
			}
			s.frames.Add(1)
			if reply := s.handle(frame[:size-2]); reply != nil {
				_, _ = f.Write(reply)
			}
			buf = append(buf[:0], buf[size:]...)
		}
	}
}

// rtuRequestSize is the length of the request at the start of b, 0 if not
// known yet.
func rtuRequestSize(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	switch b[1] {
	case 1, 2, 3, 4, 5, 6:
		return 8
	case 15, 16:
		if len(b) < 7 {
			return 0
		}
		return 9 + int(b[6])
	}
	return len(b) + 1000 // unknown: wait for a CRC mismatch to drop it
}

// handle answers one request (without CRC) and returns the reply frame.
func (s *rtuSlave) handle(req []byte) []byte {
	unit, fc := req[0], req[1]
	bk := s.banks[unit]
	if bk == nil {
		return nil // nobody at this address: silence, like a real line
	}
	addr := binary.BigEndian.Uint16(req[2:])
	qty := binary.BigEndian.Uint16(req[4:])
	reply := []byte{unit, fc}
	var err error
	switch fc {
	case 1, 2:
		var bits []bool
		if fc == 1 {
			bits, err = bk.HandleCoils(&smodbus.CoilsRequest{UnitId: unit, Addr: addr, Quantity: qty})
		} else {
			bits, err = bk.HandleDiscreteInputs(&smodbus.DiscreteInputsRequest{UnitId: unit, Addr: addr, Quantity: qty})
		}
		packed := make([]byte, (len(bits)+7)/8)
		for i, on := range bits {
			if on {
				packed[i/8] |= 1 << (i % 8)
			}
		}
		reply = append(append(reply, byte(len(packed))), packed...)
	case 3, 4:
		var regs []uint16
		if fc == 3 {
			regs, err = bk.HandleHoldingRegisters(&smodbus.HoldingRegistersRequest{UnitId: unit, Addr: addr, Quantity: qty})
		} else {
			regs, err = bk.HandleInputRegisters(&smodbus.InputRegistersRequest{UnitId: unit, Addr: addr, Quantity: qty})
		}
		reply = append(reply, byte(2*len(regs)))
		for _, r := range regs {
			reply = binary.BigEndian.AppendUint16(reply, r)
		}
	case 5:
		_, err = bk.HandleCoils(&smodbus.CoilsRequest{UnitId: unit, Addr: addr, Quantity: 1, IsWrite: true, Args: []bool{qty == 0xFF00}})
		reply = append(reply, req[2:6]...)
	case 6:
		_, err = bk.HandleHoldingRegisters(&smodbus.HoldingRegistersRequest{UnitId: unit, Addr: addr, Quantity: 1, IsWrite: true, Args: []uint16{qty}})
		reply = append(reply, req[2:6]...)
	case 16:
		args := make([]uint16, qty)
		for i := range args {
			args[i] = binary.BigEndian.Uint16(req[7+2*i:])
		}
		_, err = bk.HandleHoldingRegisters(&smodbus.HoldingRegistersRequest{UnitId: unit, Addr: addr, Quantity: qty, IsWrite: true, Args: args})
		reply = append(reply, req[2:6]...)
	default:
		err = smodbus.ErrIllegalFunction
	}
	if err != nil {
		code := byte(4)
		switch {
		case errors.Is(err, smodbus.ErrIllegalDataAddress):
			code = 2
		case errors.Is(err, smodbus.ErrIllegalFunction):
			code = 1
		}
		reply = []byte{unit, fc | 0x80, code}
	}
	crc := crc16(reply)
	if s.badCRC[unit] {
		crc ^= 0x5555
	}
	return binary.LittleEndian.AppendUint16(reply, crc)
}

// recorder subscribes to a bus filter and keeps every message.
type recorder struct {
	mu   sync.Mutex
	msgs []bus.Message
	ch   chan struct{} // signalled (non-blocking) on every message
}

func record(t testing.TB, b bus.Bus, filter string) *recorder {
	t.Helper()
	r := &recorder{ch: make(chan struct{}, 1)}
	unsub, err := b.Subscribe(filter, func(m bus.Message) {
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		r.mu.Unlock()
		select {
		case r.ch <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unsub)
	return r
}

// waitFor polls the recorded messages until cond finds what it needs or
// the deadline passes.
func (r *recorder) waitFor(t testing.TB, what string, timeout time.Duration, cond func([]bus.Message) bool) []bus.Message {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		msgs := append([]bus.Message(nil), r.msgs...)
		r.mu.Unlock()
		if cond(msgs) {
			return msgs
		}
		select {
		case <-r.ch:
		case <-deadline.C:
			var b strings.Builder
			for _, m := range msgs {
				fmt.Fprintf(&b, "\n  %s %s", m.Topic, m.Payload)
			}
			t.Fatalf("timed out waiting for %s; got:%s", what, b.String())
		}
	}
}

// last returns the last message on topic in msgs.
func last(msgs []bus.Message, topic string) (bus.Message, bool) {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Topic == topic {
			return msgs[i], true
		}
	}
	return bus.Message{}, false
}

// count returns how many messages went to topic.
func count(msgs []bus.Message, topic string) int {
	n := 0
	for _, m := range msgs {
		if m.Topic == topic {
			n++
		}
	}
	return n
}

// testLogger logs warnings and errors into the test log.
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("FIELDGATE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// runService starts s until the test ends.
func runService(t testing.TB, s *Service) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
}

// fixedNow is a synchronised wall clock for payload checks.
var fixedNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// nopBus is a bus that drops everything (for building services only).
type nopBus struct{}

func (nopBus) Publish(context.Context, bus.Message) error { return nil }
func (nopBus) Subscribe(string, bus.Handler) (func(), error) {
	return func() {}, nil
}
func (nopBus) Tap(string, bus.TapFunc) (func(), error) { return func() {}, nil }
