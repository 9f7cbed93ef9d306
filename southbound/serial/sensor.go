package serial

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	goserial "go.bug.st/serial"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/devnode"
	"github.com/fieldgate/fieldgate/internal/ratelog"
)

// Causes of dropped lines, the keys of SensorStats.Dropped.
const (
	// DropOverlong: a line longer than max_line.
	DropOverlong = "overlong"
	// DropGarbage: binary bytes (control characters, invalid UTF-8).
	DropGarbage = "garbage"
	// DropChecksum: an NMEA sentence with a missing or wrong checksum.
	DropChecksum = "checksum"
	// DropParse: a line the parser could not decode (no regex match, a
	// field of the wrong type, a malformed NMEA field).
	DropParse = "parse"
	// DropPublish: a reading the bus refused.
	DropPublish = "publish"
)

// Status values of the retained {prefix}/{sensor}/status message.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
)

// Origin is the bus Message.Origin of everything this package publishes
// (the broker requires gateway parts' origins to start with $, which no
// MQTT client id may).
const Origin = "$southbound"

// readBufferSize is how much one read from the port may return.
const readBufferSize = 4096

// statusTimeout bounds the last status publish at shutdown.
const statusTimeout = time.Second

// SensorStats is a snapshot of one sensor's counters and state.
type SensorStats struct {
	// Name and Port are the sensor's configured name and port.
	Name string `json:"name"`
	Port string `json:"port"`
	// Device is the device Port resolved to when it was last opened.
	Device string `json:"device,omitempty"`
	// Online is true while the port is open.
	Online bool `json:"online"`
	// Lines counts the non-empty lines received (over-long ones included);
	// Readings those published.
	Lines    uint64 `json:"lines"`
	Readings uint64 `json:"readings"`
	// Ignored counts well-formed lines not selected for publishing (NMEA
	// sentence types not in the sensor's filter).
	Ignored uint64 `json:"ignored"`
	// Dropped counts lost lines by cause (DropOverlong, DropGarbage, ...).
	Dropped map[string]uint64 `json:"dropped"`
	// Requests counts the poll requests written.
	Requests uint64 `json:"requests"`
	// Connects counts successful opens, OpenErrors failed attempts and
	// Disconnects lost ports.
	Connects    uint64 `json:"connects"`
	OpenErrors  uint64 `json:"open_errors"`
	Disconnects uint64 `json:"disconnects"`
	// LastError is the last open, read, write, parse or publish error, and
	// LastErrorAt when it happened.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// LastReading is when the last reading was published.
	LastReading time.Time `json:"last_reading,omitzero"`
}

// parser decodes one line (without terminator) into the fields of a
// reading. errIgnored and errChecksum classify what it refuses.
type parser interface {
	parse(line string) (map[string]any, error)
}

// sensor reads one port, parses its lines and publishes the readings.
type sensor struct {
	keep         atomic.Bool // leave the status alone on stop (Service.KeepStatus)
	cfg          Sensor      // with defaults applied
	topic        string
	statusTopic  string
	qos          byte
	parser       parser
	term         []byte
	request      []byte
	mode         *goserial.Mode
	reconnectMin time.Duration
	reconnectMax time.Duration
	bus          bus.Bus
	log          *slog.Logger
	now          func() time.Time
	synced       func() bool
	dropLog      *logLimiter

	mu    sync.Mutex
	stats SensorStats
	// statusSent is the last status published ("" before the first),
	// with statusErr its error text.
	statusSent, statusErr string
}

