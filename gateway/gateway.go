// Package gateway is fieldgate's composition root: it builds the parts from
// the config, starts them in order, applies config changes on reload, and
// stops them in the reverse order.
//
// Start order: store → broker (the bus) → the parts that use the bus.
// Stop order: intake first (listeners; MQTT 5 clients get DISCONNECT 0x8B),
// then the bus, and the store last, so that everything accepted is written
// before the file is closed.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"time"

	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
	"github.com/fieldgate/fieldgate/store"
	"github.com/fieldgate/fieldgate/uplink"
)

// Options are what cmd/fieldgate hands the gateway.
type Options struct {
	// ConfigPath is the file reloaded on Reload; "" means built-in defaults
	// (a reload then has nothing to read and is ignored).
	ConfigPath string
	// Config is the validated config to start with.
	Config config.Config
	// Logger receives every part's logs.
	Logger *slog.Logger
	// Version is the build's version, shown in $SYS and on the web page.
	Version string
	// Reload asks for ConfigPath to be read again and applied.
	Reload <-chan struct{}
	// Override, if not nil, is applied to every config read on reload, as
	// it was to Config (command-line flags such as -data).
	Override func(*config.Config)
	// Ready, if not nil, is closed once every listener is bound and serving.
	Ready chan<- struct{}
}

// Run runs the gateway until ctx is done. It returns an error when a part
// cannot start (a busy port, an unreadable data directory) or fails.
func Run(ctx context.Context, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := opts.Config
	start := time.Now()

	if err := os.MkdirAll(cfg.Gateway.DataDir, 0o750); err != nil {
		return fmt.Errorf("gateway: data dir: %w", err)
	}
	dbPath := filepath.Join(cfg.Gateway.DataDir, "broker.db")
	db, err := store.Open(dbPath, store.Options{Logger: log.With("part", "store"), MoveAsideCorrupt: true})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	defer func() {
		if err := db.Close(); err != nil {
			log.Error("store close failed", "path", dbPath, "error", err)
		}
	}()

	broker, err := mqtt.New(cfg.Broker, mqtt.Options{
		Logger:  log.With("part", "broker"),
		Store:   db,
		Version: opts.Version,
	})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}

	// The uplink's taps are installed before the broker serves anyone, so
	// nothing a forward rule selects can escape the outbox.
	gwID := gatewayID(cfg.Gateway.ID)
	var obox *store.Outbox
	bridgeOpts := uplink.Options{Bus: broker, GatewayID: gwID, Logger: log}
	if cfg.Uplink.Enabled {
		obox, err = openOutbox(cfg.Uplink, cfg.Gateway.DataDir, log.With("part", "outbox"))
		if err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		defer func() {
			if err := obox.Close(); err != nil {
				log.Error("outbox close failed", "error", err)
			}
		}()
		bridgeOpts.Outbox = outbox{obox}
	}
	bridge, err := uplink.New(cfg.Uplink, bridgeOpts)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	defer bridge.Close() // after the broker stopped, before the outbox closes

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	brokerDone := make(chan error, 1)
	go func() { brokerDone <- broker.Run(runCtx) }()
	// The uplink stops after the broker: what the broker accepted last is
	// in the outbox, and the drain may go on until the broker is down.
	uplinkCtx, stopUplink := context.WithCancel(context.Background())
	defer stopUplink()
	var uplinkWG sync.WaitGroup
	uplinkWG.Go(func() { _ = bridge.Run(uplinkCtx) })
	if obox != nil {
		uplinkWG.Go(func() { publishUplinkStatus(uplinkCtx, broker, bridge, obox, cfg.Broker.SysInterval, log) })
	}
	defer func() { stopUplink(); uplinkWG.Wait() }()

	attrs := []any{"version", opts.Version, "data_dir", cfg.Gateway.DataDir, "startup", time.Since(start).Round(time.Millisecond)}
	attrs = append(attrs, "gateway_id", gwID)
	for _, id := range []string{"tcp", "tls", "ws", "wss", "quic"} {
		if a := broker.Addr(id); a != "" {
			attrs = append(attrs, "mqtt_"+id, a)
		}
	}
	log.Info("fieldgate started", attrs...)
	if opts.Ready != nil {
		close(opts.Ready)
	}

	for {
		select {
		case <-ctx.Done():
			log.Info("fieldgate stopping")
			cancel()
			err := <-brokerDone
			log.Info("fieldgate stopped")
			return err
		case err := <-brokerDone:
			return fmt.Errorf("gateway: broker stopped: %w", err)
		case <-opts.Reload:
			next, err := reload(log, opts, cfg, broker)
			if err != nil {
				log.Error("config reload refused; the running config stays", "path", opts.ConfigPath, "error", err)
				continue
			}
			cfg = next
		}
	}
}

// reload reads and validates the config file and applies what may change
// live. What needs a restart is named in a log line and stays as it was.
func reload(log *slog.Logger, opts Options, cur config.Config, broker *mqtt.Broker) (config.Config, error) {
	path := opts.ConfigPath
	if path == "" {
		return cur, errors.New("running on built-in defaults: no config file to reload")
	}
	next, err := config.Load(path)
	if err != nil {
		return cur, err
	}
	if opts.Override != nil {
		opts.Override(&next)
	}
	if err := next.Validate(); err != nil {
		return cur, err
	}
	restart, err := broker.Reload(next.Broker)
	if err != nil {
		return cur, err
	}
	if next.Gateway != cur.Gateway {
		restart = append(restart, "gateway")
	}
	if !reflect.DeepEqual(next.Web, cur.Web) {
		restart = append(restart, "web")
	}
	if next.Log != cur.Log {
		restart = append(restart, "log")
	}
	if !reflect.DeepEqual(next.Uplink, cur.Uplink) {
		restart = append(restart, "uplink")
	}
	log.Info("config reloaded", "path", path)
	if len(restart) > 0 {
		log.Warn("config reload: these settings need a restart and keep their running values", "settings", restart)
	}
	return next, nil
}
