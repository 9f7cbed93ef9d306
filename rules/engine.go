// Package rules is fieldgate's edge rule engine: EMQX-style rule SQL
// (SELECT … FROM "filter" WHERE …, FOREACH … DO … INCASE, built-in
// functions) and eKuiper-style windows (GROUP BY …, TUMBLINGWINDOW(ss, 10)
// with avg, min, max, ...; changed and lag for report by exception), run on
// the messages of the local broker, with actions that republish, send to
// the cloud through the uplink, POST to a web hook or log.
//
// The SQL is parsed by a small hand-written parser (Parse) into an AST that
// an evaluator of its own runs over JSON-like values; evaluation is bounded
// (no loops, regular expressions compiled when the rule is parsed, results
// capped). docs/rules.md is the reference.
//
// The engine talks to the broker only through the bus: it subscribes once
// per distinct FROM filter with a handler that only enqueues (a bounded
// queue per rule; a full queue drops and counts, never blocks the
// publisher); the message's fields and parsed payload are built once and
// shared read-only by the rules it reaches, and a small pool of workers
// evaluates each rule's messages in order (up to 64 at a time) and runs
// its actions. State (windows, changed, lag) is in memory, bounded per
// rule, and does not survive a restart.
package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldgate/fieldgate/bus"
)

// Clock is the engine's time: Now for message times and windows, NewTicker
// for closing windows. Tests inject a fake one.
type Clock interface {
	Now() time.Time
	NewTicker(d time.Duration) Ticker
}

// Ticker is a Clock's ticker.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) NewTicker(d time.Duration) Ticker {
	return realTicker{time.NewTicker(d)}
}

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }

// Options are what the engine needs besides its config.
type Options struct {
	// Bus is the local broker (required).
	Bus bus.Bus
	// Logger receives the engine's logs (default: discarded).
	Logger *slog.Logger
	// GatewayID is the ${gateway_id} of templates and the gateway_id field.
	GatewayID string
	// Clock is the time (default: the system clock).
	Clock Clock
	// OpenQueue opens the queue of an http action, named "<rule id>.<action
	// index>", holding at most max requests. The gateway passes a durable
	// queue (store.OpenQueue); nil keeps the requests in memory, where a
	// restart loses them.
	OpenQueue func(name string, max int) (Queue, error)
	// HTTPClient sends the http actions' requests (default: a client with
	// no overall timeout; each request has its action's timeout).
	HTTPClient *http.Client
	// QueueSize bounds each rule's queue of messages waiting to be
	// evaluated (default 1024).
	QueueSize int
	// Workers is how many goroutines evaluate the rules (default
	// 4 × GOMAXPROCS, at least 8): a rule is evaluated by one at a time; an
	// action that waits (a QoS 1 uplink publish waits for the outbox's
	// fsync) holds one.
	Workers int
	// MaxGroups bounds each rule's state (default DefaultMaxGroups).
	MaxGroups int
	// RetryMin and RetryMax bound the http actions' retry delay, which
	// doubles from min to max (defaults 500ms and 30s).
	RetryMin, RetryMax time.Duration
	// StatsTopic and StatsInterval: the engine publishes Stats as JSON on
	// this topic every interval (defaults "$SYS/fieldgate/rules", 10s; a
	// negative interval turns it off).
	StatsTopic    string
	StatsInterval time.Duration
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{}
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 1024
	}
	if o.Workers <= 0 {
		o.Workers = max(8, 4*runtime.GOMAXPROCS(0))
	}
	if o.MaxGroups <= 0 {
		o.MaxGroups = DefaultMaxGroups
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 500 * time.Millisecond
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(30*time.Second, o.RetryMin)
	}
	if o.StatsTopic == "" {
		o.StatsTopic = "$SYS/fieldgate/rules"
	}
	if o.StatsInterval == 0 {
		o.StatsInterval = 10 * time.Second
	}
	return o
}

// Origin is the origin prefix of what rules publish ("$rules/<id>"). A
// rule never sees its own output.
const Origin = "$rules"

