package modbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/fieldgate/fieldgate/internal/devnode"
	"github.com/goburrow/modbus"
)

// Client is the small part of a Modbus master that a line worker uses. One
// Client serves one physical line; the worker calls it from one goroutine
// only, one transaction at a time. Every call returns by ctx's deadline
// (which the worker always sets) give or take the line's character time.
type Client interface {
	// Read reads count registers (holding, input: 2 bytes each, wire order)
	// or bits (coil, discrete: packed, least significant bit first) from
	// address of slave unit.
	Read(ctx context.Context, unit byte, register string, address, count uint16) ([]byte, error)
	// WriteCoil writes one coil (function 05).
	WriteCoil(ctx context.Context, unit byte, address uint16, on bool) error
	// WriteRegisters writes holding registers from raw (2 bytes each, wire
	// order): function 06 for one register, 16 for more.
	WriteRegisters(ctx context.Context, unit byte, address uint16, raw []byte) error
	// MaskWriteRegister changes the bits of one holding register (function
	// 22): the device stores (current AND andMask) OR (orMask AND NOT andMask).
	MaskWriteRegister(ctx context.Context, unit byte, address, andMask, orMask uint16) error
	// Close releases the connection or port; the next call opens it again.
	Close() error
}

// Error kinds counted per device (DeviceStats.Errors).
const (
	ErrKindException  = "exception"  // the slave answered with a Modbus exception
	ErrKindTimeout    = "timeout"    // no (complete) answer in time
	ErrKindCRC        = "crc"        // RTU frame with a bad CRC
	ErrKindGarbage    = "garbage"    // an answer that is not a valid reply to the request
	ErrKindConnection = "connection" // connect refused, reset, port missing
	ErrKindOther      = "other"
)

// ExceptionError is a Modbus exception reply.
type ExceptionError struct {
	Function  byte
	Exception byte
}

func (e *ExceptionError) Error() string {
	return fmt.Sprintf("exception %d (%s) to function %d", e.Exception, exceptionName(e.Exception), e.Function&0x7f)
}

// exceptionName names the standard exception codes.
func exceptionName(code byte) string {
	switch code {
	case 1:
		return "illegal function"
	case 2:
		return "illegal data address"
	case 3:
		return "illegal data value"
	case 4:
		return "server device failure"
	case 5:
		return "acknowledge"
	case 6:
		return "server device busy"
	case 8:
		return "memory parity error"
	case 10:
		return "gateway path unavailable"
	case 11:
		return "gateway target device failed to respond"
	}
	return "unknown"
}

// kindError marks an error with its kind for counting.
type kindError struct {
	kind string
	err  error
}

func (e *kindError) Error() string { return e.err.Error() }
func (e *kindError) Unwrap() error { return e.err }

// errorKind classifies an error returned by a Client.
func errorKind(err error) string {
	var ke *kindError
	var ex *ExceptionError
	var ne net.Error
	switch {
	case errors.As(err, &ex):
		return ErrKindException
	case errors.As(err, &ke):
		return ke.kind
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return ErrKindTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ENOENT),
		errors.Is(err, syscall.EIO), errors.Is(err, net.ErrClosed):
		return ErrKindConnection
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return ErrKindConnection
	}
	return ErrKindOther
}

// goburrowClient adapts github.com/goburrow/modbus to Client. A TCP line
// uses the library's TCP handler; an RTU line uses the library's RTU
// framing (packager) over our own transport on go.bug.st/serial
// (rtuTransport), which honours the transaction's deadline and reports a
// vanished port as a line error.
type goburrowClient struct {
	tcp     *modbus.TCPClientHandler
	rtu     *rtuTransport
	pack    *modbus.RTUClientHandler // RTU: only its packager (slave id, CRC) is used
	client  modbus.Client
	timeout time.Duration
}

// newGoburrowClient builds the client of a line from its first device;
// timeout is the longest device timeout on the line.
func newGoburrowClient(d Device, timeout time.Duration) *goburrowClient {
	c := &goburrowClient{timeout: timeout}
	if d.TCP != nil {
		h := modbus.NewTCPClientHandler(d.TCP.Address)
		h.Timeout = timeout
		c.tcp, c.client = h, modbus.NewClient(h)
		return c
	}
	c.rtu = newRTUTransport(*d.RTU)
	c.pack = &modbus.RTUClientHandler{}
	c.client = modbus.NewClient2(c.pack, c.rtu)
	return c
}

// prepare sets the slave id and maps ctx's deadline onto the transport
// (TCP: the library's per-transaction timeout; RTU: ctx itself).
func (c *goburrowClient) prepare(ctx context.Context, unit byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := c.timeout
	if dl, ok := ctx.Deadline(); ok {
		t = min(t, time.Until(dl))
		if t <= 0 {
			return context.DeadlineExceeded
		}
	}
	if c.tcp != nil {
		c.tcp.SlaveId = unit
		c.tcp.Timeout = t
		return nil
	}
	c.pack.SlaveId = unit
	c.rtu.ctx, c.rtu.timeout = ctx, t
	return nil
}

