package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/store"
	"github.com/fieldgate/fieldgate/uplink"
)

// UplinkOutbox adapts a store.Outbox to the interface the uplink defines
// (the uplink does not import store: leaves never import each other).
func UplinkOutbox(q *store.Outbox) uplink.Outbox { return outbox{q} }

type outbox struct{ q *store.Outbox }

func (o outbox) Append(ctx context.Context, data []byte, expiry time.Time) (uint64, error) {
	seq, err := o.q.Append(ctx, store.OutboxRecord{Data: data, Expiry: expiry})
	if errors.Is(err, store.ErrOutboxFull) {
		err = fmt.Errorf("%w: %w", uplink.ErrOutboxFull, err)
	}
	return seq, err
}

func (o outbox) AppendAsync(data []byte, expiry time.Time) error {
	return o.q.AppendAsync(store.OutboxRecord{Data: data, Expiry: expiry})
}

func (o outbox) Read(after uint64, max int) ([]uplink.Entry, error) {
	es, err := o.q.Read(after, max, nil)
	out := make([]uplink.Entry, len(es))
	for i, e := range es {
		out[i] = uplink.Entry{Seq: e.Seq, Data: e.Data, Appended: e.Appended}
	}
	return out, err
}

func (o outbox) Wait(ctx context.Context, after uint64) error { return o.q.Wait(ctx, after) }
func (o outbox) Ack(seqs ...uint64) error                     { return o.q.Ack(seqs...) }

// openOutbox opens the uplink's outbox in dataDir/outbox. beforeCommit is
// store.OutboxOptions.BeforeCommit (tests; nil otherwise).
func openOutbox(cfg uplink.Config, dataDir string, full func() bool, now func() time.Time, log *slog.Logger, beforeCommit func()) (*store.Outbox, error) {
	policy := store.DropOldest
	if cfg.Outbox.Policy == "refuse_new" {
		policy = store.RefuseNew
	}
	return store.OpenOutbox(store.OutboxOptions{
		Dir:          filepath.Join(dataDir, "outbox"),
		MaxBytes:     cfg.Outbox.MaxBytes,
		MaxMessages:  cfg.Outbox.MaxMessages,
		Policy:       policy,
		TTL:          cfg.Outbox.TTL,
		Full:         full,
		Now:          now,
		Logger:       log,
		BeforeCommit: beforeCommit,
	})
}

// uplinkStatus is what $SYS/fieldgate/uplink carries.
type uplinkStatus struct {
	uplink.Status
	Outbox store.OutboxStats `json:"outbox"`
}

// publishUplinkStatus publishes the uplink's status and the outbox's
// statistics as JSON on $SYS/fieldgate/uplink (retained) every interval.
func publishUplinkStatus(ctx context.Context, b bus.Bus, br *uplink.Bridge, q *store.Outbox, every time.Duration, log *slog.Logger) {
	if every <= 0 {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		payload, err := json.Marshal(uplinkStatus{Status: br.Status(), Outbox: q.Stats()})
		if err == nil {
			err = b.Publish(ctx, bus.Message{Topic: "$SYS/fieldgate/uplink", Payload: payload, Retain: true, ContentType: "application/json"})
		}
		if err != nil && ctx.Err() == nil {
			log.Debug("uplink status not published", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// gatewayID is the configured id, or one derived from the host name.
func gatewayID(configured string) string {
	if configured != "" {
		return configured
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		return "fieldgate"
	}
	host, _, _ = strings.Cut(host, ".")
	var b strings.Builder
	for _, r := range host {
		if r < 128 && (r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "fieldgate"
	}
	return b.String()
}