// maxHops bounds how many rules a message may pass through in a chain
// (rule A republishes to rule B's topic, ...): the user property
// HopProperty counts them, and a message at the limit is not taken.
const maxHops = 8

// HopProperty is the MQTT 5 user property counting the rules a republished
// message went through.
const HopProperty = "fieldgate-rule-hops"

// Engine runs the rules. Run it as a part; Reload applies a new config.
type Engine struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	cfg      Config
	ctx      context.Context // Run's; nil before Run and after it returned
	running  map[string]*ruleRun
	counters map[string]*ruleCounters // by rule id, kept across reloads
	queues   map[string]*queueHandle  // http queues by name, kept across reloads
	fanouts  map[string]*fanout       // bus subscriptions by filter
	ready    chan *ruleRun            // rules with mail, for the workers

	// finished counts the messages and ticks the workers finished;
	// Progress turns its changes into times (the hot path reads no clock).
	finished     atomic.Uint64
	progressMu   sync.Mutex
	lastFinished uint64
	lastProgress time.Time
}

// New checks cfg and returns an engine that runs it once Run is called.
func New(cfg Config, opts Options) (*Engine, error) {
	if opts.Bus == nil {
		return nil, errors.New("rules: a bus is required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	opts = opts.withDefaults()
	return &Engine{
		opts:     opts,
		log:      opts.Logger,
		cfg:      cfg,
		running:  map[string]*ruleRun{},
		counters: map[string]*ruleCounters{},
		queues:   map[string]*queueHandle{},
		fanouts:  map[string]*fanout{},
		// the engine has not been stuck before it ran
		lastProgress: time.Now(),
		// every run is on it at most once; old and new runs coexist
		// during a reload
		ready: make(chan *ruleRun, 2*maxRules+16),
	}, nil
}

// Run runs the enabled rules until ctx is done, then stops them and
// returns nil. A rule that cannot start (its subscription is refused, its
// http queue does not open) is logged and counted as failed; the others
// run.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.ctx != nil {
		e.mu.Unlock()
		return errors.New("rules: engine already running")
	}
	e.ctx = ctx
	workerCtx, stopWorkers := context.WithCancel(context.Background())
	var workers sync.WaitGroup
	defer func() {
		stopWorkers()
		workers.Wait()
	}()
	for range e.opts.Workers {
		workers.Go(func() {
			for {
				select {
				case <-workerCtx.Done():
					return
				case r := <-e.ready:
					r.drain(e)
				}
			}
		})
	}
	e.apply(e.cfg)
	e.mu.Unlock()

	var tick <-chan time.Time
	if e.opts.StatsInterval > 0 {
		t := e.opts.Clock.NewTicker(e.opts.StatsInterval)
		defer t.Stop()
		tick = t.C()
	}
	for {
		select {
		case <-ctx.Done():
			e.mu.Lock()
			for id, r := range e.running {
				r.stop()
				delete(e.running, id)
			}
			e.ctx = nil
			for name, q := range e.queues {
				q.close()
				delete(e.queues, name)
			}
			e.mu.Unlock()
			return nil
		case <-tick:
			e.publishStats(ctx)
		}
	}
}

func (e *Engine) publishStats(ctx context.Context) {
	st := e.Stats()
	if len(st.Rules) == 0 {
		return
	}
	b, err := jsonMarshal(st)
	if err != nil {
		return
	}
	_ = e.opts.Bus.Publish(ctx, bus.Message{Topic: e.opts.StatsTopic, Payload: b, Origin: Origin, Retain: true})
}

// Reload applies cfg live: it is checked first (an invalid config changes
// nothing and its errors are returned), then the rules whose config
// changed are started anew (their window state is lost; messages that
// arrive in between are not seen by the rule), unchanged rules keep
// running with their state, and removed or disabled rules stop. Counters
// are kept by rule id.
func (e *Engine) Reload(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cfg = cfg
	if e.ctx != nil {
		e.apply(cfg)
	}
	return nil
}

