package gateway

import (
	"log/slog"

	"github.com/fieldgate/fieldgate/gateway/supervise"
	"github.com/fieldgate/fieldgate/internal/memreturn"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// newMemReturner builds the part that gives the heap back to the OS after a
// storm of peers has left (internal/memreturn). Its count is the broker's
// connected clients: MQTT-SN devices and CoAP sessions are broker sessions
// (mqtt.Broker.Connect), so they are counted there too. It runs on the
// host's clock (monotonic), not the gateway's wall clock g.clk, which the
// fault-injection build shifts.
func newMemReturner(b *mqtt.Broker, log *slog.Logger) *memreturn.Returner {
	return memreturn.New(memreturn.Options{
		Peers:  func() int64 { return b.Info().ClientsConnected },
		Logger: log.With("part", "memreturn"),
	})
}

// memReturnPart is the supervised part of r; it counts as stuck when its
// once-a-second checks stop for memreturn.ProgressBound.
func memReturnPart(r *memreturn.Returner) supervise.Part {
	return supervise.Part{Name: "memreturn", Run: r.Run, Progress: r.Progress, Bound: memreturn.ProgressBound}
}

// collectMemReturn puts r's counters on /metrics.
func (e emitter) collectMemReturn(r *memreturn.Returner) {
	if r == nil {
		return
	}
	st := r.Stats()
	e.counter("fieldgate_memory_returns_total", nil, float64(st.Returns))
	e.counter("fieldgate_memory_returned_bytes_total", nil, float64(st.ReturnedBytes))
	e.gauge("fieldgate_memory_return_peak_peers", nil, float64(st.PeakPeers))
	if !st.LastReturn.IsZero() {
		e.gauge("fieldgate_memory_last_return_seconds", nil, float64(st.LastReturn.UnixNano())/1e9)
	}
}
