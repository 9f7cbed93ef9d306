// Package serial reads line-oriented ASCII sensors on serial ports (GPS
// receivers speaking NMEA 0183, and any device whose lines a regular
// expression can take apart) and publishes their readings on the bus.
//
// Each sensor publishes one message per accepted line on {prefix}/{sensor}:
//
//	{"v": {"temp": 21.5, "ok": true}, "ts": 1718000000000, "q": "good"}
//
// with "ts_sync": false added while the wall clock is not synchronised, and
// a retained {prefix}/{sensor}/status message
//
//	{"state": "online"|"offline", "device": "/dev/ttyUSB0", "err": "...", "ts": ...} (as Modbus devices)
//
// A port that cannot be opened or disappears (an unplugged USB adapter) is
// retried with a jittered exponential backoff, and at once when its path
// appears again; its path, typically a /dev/serial/by-id link, is resolved
// again on every attempt. A lost port (an I/O error, a hang-up, its device
// node gone) publishes the status offline with the reason "serial port
// gone"; reads wait for data or their timeout and never spin. Over-long
// lines, binary garbage, bad checksums and unparsable lines are dropped,
// counted by cause (Stats) and logged rate-limited; they never stop the
// sensor.
//
// go.bug.st/serial is fieldgate's one serial library: this package and the
// RTU transport of southbound/modbus use it, nothing else.
package serial

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldgate/fieldgate/bus"
)

// Service runs the configured sensors.
type Service struct {
	sensors []*sensor
	running atomic.Bool
}

// Option changes how New builds the service.
type Option func(*options)

type options struct {
	now    func() time.Time
	synced func() bool
}

// WithClock sets the clock that stamps readings (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// WithClockSynced sets the function that says whether the wall clock is
// synchronised (NTP, GPS, RTC). By default it is considered synchronised
// once it reads 2024-01-01 or later. While it is not, readings and status
// messages carry "ts_sync": false.
func WithClockSynced(synced func() bool) Option {
	return func(o *options) { o.synced = synced }
}

// clockEpoch is the default test for a synchronised clock: a board without
// an RTC starts in 1970 (or at its image's build date) until NTP answers.
var clockEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// New validates cfg and builds the service; nothing is opened before Run.
// log may be nil (logs are discarded).
func New(cfg Config, b bus.Bus, log *slog.Logger, opts ...Option) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("serial: config: %w", err)
	}
	if b == nil {
		return nil, errors.New("serial: nil bus")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.synced == nil {
		now := o.now
		o.synced = func() bool { return !now().Before(clockEpoch) }
	}
	s := &Service{}
	for i, sc := range cfg.Sensors {
		sn, err := newSensor(cfg, sc, b, log, o)
		if err != nil {
			return nil, fmt.Errorf("serial: sensors[%d] (%s): %w", i, sc.Name, err)
		}
		s.sensors = append(s.sensors, sn)
	}
	return s, nil
}

// Run reads every sensor until ctx is done, then publishes each one's
// offline status and returns nil. It may be called once.
func (s *Service) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("serial: Run called twice")
	}
	var wg sync.WaitGroup
	for _, sn := range s.sensors {
		wg.Go(func() { sn.run(ctx) })
	}
	wg.Wait()
	return nil
}

// KeepStatus tells the service that the sensors named go on in the service
// that replaces it (a config change): when it stops, their retained status
// is left as it is instead of offline "stopped". Call it before stopping.
func (s *Service) KeepStatus(names []string) {
	for _, sn := range s.sensors {
		sn.keep.Store(slices.Contains(names, sn.cfg.Name))
	}
}

// Stats returns a snapshot of every sensor's counters, in config order.
func (s *Service) Stats() []SensorStats {
	out := make([]SensorStats, 0, len(s.sensors))
	for _, sn := range s.sensors {
		out = append(out, sn.snapshot())
	}
	return out
}

// Ports lists the serial ports present on the system (ttyS, ttyUSB,
// ttyACM, ttyAMA ...), with USB vendor/product ids and serial numbers when
// sysfs knows them, their /dev/serial/by-id links, and the sensor that has
// each open.
func (s *Service) Ports() ([]PortInfo, error) {
	inUse := make(map[string]string)
	for _, sn := range s.sensors {
		st := sn.snapshot()
		if st.Online && st.Device != "" {
			inUse[st.Device] = st.Name
		}
	}
	return listPorts(byIDDir, inUse)
}