// apply makes the running rules those of cfg. e.mu is held.
func (e *Engine) apply(cfg Config) {
	keep := map[string]bool{}
	var old []*ruleRun
	for _, r := range cfg {
		if !r.Enabled {
			continue
		}
		keep[r.ID] = true
		if cur, ok := e.running[r.ID]; ok {
			if reflect.DeepEqual(cur.cfg, r) {
				continue
			}
			// stopped before its successor starts: two senders must never
			// share an http queue (both would send its head)
			cur.stop()
			delete(e.running, r.ID)
		}
		run, err := e.start(r)
		if err != nil {
			e.counter(r.ID).failed.Add(1)
			e.counter(r.ID).setErr(err)
			e.log.Error("rule not started", "rule", r.ID, "error", err)
			delete(e.running, r.ID)
			continue
		}
		e.running[r.ID] = run
	}
	for id, r := range e.running {
		if !keep[id] {
			old = append(old, r)
			delete(e.running, id)
		}
	}
	for _, r := range old {
		r.stop()
	}
	// forget the counters of rules that are gone
	for id := range e.counters {
		if !inConfig(cfg, id) {
			delete(e.counters, id)
		}
	}
}

func inConfig(cfg Config, id string) bool {
	for _, r := range cfg {
		if r.ID == id {
			return true
		}
	}
	return false
}

func (e *Engine) counter(id string) *ruleCounters {
	c, ok := e.counters[id]
	if !ok {
		c = &ruleCounters{}
		e.counters[id] = c
	}
	return c
}

// ruleCounters are a rule's counters, kept across reloads.
type ruleCounters struct {
	matched, passed, failed, noResult, filtered, dropped, loops atomic.Uint64

	mu         sync.Mutex
	lastErr    error // formatted only when read (Stats): a failing rule may fail on every message
	lastLog    time.Time
	suppressed int
	actions    []*actionCounters
}

func (c *ruleCounters) setErr(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

// logLimited logs an evaluation error at most once per 10 s per rule.
func (c *ruleCounters) logLimited(log *slog.Logger, now time.Time, id string, err error) {
	c.mu.Lock()
	c.lastErr = err
	if now.Sub(c.lastLog) < 10*time.Second {
		c.suppressed++
		c.mu.Unlock()
		return
	}
	n := c.suppressed
	c.lastLog, c.suppressed = now, 0
	c.mu.Unlock()
	log.Warn("rule evaluation failed", "rule", id, "error", err, "suppressed", n)
}

func (c *ruleCounters) action(i int) *actionCounters {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.actions) <= i {
		c.actions = append(c.actions, &actionCounters{})
	}
	return c.actions[i]
}

type actionCounters struct {
	success, failed, dropped, retries atomic.Uint64
}

// ruleRun is one running rule: its subscriptions, its queue, its goroutine
// and its actions' goroutines.
type ruleRun struct {
	cfg   Rule
	prog  *program
	ctx   context.Context
	ready chan<- *ruleRun
	mu    sync.Mutex // guards the mailbox and the flags below
	// box is the mailbox, a ring of n messages from head, grown up to
	// boxMax.
	box     []*sharedMsg
	head, n int
	boxMax  int
	// scheduled: on the ready channel or being drained; tickPending: the
	// windows are to be checked at tick; stopped: the rule is gone.
	scheduled, tickPending, stopped bool
	halted                          atomic.Bool  // stopped, read without mu by the draining worker
	inBatch                         atomic.Int64 // messages a worker took and has not started yet
	tick                            time.Time
	busy                            sync.Mutex // held while a worker drains the rule
	c                               *ruleCounters
	acts                            []action
	unsubs                          []func()
	filters                         []string
	cancel                          context.CancelFunc
	wg                              sync.WaitGroup
	origin                          string
}