// newSensor builds a sensor from its validated config.
func newSensor(c Config, sc Sensor, b bus.Bus, log *slog.Logger, o options) (*sensor, error) {
	sc = sc.withDefaults()
	s := &sensor{
		cfg:          sc,
		topic:        c.Prefix + "/" + sc.Name,
		statusTopic:  c.Prefix + "/" + sc.Name + "/status",
		qos:          byte(c.QoS),
		mode:         mode(sc),
		reconnectMin: c.ReconnectMin,
		reconnectMax: c.ReconnectMax,
		bus:          b,
		log:          log.With("sensor", sc.Name, "port", sc.Port),
		now:          o.now,
		synced:       o.synced,
		dropLog:      newLogLimiter(o.now),
		stats:        SensorStats{Name: sc.Name, Port: sc.Port, Dropped: make(map[string]uint64)},
	}
	term, err := unescape(sc.Terminator)
	if err != nil {
		return nil, fmt.Errorf("terminator: %w", err)
	}
	s.term = []byte(term)
	if sc.Request != "" {
		req, err := unescape(sc.Request)
		if err != nil {
			return nil, fmt.Errorf("request: %w", err)
		}
		s.request = []byte(req)
	}
	switch sc.Parser {
	case parserNMEA:
		sentences := sc.Sentences
		if len(sentences) == 0 {
			sentences = nmeaSentences
		}
		s.parser = nmeaParser{sentences: sentences}
	case parserRegex:
		p, err := newRegexParser(sc.Regex, sc.Fields)
		if err != nil {
			return nil, err
		}
		s.parser = p
	default:
		return nil, fmt.Errorf("unknown parser %q", sc.Parser)
	}
	return s, nil
}

// run opens the port, reads it until it fails, and opens it again after a
// backoff, until ctx is done.
func (s *sensor) run(ctx context.Context) {
	bo := devnode.Backoff{Min: s.reconnectMin, Max: s.reconnectMax}
	for {
		healthy, err := s.connect(ctx)
		if ctx.Err() != nil {
			s.stopped(ctx)
			return
		}
		if healthy {
			bo.Reset()
		}
		s.setOffline(ctx, err)
		if !waitRetry(ctx, bo.Wait(), s.cfg.Port) {
			s.stopped(ctx)
			return
		}
	}
}

// connect opens the port and reads it until it fails or ctx is done. It
// reports whether the connection was healthy (it produced a reading or
// lasted longer than the longest backoff), which resets the backoff.
//
// One goroutine does everything with the port (read, write the request,
// close): go.bug.st/serial does not guard a Read or Write running while
// another goroutine closes the port (its file descriptor may be reused
// meanwhile), so reads time out every readTick to look at ctx instead.
func (s *sensor) connect(ctx context.Context) (healthy bool, err error) {
	p, dev, err := openPort(s.cfg.Port, s.mode)
	if err != nil {
		s.mu.Lock()
		s.stats.OpenErrors++
		s.mu.Unlock()
		return false, err
	}
	start := time.Now()
	readings := s.snapshot().Readings
	s.setOnline(ctx, dev)

	err = s.serve(ctx, p, dev) // never nil: the port failed or ctx ended
	if cerr := p.Close(); cerr != nil {
		s.log.Debug("serial: close", "device", dev, "err", cerr)
	}
	healthy = s.snapshot().Readings > readings || time.Since(start) >= s.reconnectMax
	return healthy, err
}

// readTick bounds how long a read waits, hence how late the sensor sees
// that ctx is done.
const readTick = 200 * time.Millisecond

// emptyReads is how many reads in a row may return nothing long before
// their timeout (the (0, nil) of a hung-up tty that the library did not
// report) before the port counts as gone.
const emptyReads = 3

// serve feeds what the port delivers to the line splitter, and writes the
// request when one is due, until a read or write fails (the port was
// unplugged) or ctx is done. Every failure of the port is a line error
// (errPortGone). Reads never spin: each waits up to its timeout, and reads
// that keep returning nothing early, or a device node that is no longer
// there, end the connection.
func (s *sensor) serve(ctx context.Context, p goserial.Port, dev string) error {
	split := newLineSplitter(s.term, s.cfg.MaxLine)
	buf := make([]byte, readBufferSize)
	onLine := func(b []byte) { s.handleLine(ctx, b) }
	onOverlong := func() {
		s.mu.Lock()
		s.stats.Lines++
		s.mu.Unlock()
		s.drop(DropOverlong, fmt.Errorf("line longer than %d bytes", s.cfg.MaxLine), nil)
	}
	var nextRequest time.Time // zero: send one right away
	empty := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		wait := readTick
		if s.request != nil {
			now := time.Now()
			if !now.Before(nextRequest) {
				if err := writeAll(p, s.request); err != nil {
					return fmt.Errorf("%w: write request to %s: %w", errPortGone, dev, err)
				}
				s.mu.Lock()
				s.stats.Requests++
				s.mu.Unlock()
				// Keep the cadence, but never try to catch up on missed
				// requests.
				nextRequest = nextRequest.Add(s.cfg.RequestInterval)
				if nextRequest.Before(now) {
					nextRequest = now.Add(s.cfg.RequestInterval)
				}
			}
			wait = min(wait, time.Until(nextRequest))
		}
		wait = max(wait, time.Millisecond)
		if err := p.SetReadTimeout(wait); err != nil {
			return fmt.Errorf("%w: set read timeout on %s: %w", errPortGone, dev, err)
		}
		start := time.Now()
		n, err := p.Read(buf)
		if n > 0 {
			empty = 0
			split.feed(buf[:n], onLine, onOverlong)
		}
		if err != nil {
			return fmt.Errorf("%w: read %s: %w", errPortGone, dev, err)
		}
		if n > 0 {
			continue
		}
		// Nothing: the read timed out, or the tty hung up without the
		// library saying so (it then returns at once, every time).
		if time.Since(start) < wait/2 {
			empty++
		} else {
			empty = 0
		}
		if empty >= emptyReads {
			return fmt.Errorf("%w: read %s: reads return nothing (hang-up)", errPortGone, dev)
		}
		if _, err := os.Stat(dev); err != nil {
			return fmt.Errorf("%w: %s: %w", errPortGone, dev, err)
		}
	}
}

