package board

import (
	"context"
	"log/slog"
	"runtime"
	"sync/atomic"
	"time"
)

// CPU modes accepted in the board section's cpus field.
const (
	// CPUsAdaptive schedules Go code on one core while the gateway is
	// lightly loaded and on all cores above that.
	CPUsAdaptive = "adaptive"
	// CPUsAll leaves the Go runtime's default: every core, always.
	CPUsAll = "all"
)

// Thresholds of the CPUScaler, in cores used by the whole process.
const (
	scaleInterval  = time.Second
	scaleUpAbove   = 0.50 // one interval above it: all cores
	scaleDownBelow = 0.25 // scaleDownAfter intervals in a row below it: one core
	scaleDownAfter = 10
)

// CPUScaler sets GOMAXPROCS from the process's own CPU use: one core while
// the gateway uses less than a quarter of a core for 10 s, all cores as
// soon as it uses more than half of one in a second. It starts on one core
// (a gateway that just started is waiting for its devices); a busy start
// has all cores after the first second.
//
// Why: at light and moderate load (a site's sensors, 10,000 MQTT messages/s)
// the gateway is idle between bursts of work, and with two or more Ps the Go
// scheduler hands each burst from thread to thread (a netpoller wake-up on
// one, the subscriber's writer on another), paying a futex wake-up and a
// context switch per hand-off. On the reference 2-core machine that was a
// quarter of the broker's CPU at 10,000 msg/s (docs/bench.md). On one P the
// same work runs on one thread. Under heavy load all cores are back within a
// second, so saturated throughput is what the runtime's default gives.
// On a fanless board, less CPU is less heat and less power.
//
// The GOMAXPROCS environment variable, when set, wins: the scaler does
// nothing.
type CPUScaler struct {
	log     *slog.Logger
	cpuTime func() (time.Duration, bool) // the process's user+system CPU time
	setOne  func()                       // schedule on one core
	setAll  func()                       // the runtime's default
	all     int                          // cores in the runtime's default
	every   time.Duration                // sampling interval (scaleInterval)

	procs   atomic.Int32
	changes atomic.Int64
	// Scaling state, touched only by Run.
	lowFor int
}

// CPUStats is what the scaler reports.
type CPUStats struct {
	// Procs is the number of cores Go code is scheduled on now.
	Procs int
	// Changes counts the switches between one core and all.
	Changes int64
}

// NewCPUScaler returns a scaler for mode (CPUsAdaptive or CPUsAll), or nil
// when there is nothing to scale: mode all, a single core, or GOMAXPROCS set
// in the environment (env is os.Getenv's signature).
func NewCPUScaler(mode string, env func(string) string, log *slog.Logger) *CPUScaler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	all := runtime.GOMAXPROCS(0)
	switch {
	case mode != CPUsAdaptive:
		return nil
	case env("GOMAXPROCS") != "":
		log.Info("adaptive CPU use off: GOMAXPROCS is set in the environment", "gomaxprocs", all)
		return nil
	case all < 2:
		return nil
	}
	s := &CPUScaler{
		log:     log,
		cpuTime: processCPUTime,
		setOne:  func() { runtime.GOMAXPROCS(1) },
		// SetDefaultGOMAXPROCS, not GOMAXPROCS(all): it keeps the runtime's
		// own updates of the default (a changed CPU quota) working.
		setAll: func() { runtime.SetDefaultGOMAXPROCS() },
		all:    all,
		every:  scaleInterval,
	}
	s.procs.Store(int32(all))
	return s
}

// Stats returns the current number of cores and the switches so far. A nil
// scaler reports the runtime's setting.
func (s *CPUScaler) Stats() CPUStats {
	if s == nil {
		return CPUStats{Procs: runtime.GOMAXPROCS(0)}
	}
	return CPUStats{Procs: int(s.procs.Load()), Changes: s.changes.Load()}
}

// Run scales until ctx is done, then restores the runtime's default. A nil
// scaler returns at once.
func (s *CPUScaler) Run(ctx context.Context) error {
	if s == nil {
		return nil
	}
	defer func() {
		if s.procs.Load() != int32(s.all) {
			s.setAll()
			s.procs.Store(int32(s.all))
		}
	}()
	last, ok := s.cpuTime()
	if !ok {
		s.log.Warn("adaptive CPU use off: the process's CPU time cannot be read")
		return nil
	}
	lastAt := time.Now()
	s.setOne()
	s.procs.Store(1)
	s.log.Debug("scheduling on one core until the gateway is busy", "cores", s.all)
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			used, ok := s.cpuTime()
			if !ok {
				continue
			}
			s.step(float64(used-last) / float64(now.Sub(lastAt)))
			last, lastAt = used, now
		}
	}
}

// step takes one sample: the cores used (CPU seconds per second) since the
// previous one.
func (s *CPUScaler) step(cores float64) {
	one := s.procs.Load() == 1
	switch {
	case one && cores > scaleUpAbove:
		s.setAll()
		s.procs.Store(int32(s.all))
		s.changes.Add(1)
		s.lowFor = 0
		s.log.Debug("CPU use high: scheduling on all cores", "cores_used", cores, "procs", s.all)
	case !one && cores < scaleDownBelow:
		s.lowFor++
		if s.lowFor >= scaleDownAfter {
			s.setOne()
			s.procs.Store(1)
			s.changes.Add(1)
			s.lowFor = 0
			s.log.Debug("CPU use low: scheduling on one core", "cores_used", cores)
		}
	default:
		s.lowFor = 0
	}
}