// start compiles r, subscribes and starts its goroutines. e.mu is held.
func (e *Engine) start(r Rule) (*ruleRun, error) {
	q, err := Parse(r.SQL)
	if err != nil {
		return nil, err
	}
	clock := e.opts.Clock
	run := &ruleRun{
		cfg:    r,
		prog:   compile(q, e.opts.GatewayID, e.opts.MaxGroups, clock.Now),
		boxMax: e.opts.QueueSize,
		ready:  e.ready,
		c:      e.counter(r.ID),
		origin: Origin + "/" + r.ID,
	}
	ctx, cancel := context.WithCancel(e.ctx)
	run.ctx, run.cancel = ctx, cancel
	for i, a := range r.Actions {
		act, err := e.newAction(ctx, r.ID, i, a, run.c.action(i), run)
		if err != nil {
			cancel()
			run.wg.Wait()
			return nil, fmt.Errorf("actions[%d]: %w", i, err)
		}
		run.acts = append(run.acts, act)
	}
	run.filters = subscribeFilters(q)
	for _, f := range run.filters {
		if err := e.attach(f, run); err != nil {
			run.stop()
			return nil, fmt.Errorf("subscribe %q: %w", f, err)
		}
		run.unsubs = append(run.unsubs, func() { e.detach(f, run) })
	}
	if q.Window != nil {
		tick := clock.NewTicker(min(max(q.Window.Hop/20, 10*time.Millisecond), time.Second))
		run.wg.Go(func() {
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case now := <-tick.C():
					run.tickAt(now)
				}
			}
		})
	}
	return run, nil
}

// fanout is one bus subscription shared by the rules that select FROM
// its filter: a message is converted once, and its payload parsed once
// for all of them.
type fanout struct {
	filter    string
	event     string
	gatewayID string
	now       func() time.Time // the engine's clock, for a message without a time
	unsub     func()
	rules     atomic.Pointer[[]*ruleRun] // copy on write, under Engine.mu
}

// attach adds run to the fanout of filter, subscribing on first use.
// e.mu is held.
func (e *Engine) attach(filter string, run *ruleRun) error {
	fo, ok := e.fanouts[filter]
	if !ok {
		fo = &fanout{filter: filter, gatewayID: e.opts.GatewayID, now: e.opts.Clock.Now}
		if strings.HasPrefix(filter, "$events/") {
			fo.event = strings.Replace(strings.TrimPrefix(filter, "$events/"), "_", ".", 1)
		}
		fo.rules.Store(&[]*ruleRun{})
		unsub, err := e.opts.Bus.Subscribe(filter, fo.deliver)
		if err != nil {
			return err
		}
		fo.unsub = unsub
		e.fanouts[filter] = fo
	}
	rs := append(slices.Clone(*fo.rules.Load()), run)
	fo.rules.Store(&rs)
	return nil
}

// detach removes run from the fanout of filter, unsubscribing when no
// rule is left. e.mu is held.
func (e *Engine) detach(filter string, run *ruleRun) {
	fo, ok := e.fanouts[filter]
	if !ok {
		return
	}
	rs := slices.DeleteFunc(slices.Clone(*fo.rules.Load()), func(r *ruleRun) bool { return r == run })
	fo.rules.Store(&rs)
	if len(rs) == 0 {
		fo.unsub()
		delete(e.fanouts, filter)
	}
}

// deliver runs in the publisher's goroutine: it only enqueues.
func (fo *fanout) deliver(m bus.Message) {
	rs := *fo.rules.Load()
	if len(rs) == 0 {
		return
	}
	if m.Time.IsZero() { // the broker stamps its messages; the memory bus does not
		m.Time = fo.now()
	}
	sm := newSharedMsg(m, fo.event, fo.gatewayID)
	sm.hops = hops(m)
	for _, r := range rs {
		r.enqueue(sm, fo.filter)
	}
}

// sharedMsg is a message as the rules see it, its payload parsed at most
// once whatever the number of rules, and its columns built once: every
// rule reads it, none writes it.
type sharedMsg struct {
	m       bus.Message
	event   string
	hops    int
	cols    columns
	once    sync.Once
	decoded any
}

// newSharedMsg wraps m (whose Time is set) for the rules.
func newSharedMsg(m bus.Message, event, gatewayID string) *sharedMsg {
	sm := &sharedMsg{m: m, event: event}
	sm.cols = columns{msg: &sm.m, gatewayID: gatewayID, event: event, shared: sm}
	return sm
}

func (s *sharedMsg) payload() any {
	s.once.Do(func() { s.decoded = decodeOrString(s.m.Payload) })
	return s.decoded
}

