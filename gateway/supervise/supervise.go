// Package supervise runs the gateway's long-lived parts: it starts them in
// order, restarts a part whose Run fails, panics or stops making progress
// (with exponential backoff and jitter), reports each part's health, and
// stops them in the reverse order within a time budget, abandoning a part
// that does not stop.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"
)

// Part is one long-lived part of the gateway.
type Part struct {
	// Name names the part in logs, metrics and health reports.
	Name string
	// Run does the part's work until ctx is done. It returns nil after a
	// clean stop; an error (or a panic) while ctx is live makes the
	// supervisor restart it. A Run that returns nil before ctx is done has
	// nothing (more) to do and is not restarted.
	Run func(ctx context.Context) error
	// Progress, if set, returns when the part last did useful work.
	Progress func() time.Time
	// Bound is how old Progress may get before the part counts as stuck
	// (measured from the later of Progress and the start of the current
	// run). Zero disables the check.
	Bound time.Duration
}

// State is where a part is in its life.
type State string

// The states of a part.
const (
	StateRunning   State = "running"   // Run is running
	StateBackoff   State = "backoff"   // waiting to be restarted
	StateDone      State = "done"      // Run returned nil: nothing to do
	StateStopped   State = "stopped"   // stopped by Stop or StopAll
	StateStuck     State = "stuck"     // cancelled for lack of progress, Run has not returned yet
	StateAbandoned State = "abandoned" // did not stop within its budget
)

// Options tune a Supervisor. Zero values pick the defaults.
type Options struct {
	// Logger receives the supervisor's logs (default: discarded).
	Logger *slog.Logger
	// MinBackoff is the first restart delay (default 1 s); it doubles on
	// every restart up to MaxBackoff (default 1 min).
	MinBackoff, MaxBackoff time.Duration
	// ResetAfter is how long a part must run without failing (and, if it
	// reports progress, without being stuck) for its backoff and its
	// failure count to be reset (default 1 min).
	ResetAfter time.Duration
	// MaxFailures is how many consecutive failed runs (errors, panics,
	// stuck restarts) a part may have before Healthy reports it (default 3).
	MaxFailures int
	// CheckEvery is how often Progress is checked (default 1 s).
	CheckEvery time.Duration
	// StuckStop is how long a stuck part is given to return after its
	// context is cancelled before it counts as unhealthy (default 10 s).
	StuckStop time.Duration
	// Jitter returns a number in [0, 1) (default math/rand/v2.Float64). A
	// restart waits between half and all of the current backoff.
	Jitter func() float64
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(time.Minute, o.MinBackoff)
	}
	if o.ResetAfter <= 0 {
		o.ResetAfter = time.Minute
	}
	if o.MaxFailures <= 0 {
		o.MaxFailures = 3
	}
	if o.CheckEvery <= 0 {
		o.CheckEvery = time.Second
	}
	if o.StuckStop <= 0 {
		o.StuckStop = 10 * time.Second
	}
	if o.Jitter == nil {
		o.Jitter = rand.Float64
	}
	return o
}

// PartStats are one part's state and counters.
type PartStats struct {
	Name  string `json:"name"`
	State State  `json:"state"`
	// Healthy is false when the part is failing past MaxFailures or is
	// stuck and does not stop.
	Healthy bool `json:"healthy"`
	// Restarts counts restarts after an error, a panic or being stuck.
	Restarts int64 `json:"restarts"`
	// Panics counts the runs that ended in a panic.
	Panics int64 `json:"panics"`
	// Failures counts consecutive failed runs (reset by a good run).
	Failures int `json:"failures"`
	// LastProgress is the part's last reported progress (zero if it
	// reports none).
	LastProgress time.Time `json:"last_progress,omitzero"`
	// Bound is the part's progress bound (nanoseconds in JSON; 0: none).
	Bound time.Duration `json:"bound,omitempty"`
	// LastError is the last run's error, if any.
	LastError string `json:"last_error,omitempty"`
}

// Supervisor owns the parts: see the package documentation.
type Supervisor struct {
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	parts []*runner // in start order
}

// runner is one started part.
type runner struct {
	part   Part
	cancel context.CancelFunc
	done   chan struct{} // closed when the part's loop has ended

	// guarded by Supervisor.mu
	state     State
	restarts  int64
	panics    int64
	failures  int
	lastErr   string
	stuckOver bool // stuck and did not return within StuckStop
}

