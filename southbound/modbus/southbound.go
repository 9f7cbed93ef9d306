package modbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/devnode"
	"github.com/fieldgate/fieldgate/internal/ratelog"
)

// Origin is the bus Origin of everything this package publishes. Set
// messages carrying it are ignored: the package never acts on its own
// publishes. Who else may publish set topics is decided by the broker's ACL.
const Origin = "$southbound/modbus"

// Qualities of a published value.
const (
	QualityGood  = "good"  // read in this poll
	QualityBad   = "bad"   // the device refused the read (exception) or the registers hold no valid value
	QualityStale = "stale" // the device did not answer: the value is the last good one (or null)
)

// syncedAfter is the default test of a synchronised wall clock: a board
// without RTC boots in 1970 (or at its build date), never after this.
var syncedAfter = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// commandQueue is how many set commands and reads wait per line.
const commandQueue = 64

// Options are the Service's collaborators. Zero values pick the defaults.
type Options struct {
	// Logger receives the service's logs (default slog.Default()).
	Logger *slog.Logger
	// Now is the wall clock for timestamps and command expiry (default
	// time.Now). Poll scheduling uses the monotonic clock.
	Now func() time.Time
	// ClockSynced reports whether the wall clock can be trusted; when it
	// returns false, payloads carry "ts_sync": false. Default: the time is
	// after 2024-01-01.
	ClockSynced func(time.Time) bool
	// OnPoll, if set, is called by a line's worker after each poll of a
	// group (for benchmarks and tests). It must return quickly.
	OnPoll func(PollInfo)
}

// PollInfo describes one finished poll of one group.
type PollInfo struct {
	Device, Group string
	// Scheduled is when the poll should have started, Started when it did
	// (monotonic clock), Took how long it lasted.
	Scheduled, Started time.Time
	Took               time.Duration
	// Err is the poll's first transaction error, if any.
	Err error
}

// DeviceStats are one device's counters.
type DeviceStats struct {
	Name   string
	Online bool
	// Polls counts group polls; FailedPolls those where the device did not
	// answer properly (exceptions do not count as failed polls).
	Polls, FailedPolls uint64
	// Requests counts transactions, retries included.
	Requests uint64
	// Errors counts failed transactions by kind (ErrKind*).
	Errors map[string]uint64
	// Skipped counts polls that were not started because the line was
	// still busy with earlier ones.
	Skipped uint64
	// Writes and WriteErrors count set commands executed and refused or failed.
	Writes, WriteErrors uint64
	// Dropped counts set commands dropped because the line's queue was full.
	Dropped uint64
	// PublishErrors counts messages the bus refused.
	PublishErrors uint64
	LastError     string
	LastErrorTime time.Time
	// RoundTripP50 and RoundTripP99 are the median and 99th percentile of
	// the time from request to answer of the device's last 256 answered
	// transactions (timeouts are not answers); zero before the first.
	RoundTripP50, RoundTripP99 time.Duration
}

// DeviceInfo is a device's configuration and state, for a status page.
type DeviceInfo struct {
	Name string
	// Transport is "tcp" or "rtu"; Address the host:port or serial port.
	Transport, Address string
	UnitID             int
	Points             int
	Online             bool
	LastError          string
	// SerialDevice is the device node an RTU port (typically a
	// /dev/serial/by-id link) resolved to when it was last opened.
	SerialDevice string
}

// Reading is one point's value from ReadNow.
type Reading struct {
	Point   string
	Value   Value
	Quality string
	Unit    string
	// Err says why the quality is not good.
	Err string
	// Raw are the point's registers as read (a bit register: 0 or 1).
	Raw []uint16
}

// Snapshot is the result of ReadNow.
type Snapshot struct {
	Device   string
	Time     time.Time
	Readings []Reading
}

// Service polls every configured device and executes set commands. Build it
// with New and run it with Run.
type Service struct {
	cfg    Config
	bus    bus.Bus
	log    *slog.Logger
	now    func() time.Time
	synced func(time.Time) bool
	onPoll func(PollInfo)

	lines   []*line
	devices []*device
	byName  map[string]*device
	setSub  string // the set-topic filter

	// keep names the devices whose status Run leaves alone when it stops
	// (KeepStatus).
	keep atomic.Pointer[map[string]bool]
}