func (r *ruleRun) enqueue(sm *sharedMsg, filter string) {
	if sm.m.Origin == r.origin {
		return // the rule's own output
	}
	for _, g := range r.filters { // a message matching two filters is taken once
		if g == filter {
			break
		}
		if bus.Match(g, sm.m.Topic) {
			return
		}
	}
	if sm.hops >= maxHops {
		r.c.loops.Add(1)
		return
	}
	r.put(sm)
}

func hops(m bus.Message) int {
	for _, p := range m.UserProperties {
		if p.Key == HopProperty {
			n, _ := strconv.Atoi(p.Value)
			return n
		}
	}
	return 0
}

// stop removes the subscriptions and stops the goroutines. What is still
// queued for the rule is dropped (and counted).
func (r *ruleRun) stop() {
	for _, u := range r.unsubs {
		u()
	}
	r.unsubs = nil
	r.mu.Lock()
	r.stopped = true
	r.halted.Store(true)
	left := r.n
	r.box, r.head, r.n = nil, 0, 0
	r.mu.Unlock()
	r.busy.Lock() // wait for a worker draining the rule to finish the message in hand
	r.prog = nil  // release the state: no worker touches a stopped rule
	r.busy.Unlock()
	r.cancel()
	r.wg.Wait()
	r.c.dropped.Add(uint64(left))
}

// The rules' goroutines: a rule's messages wait in its own bounded
// mailbox; a rule with mail is put once on the engine's ready channel, and
// a small pool of workers takes ready rules and drains their mailboxes,
// one worker per rule at a time (so a rule's state has one user). Under
// load the workers stay busy instead of waking one goroutine per rule per
// message.

// put adds sm to the mailbox (or counts it dropped) and schedules the rule.
func (r *ruleRun) put(sm *sharedMsg) {
	r.mu.Lock()
	if r.stopped || r.n+int(r.inBatch.Load()) >= r.boxMax { // a batch in hand still counts
		r.mu.Unlock()
		r.c.dropped.Add(1)
		return
	}
	if r.n == len(r.box) { // grow the ring, in order, up to boxMax
		box := make([]*sharedMsg, min(max(16, 2*len(r.box)), r.boxMax))
		k := copy(box, r.box[r.head:])
		copy(box[k:], r.box[:r.head])
		r.box, r.head = box, 0
	}
	r.box[(r.head+r.n)%len(r.box)] = sm
	r.n++
	r.scheduleLocked()
	r.mu.Unlock()
}

// tickAt asks for the windows to be checked at now.
func (r *ruleRun) tickAt(now time.Time) {
	r.mu.Lock()
	if !r.stopped {
		r.tick, r.tickPending = now, true
		r.scheduleLocked()
	}
	r.mu.Unlock()
}

// scheduleLocked puts the rule on the ready channel unless it is there or
// being drained. The channel holds every run at most once, so it never
// blocks. r.mu is held.
func (r *ruleRun) scheduleLocked() {
	if !r.scheduled {
		r.scheduled = true
		r.ready <- r
	}
}

// Progress reports when the engine last did useful work, for the
// supervisor's health check: now while no rule has mail waiting (an idle
// engine is healthy), else the first call that saw the workers' count of
// finished messages and ticks where it is (so the time is as fine as the
// supervisor's polling, and the workers read no clock). It reads the real
// clock, as the supervisor does, not Options.Clock.
func (e *Engine) Progress() time.Time {
	e.mu.Lock()
	waiting := false
	for _, r := range e.running {
		if r.queued() > 0 {
			waiting = true
			break
		}
	}
	e.mu.Unlock()
	now := time.Now()
	e.progressMu.Lock()
	defer e.progressMu.Unlock()
	if n := e.finished.Load(); n != e.lastFinished || !waiting {
		e.lastFinished, e.lastProgress = n, now
	}
	return e.lastProgress
}

// queued is how many messages wait: in the mailbox, or taken by a worker
// in a batch and not started yet.
func (r *ruleRun) queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n + int(r.inBatch.Load())
}