// writeAll writes b, continuing after short writes.
func writeAll(p goserial.Port, b []byte) error {
	for len(b) > 0 {
		n, err := p.Write(b)
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("wrote 0 bytes")
		}
		b = b[n:]
	}
	return nil
}

// handleLine parses one line and publishes its reading; bad lines are
// dropped and counted.
func (s *sensor) handleLine(ctx context.Context, raw []byte) {
	line := trimLine(raw)
	if len(line) == 0 {
		return
	}
	s.mu.Lock()
	s.stats.Lines++
	s.mu.Unlock()
	if garbage(line) {
		s.drop(DropGarbage, errors.New("binary data in line"), line)
		return
	}
	fields, err := s.parser.parse(string(line))
	switch {
	case errors.Is(err, errIgnored):
		s.mu.Lock()
		s.stats.Ignored++
		s.mu.Unlock()
		return
	case errors.Is(err, errChecksum):
		s.drop(DropChecksum, err, line)
		return
	case err != nil:
		s.drop(DropParse, err, line)
		return
	}
	now := s.now()
	payload, err := json.Marshal(reading{V: fields, TS: now.UnixMilli(), TSSync: s.syncFlag(), Q: "good"})
	if err != nil {
		s.drop(DropParse, fmt.Errorf("encode reading: %w", err), line)
		return
	}
	err = s.bus.Publish(ctx, bus.Message{Topic: s.topic, Payload: payload, QoS: s.qos, Origin: Origin})
	if err != nil {
		if ctx.Err() == nil {
			s.drop(DropPublish, err, nil)
		}
		return
	}
	s.mu.Lock()
	s.stats.Readings++
	s.stats.LastReading = now
	s.mu.Unlock()
}

// reading is the JSON payload of a reading.
type reading struct {
	V      map[string]any `json:"v"`
	TS     int64          `json:"ts"`
	TSSync *bool          `json:"ts_sync,omitempty"`
	Q      string         `json:"q"`
}

// statusMsg is the JSON payload of the retained status.
type statusMsg struct {
	Status string `json:"state"`
	Device string `json:"device,omitempty"`
	Error  string `json:"err,omitempty"`
	TS     int64  `json:"ts"`
	TSSync *bool  `json:"ts_sync,omitempty"`
}

// syncFlag is nil when the clock is synchronised, else a pointer to false
// (so that "ts_sync": false appears only when ts cannot be trusted).
func (s *sensor) syncFlag() *bool {
	if s.synced() {
		return nil
	}
	f := false
	return &f
}

// maxSample bounds how much of a dropped line is logged.
const maxSample = 64

// drop counts a lost line by cause and logs it, rate-limited.
func (s *sensor) drop(cause string, err error, line []byte) {
	s.mu.Lock()
	s.stats.Dropped[cause]++
	s.stats.LastError = err.Error()
	s.stats.LastErrorAt = s.now()
	s.mu.Unlock()
	if ok, suppressed := s.dropLog.allow(); ok {
		attrs := []any{"cause", cause, "err", err, "suppressed", suppressed}
		if line != nil {
			attrs = append(attrs, "line", string(line[:min(len(line), maxSample)]))
		}
		s.log.Warn("serial: line dropped", attrs...)
	}
}