// Progress returns the progress of the line that is furthest behind: when
// its worker last finished a round of polls (whether the devices answered
// or not) or, while its serial port is gone, last looked for it. A line
// blocked inside a transaction stops it advancing. It is the zero time
// while a line has not started, or when there is no line.
func (s *Service) Progress() time.Time {
	var oldest time.Time
	for i, l := range s.lines {
		n := l.progress.Load()
		if n == 0 {
			return time.Time{}
		}
		if t := time.Unix(0, n); i == 0 || t.Before(oldest) {
			oldest = t
		}
	}
	return oldest
}

// KeepStatus tells the service that the devices named go on in the service
// that replaces it (a config change): when it stops, their retained status
// is left as it is instead of being set to offline "stopped", so a change to
// one device does not make every other one blink offline to whoever watches
// their status. Call it before stopping the service.
func (s *Service) KeepStatus(names []string) {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	s.keep.Store(&m)
}

// New validates cfg and builds the service: codecs, request plans and one
// worker per physical line. Nothing is opened before Run.
func New(cfg Config, b bus.Bus, opts Options) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("modbus: config: %w", err)
	}
	if b == nil {
		return nil, errors.New("modbus: no bus")
	}
	cfg = cfg.withDefaults()
	s := &Service{
		cfg:    cfg,
		bus:    b,
		log:    opts.Logger,
		now:    opts.Now,
		synced: opts.ClockSynced,
		onPoll: opts.OnPoll,
		byName: map[string]*device{},
		setSub: cfg.Prefix + "/+/+/set",
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("part", "modbus")
	if s.now == nil {
		s.now = time.Now
	}
	if s.synced == nil {
		s.synced = func(t time.Time) bool { return !t.Before(syncedAfter) }
	}

	lines := map[string]*line{}
	for i, dc := range cfg.Devices {
		d := newDevice(s, i, dc)
		key := dc.lineKey()
		l, ok := lines[key]
		if !ok {
			l = &line{svc: s, key: key, cmds: make(chan command, commandQueue)}
			lines[key] = l
			s.lines = append(s.lines, l)
		}
		d.line = l
		l.devices = append(l.devices, d)
		s.devices = append(s.devices, d)
		s.byName[d.cfg.Name] = d
	}
	for _, l := range s.lines {
		timeout := time.Duration(0)
		for _, d := range l.devices {
			timeout = max(timeout, d.cfg.Timeout)
		}
		c := newGoburrowClient(l.devices[0].cfg, timeout)
		l.client = c
		if c.rtu != nil {
			l.port = c
			l.reopen = devnode.Backoff{Min: reopenMin, Max: reopenMax}
		}
	}
	return s, nil
}

// newDevice builds a device's points, codecs and plans.
func newDevice(s *Service, index int, dc Device) *device {
	d := &device{
		svc:         s,
		cfg:         dc,
		index:       index,
		byName:      map[string]*point{},
		statusTopic: s.cfg.Prefix + "/" + dc.Name + "/status",
		logLimit:    ratelog.NewLimiter(ratelog.Config{Every: 10 * time.Second, Burst: 3, Now: s.now}),
		stats:       DeviceStats{Name: dc.Name, Errors: map[string]uint64{}},
	}
	groups := map[string]*group{}
	for _, gc := range dc.PollGroups {
		g := &group{name: gc.Name, interval: gc.Interval, topic: s.cfg.Prefix + "/" + dc.Name + "/" + gc.Name}
		groups[gc.Name] = g
		d.groups = append(d.groups, g)
	}
	for _, pc := range dc.Points {
		p := &point{
			cfg:         pc,
			codec:       newCodec(pc),
			topic:       s.cfg.Prefix + "/" + dc.Name + "/" + pc.Name,
			resultTopic: s.cfg.Prefix + "/" + dc.Name + "/" + pc.Name + "/set/result",
		}
		p.unitJSON = Value{Kind: KindString, Str: pc.Unit}.AppendJSON(nil)
		d.points = append(d.points, p)
		d.byName[pc.Name] = p
		g := groups[pc.Group]
		g.points = append(g.points, p)
	}
	for _, g := range d.groups {
		g.reqs = planPoints(g.points, s.cfg)
		g.results = make([]result, len(g.points))
		for i, p := range g.points {
			p.slot = i
		}
	}
	return d
}

// planPoints plans the reads of a group's points.
func planPoints(points []*point, cfg Config) []request {
	spans := make([]span, len(points))
	for i, p := range points {
		n := p.codec.Words()
		if n == 0 {
			n = 1
		}
		spans[i] = span{Index: i, Register: p.cfg.Register, Address: p.cfg.Address, Count: n}
	}
	return plan(spans, cfg.MaxRegisters, cfg.MaxBits, cfg.MaxGap)
}