// maxBatch is how many messages a worker takes from one rule at once (one
// lock for all of them) before it lets the other ready rules go first.
const maxBatch = 64

// drain processes the rule's mail: a pending window tick first, then at
// most maxBatch messages taken from the mailbox in one go; it reschedules
// the rule if mail is left.
func (r *ruleRun) drain(e *Engine) {
	r.busy.Lock()
	defer r.busy.Unlock()
	var batch [maxBatch]*sharedMsg
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	tickPending, tick := r.tickPending, r.tick
	r.tickPending = false
	n := min(r.n, maxBatch)
	for i := range n {
		batch[i] = r.box[r.head]
		r.box[r.head] = nil
		r.head = (r.head + 1) % len(r.box)
	}
	r.n -= n
	r.inBatch.Store(int64(n))
	r.mu.Unlock()
	if tickPending {
		r.handleTick(e, tick)
		e.finished.Add(1)
	}
	for i, sm := range batch[:n] {
		if r.halted.Load() { // stopped meanwhile: what is left was queued, not evaluated
			r.c.dropped.Add(uint64(n - i))
			r.inBatch.Store(0)
			break
		}
		r.inBatch.Add(-1)
		r.handle(e, sm)
		e.finished.Add(1) // per message: a batch of slow actions is not a stall
	}
	r.mu.Lock()
	r.scheduled = false
	if !r.stopped && (r.tickPending || r.n > 0) {
		r.scheduleLocked()
	}
	r.mu.Unlock()
}

func (r *ruleRun) handle(e *Engine, sm *sharedMsg) {
	r.c.matched.Add(1)
	outs, res, err := r.prog.processShared(sm)
	switch {
	case err != nil:
		r.c.failed.Add(1)
		r.c.logLimited(e.log, e.opts.Clock.Now(), r.cfg.ID, err)
	case res == resultFiltered:
		r.c.filtered.Add(1)
	case res == resultNoResult:
		r.c.noResult.Add(1)
	default:
		r.c.passed.Add(1)
	}
	r.emit(r.ctx, outs, sm.hops+1)
}

func (r *ruleRun) handleTick(e *Engine, now time.Time) {
	errs := r.prog.windowErrs
	outs := r.prog.tick(now)
	if n := r.prog.windowErrs - errs; n > 0 {
		r.c.failed.Add(n)
		r.c.logLimited(e.log, now, r.cfg.ID, r.prog.lastWindowErr)
	}
	r.emit(r.ctx, outs, 1)
}

func (r *ruleRun) emit(ctx context.Context, outs []output, hop int) {
	for _, o := range outs {
		for _, a := range r.acts {
			a.do(ctx, o, hop)
		}
	}
}

// Stats are the engine's counters, per rule and per action.
type Stats struct {
	Rules   []RuleStats   `json:"rules"`
	Actions []ActionStats `json:"actions"`
}

// RuleStats are one rule's counters since it was first configured.
type RuleStats struct {
	ID      string `json:"id"`
	Enabled bool   `json:"enabled"`
	Running bool   `json:"running"`
	// Matched counts messages taken from the rule's queue; Passed those
	// that produced output (or entered a window); Filtered those WHERE
	// refused; NoResult those FOREACH/INCASE made nothing of; Failed those
	// whose evaluation failed (and window outputs that failed).
	Matched  uint64 `json:"matched"`
	Passed   uint64 `json:"passed"`
	Filtered uint64 `json:"filtered"`
	NoResult uint64 `json:"no_result"`
	Failed   uint64 `json:"failed"`
	// Dropped counts messages lost because the rule's queue was full;
	// Loops those refused because they went through too many rules.
	Dropped uint64 `json:"dropped"`
	Loops   uint64 `json:"loops"`
	// Queued is how many messages wait in the rule's queue.
	Queued int `json:"queued"`
	// LastError is the last evaluation error, empty if none.
	LastError string `json:"last_error,omitempty"`
}

