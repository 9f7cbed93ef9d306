package coap

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/fieldgate/fieldgate/internal/ratelog"
)

// Stats are the gateway's counters.
type Stats struct {
	// Requests counts requests by method (GET, POST, PUT, DELETE, other).
	Requests map[string]uint64
	// Publishes counts messages accepted by the broker.
	Publishes uint64
	// Notifications counts notifications sent (and ACKed, when CON);
	// NotifyFailed those that timed out or could not be sent.
	Notifications, NotifyFailed uint64
	// Dropped counts QoS 0 messages dropped for a device that is too slow.
	Dropped uint64
	// Coalesced counts notifications not sent because another observation
	// of the same endpoint and session, with a more specific filter, got
	// the message.
	Coalesced uint64
	// ObservationsRefused counts registrations refused by
	// max_observations_per_endpoint, max_observations or the memory
	// budget; ObservationsExpired counts observations ended because their
	// endpoint did not answer a CON notification or a ping; Pings counts
	// the CoAP pings sent to check on silent observers.
	ObservationsRefused, ObservationsExpired, Pings uint64
	// Observers, Connections and Sessions are current numbers:
	// observations, connections (POST /mqtt/connection) and broker
	// sessions (connections and connectionless devices).
	Observers, Connections, Sessions int64
	// Errors counts error responses by CoAP code ("4.04" ...).
	Errors map[string]uint64
}

type stats struct {
	get, post, put, del, other       atomic.Uint64
	publishes, notifications         atomic.Uint64
	notifyFailed, dropped            atomic.Uint64
	coalesced, obsRefused            atomic.Uint64
	obsExpired, pings                atomic.Uint64
	observers, connections, sessions atomic.Int64

	mu     sync.Mutex
	errors map[codes.Code]uint64
}

func (s *stats) init() { s.errors = make(map[codes.Code]uint64) }

func (s *stats) request(c codes.Code) {
	switch c {
	case codes.GET:
		s.get.Add(1)
	case codes.POST:
		s.post.Add(1)
	case codes.PUT:
		s.put.Add(1)
	case codes.DELETE:
		s.del.Add(1)
	default:
		s.other.Add(1)
	}
}

func (s *stats) failed(c codes.Code) {
	s.mu.Lock()
	s.errors[c]++
	s.mu.Unlock()
}

// Stats returns a snapshot of the counters.
func (g *Gateway) Stats() Stats {
	s := &g.stats
	out := Stats{
		Requests: map[string]uint64{
			"GET": s.get.Load(), "POST": s.post.Load(), "PUT": s.put.Load(),
			"DELETE": s.del.Load(), "other": s.other.Load(),
		},
		Publishes:     s.publishes.Load(),
		Notifications: s.notifications.Load(),
		NotifyFailed:  s.notifyFailed.Load(),
		Dropped:       s.dropped.Load(),
		Coalesced:     s.coalesced.Load(),

		ObservationsRefused: s.obsRefused.Load(),
		ObservationsExpired: s.obsExpired.Load(),
		Pings:               s.pings.Load(),

		Observers:   s.observers.Load(),
		Connections: s.connections.Load(),
		Sessions:    s.sessions.Load(),
		Errors:      make(map[string]uint64),
	}
	s.mu.Lock()
	for c, n := range s.errors {
		out.Errors[codeString(c)] = n
	}
	s.mu.Unlock()
	return out
}

// codeString writes a CoAP code as "4.04".
func codeString(c codes.Code) string {
	return string([]byte{'0' + byte(c>>5), '.', '0' + byte(c&0x1f)/10, '0' + byte(c&0x1f)%10})
}

// logLimiter logs one line per message and key per interval, so that a
// device sending garbage cannot flood the log; the next line says how many
// it held back (internal/ratelog).
type logLimiter struct {
	log *ratelog.Logger
}

func newLogLimiter(log *slog.Logger, interval time.Duration) *logLimiter {
	return &logLimiter{log: ratelog.New(log, ratelog.Config{Every: interval, Burst: 1})}
}

func (l *logLimiter) warn(key, msg string, args ...any)  { l.log.Warn(key, msg, args...) }
func (l *logLimiter) info(key, msg string, args ...any)  { l.log.Info(key, msg, args...) }
func (l *logLimiter) debug(key, msg string, args ...any) { l.log.Debug(key, msg, args...) }
