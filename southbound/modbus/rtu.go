package modbus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/goburrow/modbus"
	goserial "go.bug.st/serial"
)

// errPortGone marks a line error on an RTU line: the serial port vanished,
// hung up, or failed with an I/O error. Its text is the reason published in
// the retained status of every device on the line.
var errPortGone = errors.New("serial port gone")

// reasonPortGone is the status reason of the devices of a lost line.
var reasonPortGone = errPortGone.Error()

// RTU line timing.
const (
	// rtuReadTick bounds one read from the port, so that a transaction
	// sees its context end (shutdown) within this time without any other
	// goroutine touching the port.
	rtuReadTick = 50 * time.Millisecond
	// rtuEmptyReads is how many reads in a row may return nothing long
	// before their timeout (a hang-up the library did not report) before
	// the port counts as gone.
	rtuEmptyReads = 3
	// rtuMaxFrame is the longest RTU frame.
	rtuMaxFrame = 256
)

// Reopening a lost RTU port.
const (
	// reopenMin and reopenMax bound the backoff between attempts to open a
	// port that exists but fails to open: from 1 s, doubling to 10 s, each
	// wait jittered by ±20 %.
	reopenMin = time.Second
	reopenMax = 10 * time.Second
	// presenceTick is how often a lost line looks whether its port path
	// (resolved through its symlinks) appeared or changed: a port that
	// comes back is opened at once instead of at the end of the backoff.
	presenceTick = 200 * time.Millisecond
)

// portGone wraps err (what failed on port dev) as a line error.
func portGone(what, dev string, err error) error {
	return &kindError{ErrKindConnection, fmt.Errorf("%w: %s %s: %w", errPortGone, what, dev, err)}
}

// rtuTransport is the goburrow/modbus Transporter of an RTU line over
// go.bug.st/serial. It is used by one goroutine (the line's worker) at a
// time; ctx, set before every transaction, bounds it.
//
// Every read waits at most rtuReadTick, so a transaction ends within that
// time of its context's deadline or cancellation. An error from the port,
// reads that keep returning nothing early (the (0, nil) of a hung-up tty),
// or a device node that no longer exists close the port and return a line
// error (errPortGone); the next Send opens the port again, resolving its
// path (a /dev/serial/by-id link) anew.
type rtuTransport struct {
	path     string
	mode     *goserial.Mode
	charTime time.Duration // one character on the wire
	frameGap time.Duration // the silence between two frames (3.5 characters)

	ctx     context.Context
	timeout time.Duration // when ctx has no deadline
	port    goserial.Port
	dev     string // what path resolved to when the port was opened
	last    time.Time

	// opened is dev for other goroutines (Service.Devices).
	opened atomic.Pointer[string]
	// sent counts the requests written (tests wait on it).
	sent atomic.Int64
}

// newRTUTransport prepares the transport of an RTU line; nothing is opened.
func newRTUTransport(r RTU) *rtuTransport {
	m := &goserial.Mode{BaudRate: r.Baud, DataBits: r.DataBits, StopBits: goserial.OneStopBit}
	switch r.Parity {
	case "N":
		m.Parity = goserial.NoParity
	case "O":
		m.Parity = goserial.OddParity
	default:
		m.Parity = goserial.EvenParity
	}
	if r.StopBits == 2 {
		m.StopBits = goserial.TwoStopBits
	}
	t := &rtuTransport{path: r.Port, mode: m, ctx: context.Background(), timeout: DefaultTimeout}
	// 11 bits per character (start, 8 data, parity or second stop, stop);
	// above 19200 baud the standard fixes the gap at 1.75 ms.
	t.charTime = time.Duration(11 * float64(time.Second) / float64(max(r.Baud, 1)))
	t.frameGap = 35 * t.charTime / 10
	if r.Baud > 19200 {
		t.charTime, t.frameGap = 750*time.Microsecond, 1750*time.Microsecond
	}
	return t
}

// open resolves the port path and opens the device.
func (t *rtuTransport) open() error {
	if t.port != nil {
		return nil
	}
	dev, err := filepath.EvalSymlinks(t.path)
	if err != nil {
		return portGone("resolve", t.path, err)
	}
	p, err := goserial.Open(dev, t.mode)
	if err != nil {
		return portGone("open", dev, err)
	}
	t.port, t.dev, t.last = p, dev, time.Now()
	t.opened.Store(&dev)
	return nil
}

// close closes the port if it is open.
func (t *rtuTransport) close() error {
	if t.port == nil {
		return nil
	}
	err := t.port.Close()
	t.port = nil
	if err != nil {
		return fmt.Errorf("close %s: %w", t.dev, err)
	}
	return nil
}

// lost closes the port after a line error and returns it.
func (t *rtuTransport) lost(what string, err error) error {
	dev := t.dev
	_ = t.close()
	return portGone(what, dev, err)
}

// present reports whether the opened device node still exists.
func (t *rtuTransport) present() bool {
	_, err := os.Stat(t.dev)
	return err == nil
}