// ActionStats are one action's counters.
type ActionStats struct {
	Rule  string `json:"rule"`
	Index int    `json:"index"`
	Kind  string `json:"kind"`
	// Success counts outputs delivered; Failed outputs that could not be
	// (publish refused, hook refused with a 4xx); Dropped outputs lost
	// because the http queue was full; Retries failed http attempts that
	// will be retried.
	Success uint64 `json:"success"`
	Failed  uint64 `json:"failed"`
	Dropped uint64 `json:"dropped"`
	Retries uint64 `json:"retries"`
	// Queued is how many requests wait in the http queue.
	Queued int `json:"queued"`
}

// Stats returns the counters of every configured rule, in config order.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	var st Stats
	for _, r := range e.cfg {
		c := e.counter(r.ID)
		run := e.running[r.ID]
		rs := RuleStats{
			ID: r.ID, Enabled: r.Enabled, Running: run != nil,
			Matched: c.matched.Load(), Passed: c.passed.Load(), Filtered: c.filtered.Load(),
			NoResult: c.noResult.Load(), Failed: c.failed.Load(), Dropped: c.dropped.Load(), Loops: c.loops.Load(),
		}
		if run != nil {
			rs.Queued = run.queued()
		}
		c.mu.Lock()
		if c.lastErr != nil {
			rs.LastError = c.lastErr.Error()
		}
		c.mu.Unlock()
		st.Rules = append(st.Rules, rs)
		for i, a := range r.Actions {
			ac := c.action(i)
			as := ActionStats{Rule: r.ID, Index: i, Kind: actionKind(a),
				Success: ac.success.Load(), Failed: ac.failed.Load(), Dropped: ac.dropped.Load(), Retries: ac.retries.Load()}
			if a.HTTP != nil {
				if q, ok := e.queues[queueName(r.ID, i)]; ok {
					as.Queued = q.q.Len()
				}
			}
			st.Actions = append(st.Actions, as)
		}
	}
	return st
}

func actionKind(a Action) string {
	switch {
	case a.Republish != nil:
		return "republish"
	case a.Uplink != nil:
		return "uplink"
	case a.HTTP != nil:
		return "http"
	}
	return "log"
}

// Test runs sql on one sample message (topic, payload, at the time now)
// and returns its outputs, as the page's test panel shows them. A windowed
// rule's window is closed right after the message, so its output is that
// of a window holding only this message. Nothing is published.
func Test(sql, topic string, payload []byte, gatewayID string) ([]Row, error) {
	q, err := Parse(sql)
	if err != nil {
		return nil, err
	}
	if !bus.ValidFilter(topic) || strings.ContainsAny(topic, "+#") {
		return nil, fmt.Errorf("rules: test: %q is not a topic name", topic)
	}
	now := time.Now()
	p := compile(q, gatewayID, 0, func() time.Time { return now })
	matched := false
	event := ""
	for _, f := range q.From {
		if bus.Match(f, topic) {
			matched = true
			if strings.HasPrefix(f, "$events/") {
				event = strings.Replace(strings.TrimPrefix(f, "$events/"), "_", ".", 1)
			}
		}
	}
	if !matched {
		return nil, fmt.Errorf("rules: test: topic %q matches none of FROM %s", topic, strings.Join(q.From, ", "))
	}
	outs, _, err := p.process(bus.Message{Topic: topic, Payload: payload, QoS: 1, Time: now, Origin: "test"}, event)
	if err != nil {
		return nil, err
	}
	if q.Window != nil {
		outs = append(outs, p.tick(now.Add(q.Window.Size))...)
		if p.windowErrs > 0 {
			return nil, p.lastWindowErr
		}
	}
	rows := make([]Row, len(outs))
	for i, o := range outs {
		rows[i] = o.row
	}
	return rows, nil
}

// NewBench compiles sql for a benchmark and returns a function that runs
// one message through it (at the current time, without a bus); the
// windows are never closed, so their state stays for measuring.
func NewBench(sql string, maxGroups int) (func(topic string, payload []byte) error, error) {
	q, err := Parse(sql)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	p := compile(q, "bench", maxGroups, func() time.Time { return now })
	return func(topic string, payload []byte) error {
		_, _, err := p.process(bus.Message{Topic: topic, Payload: payload, Time: now}, "")
		return err
	}, nil
}