// New returns a Supervisor with no parts.
func New(opts Options) *Supervisor {
	opts = opts.withDefaults()
	return &Supervisor{opts: opts, log: opts.Logger}
}

// Start starts p. A part of the same name must not be running.
func (s *Supervisor) Start(p Part) error {
	if p.Name == "" || p.Run == nil {
		return errors.New("supervise: a part needs a name and a Run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{part: p, cancel: cancel, done: make(chan struct{}), state: StateRunning}
	s.mu.Lock()
	for _, o := range s.parts {
		if o.part.Name == p.Name {
			s.mu.Unlock()
			cancel()
			return fmt.Errorf("supervise: part %s already runs", p.Name)
		}
	}
	s.parts = append(s.parts, r)
	s.mu.Unlock()
	go s.loop(ctx, r)
	return nil
}

// loop runs r's part until ctx is done, restarting it when it fails.
func (s *Supervisor) loop(ctx context.Context, r *runner) {
	defer close(r.done)
	backoff := s.opts.MinBackoff
	for {
		res := s.runOnce(ctx, r, &backoff)
		err := res.err
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		if err == nil && !res.stuck {
			r.state = StateDone
			s.mu.Unlock()
			s.log.Debug("part finished: nothing to do", "part", r.part.Name)
			return
		}
		r.restarts++
		r.failures++
		if res.panicked {
			r.panics++
		}
		if err != nil {
			r.lastErr = err.Error()
		}
		failures := r.failures
		r.state = StateBackoff
		s.mu.Unlock()

		delay := backoff/2 + time.Duration(s.opts.Jitter()*float64(backoff/2))
		backoff = min(2*backoff, s.opts.MaxBackoff)
		lvl := slog.LevelWarn
		if failures > s.opts.MaxFailures {
			lvl = slog.LevelError
		}
		s.log.Log(ctx, lvl, "part restarts", "part", r.part.Name, "in", delay.Round(time.Millisecond), "failures", failures, "error", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// runOnce runs the part once and watches its progress. It returns how the
// run ended (a panic becomes an error). A run that stays healthy for
// ResetAfter resets *backoff and the failure count.
func (s *Supervisor) runOnce(ctx context.Context, r *runner, backoff *time.Duration) result {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := time.Now()
	lastCheck := started // when progress was last checked
	s.mu.Lock()
	r.state = StateRunning
	r.stuckOver = false
	s.mu.Unlock()

	res := make(chan result, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				s.log.Error("part panicked", "part", r.part.Name, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				res <- result{err: fmt.Errorf("panic: %v", v), panicked: true}
			}
		}()
		res <- result{err: r.part.Run(runCtx)}
	}()

	var check <-chan time.Time
	if r.part.Progress != nil && r.part.Bound > 0 {
		t := time.NewTicker(s.opts.CheckEvery)
		defer t.Stop()
		check = t.C
	}
	reset := time.NewTimer(s.opts.ResetAfter)
	defer reset.Stop()
	for {
		select {
		case x := <-res:
			return x
		case <-ctx.Done():
			cancel()
			return <-res
		case <-reset.C:
			if r.part.Progress == nil || r.part.Bound <= 0 || time.Since(latest(r.part.Progress(), started)) <= r.part.Bound {
				*backoff = s.opts.MinBackoff
				s.mu.Lock()
				r.failures = 0
				s.mu.Unlock()
			} else {
				reset.Reset(s.opts.CheckEvery)
			}
		case <-check:
			// A check much later than CheckEvery means the whole process
			// was paused (SIGSTOP, a frozen VM): the part could not progress
			// meanwhile, so its bound counts again from now.
			if time.Since(lastCheck) > s.opts.CheckEvery+r.part.Bound {
				started = time.Now()
			}
			lastCheck = time.Now()
			age := time.Since(latest(r.part.Progress(), started))
			if age <= r.part.Bound {
				continue
			}
			s.log.Warn("part stuck: no progress within its bound; restarting it", "part", r.part.Name, "age", age.Round(time.Millisecond), "bound", r.part.Bound)
			s.mu.Lock()
			r.state = StateStuck
			r.lastErr = fmt.Sprintf("stuck: no progress for %s (bound %s)", age.Round(time.Second), r.part.Bound)
			s.mu.Unlock()
			cancel()
			return s.awaitStuck(ctx, r, res)
		}
	}
}

// awaitStuck waits for a cancelled stuck part's Run to return. Past
// StuckStop the part is reported unhealthy, and no second copy is started
// while the first still runs.
func (s *Supervisor) awaitStuck(ctx context.Context, r *runner, res <-chan result) result {
	t := time.NewTimer(s.opts.StuckStop)
	defer t.Stop()
	for {
		select {
		case x := <-res:
			return result{stuck: true, panicked: x.panicked}
		case <-ctx.Done():
			// Stop or StopAll waits for done, within its budget.
			x := <-res
			return result{stuck: true, panicked: x.panicked}
		case <-t.C:
			s.log.Error("stuck part does not stop", "part", r.part.Name, "waited", s.opts.StuckStop)
			s.mu.Lock()
			r.stuckOver = true
			s.mu.Unlock()
		}
	}
}

// result is how one run ended.
type result struct {
	err      error
	stuck    bool // cancelled for lack of progress
	panicked bool
}

// latest returns the later of a and b.
func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Stop stops the named parts, in the reverse of their start order, sharing
// budget between them; a part that does not stop in its share is
// abandoned. Unknown names are ignored. The error names the abandoned
// parts.
func (s *Supervisor) Stop(budget time.Duration, names ...string) error {
	s.mu.Lock()
	var rs []*runner
	keep := s.parts[:0:0]
	for _, r := range s.parts {
		if slices.Contains(names, r.part.Name) {
			rs = append(rs, r)
		} else {
			keep = append(keep, r)
		}
	}
	s.parts = keep
	s.mu.Unlock()
	return s.stop(budget, rs)
}

// StopAll stops every part in the reverse of the start order within
// budget (see Stop).
func (s *Supervisor) StopAll(budget time.Duration) error {
	s.mu.Lock()
	rs := s.parts
	s.parts = nil
	s.mu.Unlock()
	return s.stop(budget, rs)
}

// stop stops rs (in start order) last first.
func (s *Supervisor) stop(budget time.Duration, rs []*runner) error {
	deadline := time.Now().Add(budget)
	var abandoned []string
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i]
		share := time.Until(deadline) / time.Duration(i+1)
		r.cancel()
		t := time.NewTimer(max(share, 0))
		select {
		case <-r.done:
			s.mu.Lock()
			r.state = StateStopped
			s.mu.Unlock()
		case <-t.C:
			s.log.Error("part did not stop in time; abandoned", "part", r.part.Name, "waited", share.Round(time.Millisecond))
			s.mu.Lock()
			r.state = StateAbandoned
			s.mu.Unlock()
			abandoned = append(abandoned, r.part.Name)
		}
		t.Stop()
	}
	if len(abandoned) > 0 {
		return fmt.Errorf("supervise: parts did not stop within %s: %s", budget, strings.Join(abandoned, ", "))
	}
	return nil
}

// Healthy returns nil while every part is healthy, else an error naming
// the parts that are not: failing past MaxFailures (crash-looping, or
// still stuck after restarts), or stuck and not stopping.
func (s *Supervisor) Healthy() error {
	var bad []string
	for _, st := range s.Stats() {
		if !st.Healthy {
			bad = append(bad, fmt.Sprintf("%s (%s after %d failures: %s)", st.Name, st.State, st.Failures, st.LastError))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("unhealthy parts: %s", strings.Join(bad, "; "))
	}
	return nil
}

// Stats returns every running part's state and counters, in start order.
func (s *Supervisor) Stats() []PartStats {
	s.mu.Lock()
	rs := slices.Clone(s.parts)
	out := make([]PartStats, len(rs))
	for i, r := range rs {
		out[i] = PartStats{
			Name:      r.part.Name,
			State:     r.state,
			Healthy:   r.failures <= s.opts.MaxFailures && !r.stuckOver,
			Restarts:  r.restarts,
			Panics:    r.panics,
			Failures:  r.failures,
			LastError: r.lastErr,
			Bound:     r.part.Bound,
		}
	}
	s.mu.Unlock()
	// Progress is called outside the lock: it is the part's code.
	for i, r := range rs {
		if r.part.Progress != nil {
			out[i].LastProgress = r.part.Progress()
		}
	}
	return out
}