// Send implements modbus.Transporter: it writes the request and reads one
// reply frame, by the deadline of t.ctx.
func (t *rtuTransport) Send(req []byte) ([]byte, error) {
	ctx := t.ctx
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(req) < 4 {
		return nil, fmt.Errorf("request of %d bytes", len(req))
	}
	if err := t.open(); err != nil {
		return nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(t.timeout)
	}
	// Keep the silence the line needs between two frames.
	if gap := t.frameGap - time.Since(t.last); gap > 0 {
		time.Sleep(gap) // at most 4 ms (1200 baud: 32 ms): the RTU inter-frame gap
	}
	// Whatever is still in the buffers belongs to an earlier transaction: a
	// late reply must not be taken for this one's, and a request that could
	// not go out in time is worthless. This also keeps the write below from
	// ever blocking on a full output queue.
	if err := t.port.ResetInputBuffer(); err != nil {
		return nil, t.lost("flush", err)
	}
	if err := t.port.ResetOutputBuffer(); err != nil {
		return nil, t.lost("flush", err)
	}
	if err := t.write(req); err != nil {
		return nil, err
	}
	t.sent.Add(1)
	res, err := t.read(ctx, req, deadline)
	t.last = time.Now()
	return res, err
}

// write writes the whole request.
func (t *rtuTransport) write(b []byte) error {
	for len(b) > 0 {
		n, err := t.port.Write(b)
		if err != nil {
			return t.lost("write", err)
		}
		if n == 0 {
			return t.lost("write", errors.New("wrote 0 bytes"))
		}
		b = b[n:]
	}
	return nil
}

// read reads one reply frame to req. Its length is known from the function
// code (and, for reads, the byte count); a reply to another function is
// read until the line falls silent.
func (t *rtuTransport) read(ctx context.Context, req []byte, deadline time.Time) ([]byte, error) {
	buf := make([]byte, 0, rtuMaxFrame)
	empty := 0
	for {
		want := replyLength(req, buf)
		if want > 0 && len(buf) >= want {
			return buf[:want], nil
		}
		if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			if !t.present() {
				return nil, t.lost("stat", errors.New("device node removed"))
			}
			if want < 0 && len(buf) >= 4 {
				return buf, nil // an unexpected reply: let the packager judge it
			}
			return nil, &kindError{ErrKindTimeout, fmt.Errorf("no complete reply (%d bytes) from unit %d: %w", len(buf), req[0], context.DeadlineExceeded)}
		}
		if want < 0 && len(buf) >= 4 {
			// Length unknown: the frame ends with a silence.
			wait = min(wait, t.frameGap+t.charTime)
		}
		wait = min(wait, rtuReadTick)
		if err := t.port.SetReadTimeout(wait); err != nil {
			return nil, t.lost("set read timeout on", err)
		}
		start := time.Now()
		n, err := t.port.Read(buf[len(buf):cap(buf)])
		if err != nil {
			return nil, t.lost("read", err)
		}
		if n > 0 {
			buf, empty = buf[:len(buf)+n], 0
			continue
		}
		if want < 0 && len(buf) >= 4 {
			return buf, nil // silence after an unexpected reply
		}
		// Nothing: a timeout, or a hang-up that the library did not report
		// as one. A read that returns nothing well before its timeout is
		// the latter; so is a device node that is no longer there.
		if time.Since(start) < wait/2 {
			empty++
		} else {
			empty = 0
		}
		if empty >= rtuEmptyReads {
			return nil, t.lost("read", errors.New("reads return nothing (hang-up)"))
		}
		if !t.present() {
			return nil, t.lost("stat", errors.New("device node removed"))
		}
		if len(buf) == cap(buf) {
			return buf, nil
		}
	}
}

// replyLength is the length of the reply to req whose first bytes are got:
// 0 while not known yet, -1 when the reply is not one req expects (its end
// is found by the silence after it).
func replyLength(req, got []byte) int {
	if len(got) < 2 {
		return 0
	}
	fc := req[1]
	switch got[1] {
	case fc | 0x80:
		return 5 // unit, function, exception code, CRC
	case fc:
	default:
		return -1
	}
	switch fc {
	case modbus.FuncCodeReadCoils, modbus.FuncCodeReadDiscreteInputs,
		modbus.FuncCodeReadHoldingRegisters, modbus.FuncCodeReadInputRegisters,
		modbus.FuncCodeReadWriteMultipleRegisters:
		if len(got) < 3 {
			return 0
		}
		return 5 + int(got[2]) // unit, function, byte count, data, CRC
	case modbus.FuncCodeWriteSingleCoil, modbus.FuncCodeWriteSingleRegister,
		modbus.FuncCodeWriteMultipleCoils, modbus.FuncCodeWriteMultipleRegisters:
		return 8 // unit, function, address, value or quantity, CRC
	case modbus.FuncCodeMaskWriteRegister:
		return 10 // unit, function, address, and mask, or mask, CRC
	}
	return -1
}