// setOnline records an opened port and publishes the online status.
// The stats say online only once the status is published, so that whoever
// sees them online finds the retained status.
func (s *sensor) setOnline(ctx context.Context, dev string) {
	s.mu.Lock()
	s.statusSent, s.statusErr = StatusOnline, ""
	s.mu.Unlock()
	s.log.Info("serial: port open", "device", dev)
	s.publishStatus(ctx, statusMsg{Status: StatusOnline, Device: dev})
	s.mu.Lock()
	s.stats.Online = true
	s.stats.Device = dev
	s.stats.Connects++
	s.mu.Unlock()
}

// setOffline records a failed open or a lost port. The status is
// published and logged when it changes (online → offline, or another
// error); repeated identical failures while retrying are logged at debug.
// A lost port's status says "serial port gone" (the details are in the log
// and LastError), and keeps saying it while the port stays missing.
func (s *sensor) setOffline(ctx context.Context, err error) {
	msg := err.Error()
	reason := msg
	s.mu.Lock()
	if errors.Is(err, errPortGone) || (s.statusErr == reasonPortGone && errors.Is(err, fs.ErrNotExist)) {
		reason = reasonPortGone
	}
	wasOnline := s.stats.Online
	if wasOnline {
		s.stats.Disconnects++
	}
	s.stats.Online = false
	s.stats.LastError = msg
	s.stats.LastErrorAt = s.now()
	changed := s.statusSent != StatusOffline || s.statusErr != reason
	s.statusSent, s.statusErr = StatusOffline, reason
	dev := s.stats.Device
	s.mu.Unlock()
	if !changed {
		s.log.Debug("serial: port still unavailable", "err", err)
		return
	}
	if wasOnline {
		s.log.Warn("serial: port lost", "device", dev, "err", err)
	} else {
		s.log.Warn("serial: port unavailable", "err", err)
	}
	s.publishStatus(ctx, statusMsg{Status: StatusOffline, Error: reason})
}

// stopped publishes the offline status at shutdown, with a context of its
// own since ctx is done; not for a sensor that goes on in the service that
// replaces this one.
func (s *sensor) stopped(ctx context.Context) {
	if s.keep.Load() {
		return
	}
	s.mu.Lock()
	s.stats.Online = false
	s.statusSent, s.statusErr = StatusOffline, "stopped"
	s.mu.Unlock()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statusTimeout)
	defer cancel()
	s.publishStatus(sctx, statusMsg{Status: StatusOffline, Error: "stopped"})
}

// publishStatus publishes the retained status with QoS 1.
func (s *sensor) publishStatus(ctx context.Context, st statusMsg) {
	st.TS = s.now().UnixMilli()
	st.TSSync = s.syncFlag()
	payload, err := json.Marshal(st)
	if err != nil {
		s.log.Error("serial: encode status", "err", err)
		return
	}
	err = s.bus.Publish(ctx, bus.Message{Topic: s.statusTopic, Payload: payload, QoS: 1, Retain: true, Origin: Origin})
	if err != nil && ctx.Err() == nil {
		s.log.Warn("serial: publish status", "topic", s.statusTopic, "err", err)
	}
}

// snapshot returns a copy of the sensor's stats.
func (s *sensor) snapshot() SensorStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Dropped = make(map[string]uint64, len(s.stats.Dropped))
	for k, v := range s.stats.Dropped {
		st.Dropped[k] = v
	}
	return st
}

// Drop logs: a burst of 5, then one every 10 seconds.
const (
	dropLogBurst    = 5
	dropLogInterval = 10 * time.Second
)

// logLimiter lets a few drop lines through and then one per interval,
// counting what it held back (internal/ratelog).
type logLimiter struct {
	lim *ratelog.Limiter
}

// newLogLimiter limits drop lines on the clock now.
func newLogLimiter(now func() time.Time) *logLimiter {
	return &logLimiter{lim: ratelog.NewLimiter(ratelog.Config{Every: dropLogInterval, Burst: dropLogBurst, Now: now})}
}

// allow reports whether to log now and how many were suppressed since the
// last line logged.
func (l *logLimiter) allow() (ok bool, suppressed int) {
	return l.lim.Allow("serial: line dropped", "")
}
