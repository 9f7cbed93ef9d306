package modbus

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/devnode"
	"github.com/fieldgate/fieldgate/internal/ratelog"
	"github.com/fieldgate/fieldgate/southbound/roundtrip"
	"github.com/fieldgate/fieldgate/southbound/setcmd"
)

// line is one physical line (an RTU port or a TCP endpoint) and its worker:
// every transaction on it runs in its run goroutine, one at a time.
type line struct {
	svc     *Service
	key     string
	devices []*device
	client  Client
	cmds    chan command

	// port is the client of an RTU line, which can lose its serial port
	// (nil on a TCP line).
	port portLine
	// lost is the line error (errPortGone) that took the line down, nil
	// while the port is usable; reopen is the backoff between attempts to
	// open a port that is there but fails.
	lost   error
	reopen devnode.Backoff

	// progress is when the worker last went round its loop (Unix
	// nanoseconds): a poll round done, or a look for a lost port.
	progress atomic.Int64
}

// portLine is what a line whose port can vanish needs from its client.
type portLine interface {
	// reopen opens the port again, resolving its path anew.
	reopen() error
	// presence identifies what the port path resolves to now, "" when it
	// is missing.
	presence() string
}

// device is one slave. Its fields are owned by its line's worker, except
// stats (under mu).
type device struct {
	svc         *Service
	cfg         Device
	index       int
	line        *line
	points      []*point
	byName      map[string]*point
	groups      []*group
	statusTopic string

	fails       int    // failed polls in a row
	statusKnown bool   // a status was published
	online      bool   // the status published
	reason      string // why it is offline, as published

	logLimit *ratelog.Limiter
	mu       sync.Mutex
	stats    DeviceStats
	rtt      roundtrip.Window // guarded by mu
}

// group is a poll group of a device with its read plan.
type group struct {
	name     string
	interval time.Duration
	topic    string
	points   []*point
	reqs     []request
	results  []result // one per point, reused every poll
	next     time.Time
}

// point is one configured point with what was last published.
type point struct {
	cfg         Point
	codec       Codec
	topic       string
	resultTopic string
	unitJSON    []byte
	slot        int // index in its group

	published bool
	lastV     Value
	lastQ     string
	lastGood  Value
}

// result is one point's outcome in a poll.
type result struct {
	v   Value
	q   string
	err error
	raw []byte // the point's bytes (registers) or nil
	bit bool
}

// command is a set command or a ReadNow request queued for a line.
type command struct {
	dev *device
	// set command
	point    string
	topic    string
	payload  []byte
	received time.Time
	expiry   time.Duration
	// ReadNow
	readNow chan<- Snapshot
	ctx     context.Context
}

// run is the line's worker loop: it polls each due group, and runs queued
// commands between polls, until ctx is done.
func (l *line) run(ctx context.Context) {
	start := time.Now()
	for _, d := range l.devices {
		for _, g := range d.groups {
			g.next = start
		}
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		l.progress.Store(time.Now().UnixNano())
		if l.lost != nil {
			if !l.recover(ctx) {
				return
			}
			now := time.Now()
			for _, d := range l.devices {
				for _, g := range d.groups {
					g.next = now
				}
			}
		}
		due := l.nextDue()
		timer.Reset(time.Until(due))
		select {
		case <-ctx.Done():
			return
		case cmd := <-l.cmds:
			l.execute(ctx, cmd)
			continue
		case <-timer.C:
		}
	polls:
		for _, d := range l.devices {
			for _, g := range d.groups {
				if now := time.Now(); !now.Before(g.next) {
					if ctx.Err() != nil {
						return
					}
					l.pollGroup(ctx, d, g, now)
					l.drain(ctx)
					if l.lost != nil {
						break polls
					}
				}
			}
		}
	}
}

// recover handles a line error: every device of the line is published
// offline with the reason "serial port gone", and the port is opened again
// as soon as its path resolves to a device node again (looked at every
// presenceTick: a stat, nothing that costs CPU), or after the backoff when
// the node is there but failed. Commands meanwhile fail at once. It returns
// false when ctx ends first.
func (l *line) recover(ctx context.Context) bool {
	s := l.svc
	s.log.Warn("serial port gone", "line", l.key, "err", l.lost)
	for _, d := range l.devices {
		if d.online || !d.statusKnown || d.reason != reasonPortGone {
			d.publishStatus(ctx, false, reasonPortGone)
		}
		d.fails = 0
	}
	if err := l.client.Close(); err != nil {
		s.log.Debug("close lost line", "line", l.key, "err", err)
	}
	seen := l.port.presence()
	retry := time.Now().Add(l.reopen.Wait())
	tick := time.NewTicker(presenceTick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case cmd := <-l.cmds:
			l.execute(ctx, cmd) // fails at once: the line is down
			continue
		case <-tick.C:
		}
		l.progress.Store(time.Now().UnixNano())
		now := l.port.presence()
		if now == "" || (now == seen && time.Now().Before(retry)) {
			seen = now
			continue
		}
		seen = now
		if err := l.port.reopen(); err != nil {
			s.log.Debug("serial port still unusable", "line", l.key, "err", err)
			retry = time.Now().Add(l.reopen.Wait())
			continue
		}
		l.lost = nil
		s.log.Info("serial port back", "line", l.key)
		return true
	}
}

