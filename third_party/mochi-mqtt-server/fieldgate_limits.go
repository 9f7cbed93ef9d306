// SPDX-License-Identifier: MIT

package mqtt

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// fieldgate patch (memory bomb): packet bodies are read as their bytes
// arrive and counted against a budget, and packet errors are logged without
// packet contents and rate-limited. See PATCHES.md, entry 18.

// PacketBudget bounds the memory held by packet bodies while they are being
// read (Options.PacketBudget). Reserve returns false when n more bytes would
// exceed the budget; every successful Reserve is matched by a Release of
// the same n.
type PacketBudget interface {
	Reserve(n int64) bool
	Release(n int64)
}

// ErrPacketBudget is returned by Client.ReadPacket when the memory budget
// for packet bodies cannot take the next part of a body; the connection is
// closed.
var ErrPacketBudget = errors.New("packet refused: memory budget for packet bodies exhausted")

// bodyChunk is the most ReadPacket allocates for a body ahead of the bytes
// that have arrived: a body larger than this is read into a buffer that
// starts at bodyChunk bytes and doubles as it fills, so a client that
// announces a large packet and sends little of it holds little memory.
const bodyChunk = 64 << 10

// readBody reads a packet body of n bytes from the client's connection.
func (cl *Client) readBody(n int) ([]byte, error) {
	budget := cl.ops.options.PacketBudget
	reserved := 0
	defer func() {
		if budget != nil && reserved > 0 {
			budget.Release(int64(reserved))
		}
	}()
	// reserve grows the reservation to size bytes.
	reserve := func(size int) bool {
		if budget != nil && !budget.Reserve(int64(size-reserved)) {
			return false
		}
		reserved = size
		return true
	}
	if n <= bodyChunk {
		if !reserve(n) {
			return nil, ErrPacketBudget
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(cl.Net.bconn, p); err != nil {
			return nil, err
		}
		return p, nil
	}
	var p []byte
	for len(p) < n {
		if len(p) == cap(p) {
			size := min(n, max(2*cap(p), bodyChunk))
			if !reserve(size) {
				return nil, ErrPacketBudget
			}
			np := make([]byte, len(p), size)
			copy(np, p)
			p = np
		}
		k, err := io.ReadFull(cl.Net.bconn, p[len(p):cap(p)])
		p = p[:len(p)+k]
		if err != nil {
			return nil, err
		}
	}
	return p, nil
}

// badPacketLogInterval and badPacketLogsPerInterval bound the log lines about
// bad packets: one per client (or, before CONNECT, per address) per
// interval, and at most badPacketLogsPerInterval lines over all clients.
const (
	badPacketLogInterval     = time.Minute
	badPacketLogsPerInterval = 20
)

// logLimiter lets at most one line per key, and at most perWindow lines in
// all, through per window of interval; it counts what it held back and
// reports the count with the next line it lets through. A nil *logLimiter
// lets everything through.
type logLimiter struct {
	interval  time.Duration
	perWindow int

	mu         sync.Mutex
	window     time.Time
	passed     int
	seen       map[string]struct{} // keys with a line in this window (at most perWindow)
	suppressed int
}

func newLogLimiter(interval time.Duration, perWindow int) *logLimiter {
	return &logLimiter{interval: interval, perWindow: perWindow, seen: make(map[string]struct{})}
}

// allow reports whether a line for key may be logged at now, and how many
// lines were held back since the last one let through.
func (l *logLimiter) allow(key string, now time.Time) (ok bool, suppressed int) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= l.interval {
		l.window = now
		l.passed = 0
		clear(l.seen)
	}
	if _, dup := l.seen[key]; dup || l.passed >= l.perWindow {
		l.suppressed++
		return false, 0
	}
	l.seen[key] = struct{}{}
	l.passed++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// logBadPacket logs, at WARN and rate-limited per client, a packet that was
// malformed or could not be processed: its type and sizes, the client, the
// listener and the reason, never the packet's contents. pk may be nil when
// not even the packet type was read.
func (cl *Client) logBadPacket(msg string, pk *packets.Packet, err error) {
	key := cl.ID
	if key == "" { // before CONNECT: per address
		key = "addr:" + hostOf(cl.Net.Remote)
	}
	ok, suppressed := cl.ops.logs.allow(key, time.Now())
	if !ok {
		return
	}
	args := []any{
		"client", cl.ID,
		"listener", cl.Net.Listener,
		"remote", cl.Net.Remote,
		"error", err,
	}
	if pk != nil {
		args = append(args, "packet", pk)
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	cl.ops.log.Warn(msg, args...)
}

// isPacketError reports whether err says a packet was malformed or refused
// (an MQTT reason code), as opposed to a network error.
func isPacketError(err error) bool {
	var code packets.Code
	return errors.As(err, &code) || errors.Is(err, ErrPacketBudget)
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// LogValue makes a will safe to log: topic, QoS and payload size only.
// fieldgate patch (no secrets in logs).
func (w Will) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("topic", w.TopicName),
		slog.Int("qos", int(w.Qos)),
		slog.Int("payload_length", len(w.Payload)),
	)
}