// do runs one library call and turns its result into our errors. Anything
// but an exception reply resets the line (reset), so that a late or partial
// reply can never be taken for the answer to the next request.
func (c *goburrowClient) do(ctx context.Context, unit, fc byte, call func() ([]byte, error)) (res []byte, err error) {
	if err := c.prepare(ctx, unit); err != nil {
		return nil, err
	}
	func() {
		defer func() {
			if r := recover(); r != nil { // a library bug on a garbage reply must not stop the gateway
				err = &kindError{ErrKindGarbage, fmt.Errorf("reply crashed the decoder: %v", r)}
			}
		}()
		res, err = call()
	}()
	if c.rtu != nil {
		c.rtu.ctx = context.Background()
	}
	if err == nil {
		return res, nil
	}
	var mbErr *modbus.ModbusError
	if errors.As(err, &mbErr) {
		if mbErr.FunctionCode == fc|0x80 {
			return nil, &ExceptionError{Function: mbErr.FunctionCode, Exception: mbErr.ExceptionCode}
		}
		err = &kindError{ErrKindGarbage, fmt.Errorf("reply with function %d to function %d", mbErr.FunctionCode, fc)}
	}
	c.reset()
	if errorKind(err) == ErrKindOther {
		msg := err.Error()
		switch {
		case strings.Contains(msg, "crc"):
			err = &kindError{ErrKindCRC, err}
		case strings.Contains(msg, "does not match"), strings.Contains(msg, "length"),
			strings.Contains(msg, "must not"), strings.Contains(msg, "empty"), strings.Contains(msg, "minimum"):
			err = &kindError{ErrKindGarbage, err}
		}
	}
	if ctx.Err() != nil && errorKind(err) == ErrKindOther {
		err = fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	return nil, err
}

// Read implements Client.
func (c *goburrowClient) Read(ctx context.Context, unit byte, register string, address, count uint16) ([]byte, error) {
	var fc byte
	var call func(uint16, uint16) ([]byte, error)
	switch register {
	case RegCoil:
		fc, call = modbus.FuncCodeReadCoils, c.client.ReadCoils
	case RegDiscrete:
		fc, call = modbus.FuncCodeReadDiscreteInputs, c.client.ReadDiscreteInputs
	case RegHolding:
		fc, call = modbus.FuncCodeReadHoldingRegisters, c.client.ReadHoldingRegisters
	case RegInput:
		fc, call = modbus.FuncCodeReadInputRegisters, c.client.ReadInputRegisters
	default:
		return nil, fmt.Errorf("read: unknown register type %q", register)
	}
	res, err := c.do(ctx, unit, fc, func() ([]byte, error) { return call(address, count) })
	if err != nil {
		return nil, err
	}
	want := 2 * int(count)
	if register == RegCoil || register == RegDiscrete {
		want = (int(count) + 7) / 8
	}
	if len(res) != want {
		c.reset()
		return nil, &kindError{ErrKindGarbage, fmt.Errorf("reply has %d data bytes, want %d", len(res), want)}
	}
	return res, nil
}

// WriteCoil implements Client.
func (c *goburrowClient) WriteCoil(ctx context.Context, unit byte, address uint16, on bool) error {
	var v uint16
	if on {
		v = 0xFF00
	}
	_, err := c.do(ctx, unit, modbus.FuncCodeWriteSingleCoil, func() ([]byte, error) {
		return c.client.WriteSingleCoil(address, v)
	})
	return err
}

// WriteRegisters implements Client.
func (c *goburrowClient) WriteRegisters(ctx context.Context, unit byte, address uint16, raw []byte) error {
	if len(raw) == 2 {
		_, err := c.do(ctx, unit, modbus.FuncCodeWriteSingleRegister, func() ([]byte, error) {
			return c.client.WriteSingleRegister(address, binary.BigEndian.Uint16(raw))
		})
		return err
	}
	_, err := c.do(ctx, unit, modbus.FuncCodeWriteMultipleRegisters, func() ([]byte, error) {
		return c.client.WriteMultipleRegisters(address, uint16(len(raw)/2), raw)
	})
	return err
}

// MaskWriteRegister implements Client.
func (c *goburrowClient) MaskWriteRegister(ctx context.Context, unit byte, address, andMask, orMask uint16) error {
	_, err := c.do(ctx, unit, modbus.FuncCodeMaskWriteRegister, func() ([]byte, error) {
		return c.client.MaskWriteRegister(address, andMask, orMask)
	})
	return err
}

// reset drops what a failed transaction may have left on the line. A TCP
// connection is closed (the next call connects again). An RTU port stays
// open: the transport flushes its buffers before every request, and closes
// the port itself on a line error.
func (c *goburrowClient) reset() {
	if c.tcp != nil {
		_ = c.tcp.Close()
	}
}

// Close implements Client.
func (c *goburrowClient) Close() error {
	if c.tcp != nil {
		return c.tcp.Close()
	}
	return c.rtu.close()
}

// reopen opens a lost RTU port again (resolving its path anew).
func (c *goburrowClient) reopen() error { return c.rtu.open() }

// presence identifies what an RTU line's port path resolves to now ("" when
// it is missing).
func (c *goburrowClient) presence() string { return devnode.Identity(c.rtu.path) }