// Run polls the devices and serves set commands until ctx is done. It
// publishes every device's status "offline" (reason "stopped") before it
// returns, except those passed to KeepStatus, and returns nil after a clean
// stop.
func (s *Service) Run(ctx context.Context) error {
	unsub, err := s.bus.Subscribe(s.setSub, s.onSet)
	if err != nil {
		return fmt.Errorf("modbus: subscribe %s: %w", s.setSub, err)
	}
	defer unsub()

	var wg sync.WaitGroup
	for _, l := range s.lines {
		wg.Go(func() { l.run(ctx) })
	}
	wg.Wait()

	stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	var keep map[string]bool
	if k := s.keep.Load(); k != nil {
		keep = *k
	}
	for _, d := range s.devices {
		if !keep[d.cfg.Name] {
			d.publishStatus(stop, false, "stopped")
		}
	}
	for _, l := range s.lines {
		if err := l.client.Close(); err != nil {
			s.log.Debug("close line", "line", l.key, "err", err)
		}
	}
	return nil
}

// onSet takes a set command from the bus. It runs in the publisher's
// goroutine: it only parses the topic and enqueues.
func (s *Service) onSet(m bus.Message) {
	if m.Origin == Origin {
		return
	}
	rest, ok := strings.CutPrefix(m.Topic, s.cfg.Prefix+"/")
	if !ok {
		return
	}
	devName, rest, _ := strings.Cut(rest, "/")
	pointName, _, _ := strings.Cut(rest, "/")
	d := s.byName[devName]
	if d == nil {
		return // another southbound part's device, or nobody's
	}
	cmd := command{
		dev:      d,
		point:    pointName,
		topic:    m.Topic,
		payload:  append([]byte(nil), m.Payload...),
		received: m.Time,
		expiry:   m.Expiry,
	}
	select {
	case d.line.cmds <- cmd:
	default:
		d.mu.Lock()
		d.stats.Dropped++
		d.mu.Unlock()
		d.logf(s.now(), slog.LevelWarn, "set command dropped: line queue full", "point", pointName)
	}
}

// ReadNow reads every point of the named device at once, between polls, and
// returns the values with their raw registers. Nothing is published.
func (s *Service) ReadNow(ctx context.Context, name string) (Snapshot, error) {
	d := s.byName[name]
	if d == nil {
		return Snapshot{}, fmt.Errorf("modbus: read %s: no such device", name)
	}
	reply := make(chan Snapshot, 1)
	select {
	case d.line.cmds <- command{dev: d, readNow: reply, ctx: ctx}:
	case <-ctx.Done():
		return Snapshot{}, fmt.Errorf("modbus: read %s: %w", name, ctx.Err())
	}
	select {
	case snap := <-reply:
		return snap, nil
	case <-ctx.Done():
		return Snapshot{}, fmt.Errorf("modbus: read %s: %w", name, ctx.Err())
	}
}

// Stats returns every device's counters, in config order.
func (s *Service) Stats() []DeviceStats {
	out := make([]DeviceStats, len(s.devices))
	for i, d := range s.devices {
		d.mu.Lock()
		out[i] = d.stats
		out[i].Errors = maps.Clone(d.stats.Errors)
		out[i].RoundTripP50, out[i].RoundTripP99 = d.rtt.Quantiles()
		d.mu.Unlock()
	}
	return out
}

// Devices describes every device, in config order.
func (s *Service) Devices() []DeviceInfo {
	out := make([]DeviceInfo, len(s.devices))
	for i, d := range s.devices {
		info := DeviceInfo{Name: d.cfg.Name, UnitID: d.cfg.UnitID, Points: len(d.points)}
		if d.cfg.TCP != nil {
			info.Transport, info.Address = "tcp", d.cfg.TCP.Address
		} else {
			info.Transport, info.Address = "rtu", d.cfg.RTU.Port
			if c, ok := d.line.client.(*goburrowClient); ok && c.rtu != nil {
				if dev := c.rtu.opened.Load(); dev != nil {
					info.SerialDevice = *dev
				}
			}
		}
		d.mu.Lock()
		info.Online, info.LastError = d.stats.Online, d.stats.LastError
		d.mu.Unlock()
		out[i] = info
	}
	return out
}
