package gateway

import (
	"context"
	"errors"
	"time"

	"github.com/fieldgate/fieldgate/gateway/supervise"
	"github.com/fieldgate/fieldgate/gateway/web"
	"github.com/fieldgate/fieldgate/southbound/serial"
	"github.com/fieldgate/fieldgate/store"
)

// serialPart is the supervised part of a serial service.
func serialPart(svc *serial.Service) supervise.Part {
	return supervise.Part{Name: "serial", Run: svc.Run}
}

// outboxBound is how long appends may wait without any commit of the
// outbox writer finishing before the writer counts as stuck. A commit is
// one fsync (milliseconds on eMMC); 30 s is far past any healthy one.
const outboxBound = 30 * time.Second

// outboxPart watches the outbox writer. The writer is the outbox's own
// goroutine (OpenOutbox starts it, Close stops it), and one wedged in a
// commit holds bbolt's write lock: no second writer could do better in this
// process. So the part's Run only waits, its progress is the writer's
// (store.Outbox.Progress: commits advancing while appends wait; idle with
// nothing waiting is healthy), and a "restart" re-arms the check. A writer
// still wedged after the supervisor's restarts makes the gateway unhealthy:
// the watchdog pings stop and /readyz fails, and systemd restarts the
// process, which is the way out of an fsync that does not return.
func outboxPart(q *store.Outbox, bound time.Duration) supervise.Part {
	return supervise.Part{
		Name: "outbox",
		Run: func(ctx context.Context) error {
			<-ctx.Done()
			return nil
		},
		Progress: q.Progress,
		Bound:    bound,
	}
}

// partsStatus is every supervised part for the page.
func (g *gateway) partsStatus() []web.PartStatus {
	stats := g.sup.Stats()
	out := make([]web.PartStatus, len(stats))
	for i, p := range stats {
		out[i] = web.PartStatus{
			Name:         p.Name,
			State:        string(p.State),
			Healthy:      p.Healthy,
			Restarts:     p.Restarts,
			LastProgress: p.LastProgress,
			Bound:        web.Duration(p.Bound),
			LastError:    p.LastError,
		}
		if !p.LastProgress.IsZero() {
			// Never 0 (omitted): a part that progressed just now is 1 ms old.
			out[i].ProgressAge = max(time.Since(p.LastProgress).Seconds(), 0.001)
		}
	}
	return out
}

// restartStatus is what waits for a restart, for the page.
func (g *gateway) restartStatus() web.RestartStatus {
	ks := g.pending()
	st := web.RestartStatus{Needed: len(ks) > 0, Parts: pendingParts(ks), Keys: make([]web.PendingSetting, len(ks))}
	if st.Parts == nil {
		st.Parts = []string{}
	}
	for i, k := range ks {
		st.Keys[i] = web.PendingSetting{Key: k.Key, Part: k.Part}
	}
	return st
}

// Restart stops the gateway so that it starts again with the saved config
// (web.Backend): Run returns ErrRestart after a clean stop.
func (g *gateway) Restart() error {
	select {
	case <-g.ready:
	default:
		return errors.New("the gateway is still starting")
	}
	g.requestRestart()
	return nil
}