// nextDue is the earliest scheduled poll of the line.
func (l *line) nextDue() time.Time {
	var due time.Time
	for _, d := range l.devices {
		for _, g := range d.groups {
			if due.IsZero() || g.next.Before(due) {
				due = g.next
			}
		}
	}
	return due
}

// drain runs the commands already queued, without waiting.
func (l *line) drain(ctx context.Context) {
	for {
		select {
		case cmd := <-l.cmds:
			l.execute(ctx, cmd)
		default:
			return
		}
	}
}

func (l *line) execute(ctx context.Context, cmd command) {
	if cmd.readNow != nil {
		cmd.readNow <- l.readNow(cmd.ctx, cmd.dev)
		return
	}
	l.write(ctx, cmd)
}

// transact runs one transaction for d with its request delay, timeout and
// retries, counting every failed attempt.
func (l *line) transact(ctx context.Context, d *device, fn func(context.Context) error) error {
	if l.lost != nil {
		return &kindError{ErrKindConnection, errPortGone}
	}
	var err error
	for attempt := 0; attempt <= d.cfg.Retries; attempt++ {
		if d.cfg.RequestDelay > 0 {
			t := time.NewTimer(d.cfg.RequestDelay)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		tctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
		sent := time.Now()
		err = fn(tctx)
		took := time.Since(sent)
		cancel()
		kind := ""
		if err != nil {
			kind = errorKind(err)
		}
		d.mu.Lock()
		if err == nil || kind == ErrKindException {
			d.rtt.Add(took)
		}
		d.stats.Requests++
		if err != nil {
			d.stats.Errors[kind]++
			d.stats.LastError = err.Error()
			d.stats.LastErrorTime = d.svc.now()
		}
		d.mu.Unlock()
		if l.port != nil && errors.Is(err, errPortGone) {
			l.lost = err // a line error: no retry, the worker takes the line down
			return err
		}
		if err == nil {
			l.reopen = devnode.Backoff{Min: reopenMin, Max: reopenMax} // the port works
		}
		if err == nil || kind == ErrKindException || ctx.Err() != nil {
			return err
		}
		d.logf(d.svc.now(), slog.LevelWarn, "transaction failed", "kind", kind, "attempt", attempt+1, "err", err)
	}
	return err
}

// read runs the planned request r and fills results for its spans.
func (l *line) read(ctx context.Context, d *device, g *group, r request) error {
	var raw []byte
	err := l.transact(ctx, d, func(ctx context.Context) error {
		var err error
		raw, err = l.client.Read(ctx, byte(d.cfg.UnitID), r.Register, uint16(r.Address), uint16(r.Count))
		return err
	})
	if err != nil {
		return fmt.Errorf("modbus %s: read %s %d+%d: %w", d.cfg.Name, r.Register, r.Address, r.Count, err)
	}
	bits := r.Register == RegCoil || r.Register == RegDiscrete
	for _, s := range r.Spans {
		p := g.points[s.Index]
		res := &g.results[s.Index]
		off := s.Address - r.Address
		if bits {
			on := raw[off/8]>>(off%8)&1 == 1
			*res = result{v: p.codec.DecodeBit(on), q: QualityGood, bit: on}
			continue
		}
		b := raw[2*off : 2*(off+s.Count)]
		v, err := p.codec.Decode(b)
		if err != nil {
			*res = result{q: QualityBad, err: err, raw: b}
			continue
		}
		*res = result{v: v, q: QualityGood, raw: b}
	}
	return nil
}

// pollGroup reads every request of g, publishes the values and updates the
// device's status.
func (l *line) pollGroup(ctx context.Context, d *device, g *group, started time.Time) {
	scheduled := g.next
	ts := d.svc.now()
	var firstErr error
	failed := false
	for _, r := range g.reqs {
		if failed { // the device does not answer: do not wait for every request
			l.markFailed(d, g, r, QualityStale, firstErr)
			continue
		}
		err := l.read(ctx, d, g, r)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if firstErr == nil {
			firstErr = err
		}
		if errorKind(err) == ErrKindException {
			l.markFailed(d, g, r, QualityBad, err)
			continue
		}
		failed = true
		l.markFailed(d, g, r, QualityStale, err)
	}
	took := time.Since(started)

	// Schedule the next poll; polls that could not start in time are skipped.
	skipped := uint64(0)
	g.next = scheduled.Add(g.interval)
	if now := time.Now(); !now.Before(g.next) {
		n := now.Sub(g.next)/g.interval + 1
		skipped = uint64(n)
		g.next = g.next.Add(n * g.interval)
	}

	d.mu.Lock()
	d.stats.Polls++
	d.stats.Skipped += skipped
	if failed {
		d.stats.FailedPolls++
	}
	d.mu.Unlock()

	l.publishGroup(ctx, d, g, ts)
	switch {
	case failed && l.lost != nil:
		// A line error: recover publishes every device of the line offline.
	case failed:
		d.fails++
		if d.fails >= d.svc.cfg.OfflineAfter && (d.online || !d.statusKnown || d.reason == reasonPortGone) {
			d.logf(d.svc.now(), slog.LevelWarn, "device offline", "failures", d.fails, "err", firstErr)
			d.publishStatus(ctx, false, firstErr.Error())
		}
	default:
		d.fails = 0
		if !d.online {
			d.publishStatus(ctx, true, "")
			d.svc.log.Info("device online", "device", d.cfg.Name)
		}
	}
	if d.svc.onPoll != nil {
		d.svc.onPoll(PollInfo{Device: d.cfg.Name, Group: g.name, Scheduled: scheduled, Started: started, Took: took, Err: firstErr})
	}
}

// markFailed sets the results of a failed request's spans.
func (l *line) markFailed(d *device, g *group, r request, q string, err error) {
	for _, s := range r.Spans {
		res := &g.results[s.Index]
		*res = result{q: q, err: err}
		if q == QualityStale {
			res.v = g.points[s.Index].lastGood
		}
	}
}

// changed applies deadband and on_change to a point's new result.
func (p *point) changed(r result) bool {
	if !p.published || r.q != p.lastQ {
		return true
	}
	if r.q == QualityGood && p.cfg.Deadband > 0 {
		return math.Abs(r.v.Float64()-p.lastV.Float64()) >= p.cfg.Deadband
	}
	if p.cfg.OnChange {
		return r.v != p.lastV
	}
	return true
}

// remember records what was published for p.
func (p *point) remember(r result) {
	p.published, p.lastV, p.lastQ = true, r.v, r.q
}

// publishGroup publishes g's results, per point or as one message.
func (l *line) publishGroup(ctx context.Context, d *device, g *group, ts time.Time) {
	s := d.svc
	synced := s.synced(ts)
	for i, p := range g.points {
		if g.results[i].q == QualityGood {
			p.lastGood = g.results[i].v
		}
	}
	if s.cfg.PublishMode == PublishGroup {
		payload := make([]byte, 0, 64+48*len(g.points))
		payload = appendStamp(append(payload, '{'), ts, synced)
		payload = append(payload, `,"values":{`...)
		n := 0
		for i, p := range g.points {
			r := g.results[i]
			if !p.changed(r) {
				continue
			}
			p.remember(r)
			if n > 0 {
				payload = append(payload, ',')
			}
			n++
			payload = strconv.AppendQuote(payload, p.cfg.Name)
			payload = append(payload, ':')
			payload = p.appendValue(payload, r)
			payload = append(payload, '}')
		}
		if n == 0 {
			return
		}
		payload = append(payload, "}}"...)
		d.publish(ctx, bus.Message{Topic: g.topic, Payload: payload, QoS: byte(s.cfg.QoS)})
		return
	}
	for i, p := range g.points {
		r := g.results[i]
		if !p.changed(r) {
			continue
		}
		p.remember(r)
		payload := make([]byte, 0, 80)
		payload = appendStamp(p.appendValue(payload, r), ts, synced)
		payload = append(payload, '}')
		d.publish(ctx, bus.Message{Topic: p.topic, Payload: payload, QoS: byte(s.cfg.QoS)})
	}
}

// appendValue appends `{"v":…,"q":…[,"unit":…]` (without the closing brace).
func (p *point) appendValue(b []byte, r result) []byte {
	b = append(b, `{"v":`...)
	if r.q == QualityBad {
		b = append(b, "null"...)
	} else {
		b = r.v.AppendJSON(b)
	}
	b = append(b, `,"q":"`...)
	b = append(b, r.q...)
	b = append(b, '"')
	if p.cfg.Unit != "" {
		b = append(b, `,"unit":`...)
		b = append(b, p.unitJSON...)
	}
	return b
}

// appendStamp appends `,"ts":ms` and, when the clock is not synchronised,
// `,"ts_sync":false` (after a '{', without the comma).
func appendStamp(b []byte, ts time.Time, synced bool) []byte {
	if b[len(b)-1] != '{' {
		b = append(b, ',')
	}
	b = append(b, `"ts":`...)
	b = strconv.AppendInt(b, ts.UnixMilli(), 10)
	if !synced {
		b = append(b, `,"ts_sync":false`...)
	}
	return b
}

// publish sends m with the package's origin, counting refusals.
func (d *device) publish(ctx context.Context, m bus.Message) {
	m.Origin = Origin
	if err := d.svc.bus.Publish(ctx, m); err != nil {
		if ctx.Err() != nil {
			return
		}
		d.mu.Lock()
		d.stats.PublishErrors++
		d.mu.Unlock()
		d.logf(d.svc.now(), slog.LevelWarn, "publish refused", "topic", m.Topic, "err", err)
	}
}

// publishStatus publishes the retained device status and records it.
func (d *device) publishStatus(ctx context.Context, online bool, reason string) {
	ts := d.svc.now()
	state := "offline"
	if online {
		state = "online"
	}
	b := append([]byte(nil), `{"state":"`...)
	b = append(b, state...)
	b = append(b, '"')
	if !online {
		b = append(b, `,"err":`...)
		b = Value{Kind: KindString, Str: reason}.AppendJSON(b)
	}
	b = appendStamp(b, ts, d.svc.synced(ts))
	b = append(b, '}')
	d.online, d.statusKnown, d.reason = online, true, reason
	d.mu.Lock()
	d.stats.Online = online
	d.mu.Unlock()
	d.publish(ctx, bus.Message{Topic: d.statusTopic, Payload: b, QoS: 1, Retain: true})
}

// logf logs about the device, at most a few lines of each message per 10 s
// per device so that a flaky wire cannot flood the log (internal/ratelog);
// a line after some were held back says how many.
func (d *device) logf(now time.Time, level slog.Level, msg string, args ...any) {
	ok, suppressed := d.logLimit.AllowAt(now, msg, "")
	if !ok {
		return
	}
	args = append([]any{"device", d.cfg.Name}, args...)
	if suppressed > 0 {
		args = append(args, ratelog.SuppressedKey, suppressed)
	}
	d.svc.log.Log(context.Background(), level, msg, args...)
}

// setResult is the payload of a set/result message.
type setResult struct {
	ID  json.RawMessage `json:"id"`
	OK  bool            `json:"ok"`
	Err *string         `json:"err"`
	V   *Value          `json:"v,omitempty"`
}

// write executes one set command and publishes its result.
func (l *line) write(ctx context.Context, cmd command) {
	d := cmd.dev
	res := setResult{ID: json.RawMessage("null")}
	topic := cmd.topic + "/result"
	err := func() error {
		id, in, expires, err := setcmd.Parse(cmd.payload)
		if id != nil {
			res.ID = id
		}
		p := d.byName[cmd.point]
		if p == nil {
			return fmt.Errorf("no point %q on device %s", cmd.point, d.cfg.Name)
		}
		topic = p.resultTopic
		if err != nil {
			return err
		}
		now := d.svc.now()
		if err := setcmd.CheckExpiry(now, expires, cmd.received, cmd.expiry); err != nil {
			return err
		}
		if !p.cfg.Writable {
			return fmt.Errorf("point %s is not writable", p.cfg.Name)
		}
		raw, bit, err := p.codec.Encode(in)
		if err != nil {
			return fmt.Errorf("point %s: %w", p.cfg.Name, err)
		}
		addr := uint16(p.cfg.Address)
		unit := byte(d.cfg.UnitID)
		regBit, isRegBit := p.codec.RegisterBit()
		err = l.transact(ctx, d, func(ctx context.Context) error {
			switch {
			case p.cfg.Register == RegCoil:
				return l.client.WriteCoil(ctx, unit, addr, bit)
			case isRegBit:
				return l.writeRegisterBit(ctx, d, addr, regBit, bit)
			}
			return l.client.WriteRegisters(ctx, unit, addr, raw)
		})
		if err != nil {
			return fmt.Errorf("modbus %s: write %s: %w", d.cfg.Name, p.cfg.Name, err)
		}
		if !p.cfg.ReadBack {
			return nil
		}
		r, err := l.readPoint(ctx, d, p)
		if err != nil {
			return fmt.Errorf("read back: %w", err)
		}
		res.V = &r.v
		switch {
		case p.cfg.Register == RegCoil && r.bit != bit,
			isRegBit && r.v.Bool != bit,
			p.cfg.Register != RegCoil && !isRegBit && !bytes.Equal(r.raw, raw):
			return fmt.Errorf("read back %s after writing", string(r.v.AppendJSON(nil)))
		}
		return nil
	}()
	res.OK = err == nil
	d.mu.Lock()
	d.stats.Writes++
	if err != nil {
		d.stats.WriteErrors++
	}
	d.mu.Unlock()
	if err != nil {
		msg := err.Error()
		res.Err = &msg
		d.logf(d.svc.now(), slog.LevelInfo, "set refused or failed", "point", cmd.point, "err", err)
	}
	payload, _ := json.Marshal(res) // plain types: cannot fail
	d.publish(ctx, bus.Message{Topic: topic, Payload: payload, QoS: byte(d.svc.cfg.QoS)})
}

// writeRegisterBit sets or clears one bit of a holding register: with Mask
// Write Register (22), or as read (03), change, write (06) when the device
// is configured for it. Runs inside one transaction of the line, so no poll
// of this line comes in between.
func (l *line) writeRegisterBit(ctx context.Context, d *device, addr uint16, bit uint, on bool) error {
	unit := byte(d.cfg.UnitID)
	mask := uint16(1) << bit
	var set uint16
	if on {
		set = mask
	}
	if d.cfg.BitWrites == BitWritesReadModifyWrite {
		cur, err := l.client.Read(ctx, unit, RegHolding, addr, 1)
		if err != nil {
			return fmt.Errorf("read before changing bit %d: %w", bit, err)
		}
		v := binary.BigEndian.Uint16(cur)&^mask | set
		return l.client.WriteRegisters(ctx, unit, addr, binary.BigEndian.AppendUint16(nil, v))
	}
	err := l.client.MaskWriteRegister(ctx, unit, addr, ^mask, set)
	var ex *ExceptionError
	if errors.As(err, &ex) && ex.Exception == 1 {
		return fmt.Errorf("%w: the device has no Mask Write Register (function 22); set bit_writes: %s on it", err, BitWritesReadModifyWrite)
	}
	return err
}

// readPoint reads one point on its own.
func (l *line) readPoint(ctx context.Context, d *device, p *point) (result, error) {
	n := max(p.codec.Words(), 1)
	r := request{Register: p.cfg.Register, Address: p.cfg.Address, Count: n,
		Spans: []span{{Index: 0, Register: p.cfg.Register, Address: p.cfg.Address, Count: n}}}
	g := &group{points: []*point{p}, results: make([]result, 1)}
	if err := l.read(ctx, d, g, r); err != nil {
		return result{}, err
	}
	res := g.results[0]
	if res.err != nil {
		return res, res.err
	}
	return res, nil
}

// readNow reads every group of d without publishing.
func (l *line) readNow(ctx context.Context, d *device) Snapshot {
	snap := Snapshot{Device: d.cfg.Name, Time: d.svc.now()}
	for _, g := range d.groups {
		scratch := &group{points: g.points, results: make([]result, len(g.points))}
		for _, r := range g.reqs {
			if err := l.read(ctx, d, scratch, r); err != nil {
				q := QualityStale
				if errorKind(err) == ErrKindException {
					q = QualityBad
				}
				l.markFailed(d, scratch, r, q, err)
			}
		}
		for i, p := range g.points {
			res := scratch.results[i]
			rd := Reading{Point: p.cfg.Name, Value: res.v, Quality: res.q, Unit: p.cfg.Unit}
			if res.q == QualityBad {
				rd.Value = Value{}
			}
			if res.err != nil {
				rd.Err = res.err.Error()
			}
			switch {
			case res.raw != nil:
				rd.Raw = make([]uint16, len(res.raw)/2)
				for j := range rd.Raw {
					rd.Raw[j] = binary.BigEndian.Uint16(res.raw[2*j:])
				}
			case res.q == QualityGood && res.bit:
				rd.Raw = []uint16{1}
			case res.q == QualityGood:
				rd.Raw = []uint16{0}
			}
			snap.Readings = append(snap.Readings, rd)
		}
	}
	return snap
}
