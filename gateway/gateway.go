// Package gateway is fieldgate's composition root: it builds the parts from
// the config, starts them in order, applies config changes on reload (a
// SIGHUP, or the setup page), and stops them in the reverse order.
//
// Start order: board → store → broker (the bus) → the uplink's taps → the
// parts that talk to devices (MQTT-SN, CoAP, Modbus, serial) → the setup
// page. Stop order: the page and the device-facing parts first (intake),
// then the broker (MQTT 5 clients get DISCONNECT 0x8B), then the uplink
// (whatever the broker accepted last is already in the outbox), and the
// outbox and the store last, so that everything accepted is written before
// the files are closed.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldgate/fieldgate/board"
	"github.com/fieldgate/fieldgate/gateway/bus"
	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/gateway/web"
	"github.com/fieldgate/fieldgate/internal/membudget"
	"github.com/fieldgate/fieldgate/protocols/coap"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
	"github.com/fieldgate/fieldgate/protocols/mqttsn"
	"github.com/fieldgate/fieldgate/southbound/modbus"
	"github.com/fieldgate/fieldgate/southbound/serial"
	"github.com/fieldgate/fieldgate/store"
	"github.com/fieldgate/fieldgate/uplink"
)

// Options are what cmd/fieldgate hands the gateway.
type Options struct {
	// ConfigPath is the file reloaded on Reload; "" means built-in defaults
	// (a reload then has nothing to read and is ignored).
	ConfigPath string
	// ConfigWritePath is where a config changed on the setup page is
	// written when ConfigPath is "" (e.g. fieldgate.yaml beside the binary,
	// which the next start reads).
	ConfigWritePath string
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
	// CPUStats, if not nil, reports the process's CPU scaler (it is the
	// process's, not the gateway's: cmd/fieldgate runs it); on /metrics.
	CPUStats func() board.CPUStats
	// BoardRoot is the directory below which /sys and /proc are read (tests
	// use a fake tree); "" means "/".
	BoardRoot string
}

// gateway is one run of the gateway: the parts and what ties them together.
type gateway struct {
	opts    Options
	log     *slog.Logger
	ring    *web.LogRing
	started time.Time
	board   *board.Board
	live    *board.Liveness
	db      *store.DB
	broker  *mqtt.Broker
	reg     *prometheus.Registry

	// mu guards what a config change replaces.
	mu         sync.Mutex
	id         string // the gateway id: the configured one or one derived from the board
	cfg        config.Config
	configPath string
	obox       *store.Outbox // nil until the uplink is first enabled
	bridge     *uplink.Bridge
	sn         *mqttsn.Gateway
	coap       *coap.Gateway
	modbus     *modbus.Service
	serial     *serial.Service
	parts      map[string]*part // the running parts by name

	applyMu  sync.Mutex        // one config change at a time
	budget   *membudget.Budget // the global memory budget, fixed at start
	ready    chan struct{}
	writeSeq atomic.Int64 // numbers the page's Modbus write commands
}

// part is a running goroutine of the gateway with its own lifetime, so
// that a config change can restart it alone.
type part struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Run runs the gateway until ctx is done. It returns an error when a part
// cannot start (a busy port, an unreadable data directory) or fails.
func Run(ctx context.Context, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ring := web.NewLogRing(2000)
	log = slog.New(ring.Handler(log.Handler()))
	cfg := opts.Config
	g := &gateway{
		opts:       opts,
		log:        log,
		ring:       ring,
		started:    time.Now(),
		cfg:        cfg,
		configPath: opts.ConfigPath,
		parts:      map[string]*part{},
		live:       board.NewLiveness(nil),
		ready:      make(chan struct{}),
	}
	if err := os.MkdirAll(cfg.Gateway.DataDir, 0o750); err != nil {
		return fmt.Errorf("gateway: data dir: %w", err)
	}
	var err error
	g.board, err = board.New(board.Options{Config: cfg.Board, Root: opts.BoardRoot, DataDir: cfg.Gateway.DataDir, Logger: log.With("part", "board")})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	g.id = gatewayIDOr(cfg.Gateway.ID, g.board.Identity().DefaultID())

	dbPath := filepath.Join(cfg.Gateway.DataDir, "broker.db")
	g.db, err = store.Open(dbPath, store.Options{Logger: log.With("part", "store"), MoveAsideCorrupt: true})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	defer func() {
		if err := g.db.Close(); err != nil {
			log.Error("store close failed", "path", dbPath, "error", err)
		}
	}()
	// One memory budget for everything peers can make the gateway hold.
	g.budget = membudget.New(int64(cfg.Gateway.MemoryBudgetMB) << 20)
	g.broker, err = mqtt.New(cfg.Broker, mqtt.Options{Logger: log, Store: g.db, Version: opts.Version, Budget: g.budget})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	// Closed last: after the uplink has stopped using it.
	defer func() {
		if g.obox != nil {
			if err := g.obox.Close(); err != nil {
				log.Error("outbox close failed", "error", err)
			}
		}
	}()
	// The uplink's taps are installed before the broker serves anyone, so
	// nothing a forward rule selects can escape the outbox.
	if g.bridge, err = g.newBridge(cfg.Uplink); err != nil {
		return err
	}
	defer func() { g.bridge.Close() }()
	if cfg.MQTTSN.Enabled {
		if g.sn, err = mqttsn.New(cfg.MQTTSN, g.broker, log, mqttsn.WithBudget(g.budget)); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
	}
	if cfg.CoAP.Enabled {
		if g.coap, err = coap.New(cfg.CoAP, g.broker, log, coap.WithBudget(g.budget)); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
	}
	if g.modbus, err = modbus.New(cfg.Southbound.Modbus, g.broker, modbus.Options{Logger: log.With("part", "modbus")}); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if g.serial, err = serial.New(cfg.Southbound.Serial, g.broker, log.With("part", "serial")); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	g.reg = g.registry()
	var webSrv *web.Server
	if cfg.Web.Enabled {
		webSrv, err = web.New(cfg.Web, g, web.Options{DataDir: cfg.Gateway.DataDir, Logger: log.With("part", "web"), Version: opts.Version, GatewayID: g.gatewayID})
		if err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
	}

	// Everything is bound: run.
	brokerCtx, stopBroker := context.WithCancel(context.Background())
	defer stopBroker()
	brokerDone := make(chan error, 1)
	go func() { brokerDone <- g.broker.Run(brokerCtx) }()
	defer g.stopAll()
	g.startBridge()
	if g.sn != nil {
		g.start("mqttsn", g.sn.Run)
	}
	if g.coap != nil {
		g.start("coap", g.coap.Run)
	}
	g.start("modbus", g.modbus.Run)
	g.start("serial", g.serial.Run)
	if webSrv != nil {
		g.start("web", webSrv.Run)
	}
	g.start("board", func(ctx context.Context) error { return g.board.Run(ctx, g.healthy) })
	g.start("probe", g.probe)

	attrs := []any{"version", opts.Version, "gateway_id", g.gatewayID(), "data_dir", cfg.Gateway.DataDir, "startup", time.Since(g.started).Round(time.Millisecond)}
	for _, id := range []string{"tcp", "tls", "ws", "wss", "quic"} {
		if a := g.broker.Addr(id); a != "" {
			attrs = append(attrs, "mqtt_"+id, a)
		}
	}
	if g.sn != nil {
		attrs = append(attrs, "mqttsn", g.sn.Addr())
	}
	if g.coap != nil {
		attrs = append(attrs, "coap", g.coap.Addr())
	}
	if webSrv != nil {
		attrs = append(attrs, "web", webSrv.Addr())
	}
	log.Info("fieldgate started", attrs...)
	close(g.ready)
	g.board.Ready()
	g.updateBoard()
	if opts.Ready != nil {
		close(opts.Ready)
	}

	status := time.NewTicker(5 * time.Second)
	defer status.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("fieldgate stopping")
			g.board.Stopping()
			// Intake first, then the broker; the uplink and the files after.
			g.stop("web", "mqttsn", "coap", "modbus", "serial", "probe")
			stopBroker()
			err := <-brokerDone
			g.stop("uplink", "uplink-status")
			log.Info("fieldgate stopped")
			return err
		case err := <-brokerDone:
			return fmt.Errorf("gateway: broker stopped: %w", err)
		case <-opts.Reload:
			g.board.Reloading()
			if _, err := g.reload(ctx); err != nil {
				log.Error("config reload refused; the running config stays", "path", g.path(), "error", err)
			}
			g.board.Reloaded()
		case <-status.C:
			g.live.Beat("gateway")
			g.updateBoard()
		}
	}
}

// start runs fn as part name until it returns or the part is stopped.
func (g *gateway) start(name string, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &part{cancel: cancel, done: make(chan struct{})}
	g.mu.Lock()
	g.parts[name] = p
	g.mu.Unlock()
	go func() {
		defer close(p.done)
		if err := fn(ctx); err != nil && ctx.Err() == nil {
			g.log.Error("part stopped", "part", name, "error", err)
		}
	}()
}

// stop stops the named parts (together) and waits for them.
func (g *gateway) stop(names ...string) {
	var ps []*part
	g.mu.Lock()
	for _, n := range names {
		if p := g.parts[n]; p != nil {
			ps = append(ps, p)
			delete(g.parts, n)
		}
	}
	g.mu.Unlock()
	for _, p := range ps {
		p.cancel()
	}
	for _, p := range ps {
		<-p.done
	}
}

// stopAll stops whatever still runs (an early return).
func (g *gateway) stopAll() {
	g.mu.Lock()
	var names []string
	for n := range g.parts {
		names = append(names, n)
	}
	g.mu.Unlock()
	g.stop(names...)
}

// newBridge builds a bridge for cfg, opening the outbox when the uplink is
// enabled for the first time.
func (g *gateway) newBridge(cfg uplink.Config) (*uplink.Bridge, error) {
	opts := uplink.Options{Bus: g.broker, GatewayID: g.gatewayID(), Logger: g.log}
	if cfg.Enabled {
		if g.obox == nil {
			q, err := openOutbox(cfg, g.running().Gateway.DataDir, g.board.ReserveReached, g.log.With("part", "outbox"))
			if err != nil {
				return nil, fmt.Errorf("gateway: %w", err)
			}
			g.obox = q
		}
		opts.Outbox = UplinkOutbox(g.obox)
	}
	b, err := uplink.New(cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return b, nil
}

// startBridge runs the current bridge and its $SYS status.
func (g *gateway) startBridge() {
	br := g.bridge
	g.start("uplink", br.Run)
	if g.obox != nil {
		q := g.obox
		every := g.running().Broker.SysInterval
		g.start("uplink-status", func(ctx context.Context) error {
			publishUplinkStatus(ctx, g.broker, br, q, every, g.log)
			return nil
		})
	}
}

// healthy is the board's health check: the watchdog is fed only while it
// passes. The bus must have dispatched the probe and the main loop must
// have run recently.
func (g *gateway) healthy() error {
	return g.live.Stale(30 * time.Second)
}

// probe publishes a message to itself every second through the broker; its
// arrival is the bus's heartbeat.
func (g *gateway) probe(ctx context.Context) error {
	const topic = "$fieldgate/probe" // clients cannot subscribe to $fieldgate/
	unsub, err := g.broker.Subscribe(topic, func(bus.Message) { g.live.Beat("bus") })
	if err != nil {
		return err
	}
	defer unsub()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		_ = g.broker.Publish(ctx, bus.Message{Topic: topic, Payload: []byte("1")})
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// updateBoard tells systemd and the LEDs how the gateway is.
func (g *gateway) updateBoard() {
	g.mu.Lock()
	br, q, mb, sr := g.bridge, g.obox, g.modbus, g.serial
	g.mu.Unlock()
	st := br.Status()
	line := board.StatusLine{Uplink: st.State}
	if st.Connected {
		line.Uplink = "connected " + st.Transport
	}
	if q != nil {
		line.Outbox = int(q.Stats().Depth)
	}
	for _, d := range mb.Devices() {
		line.Devices++
		if d.Online {
			line.DevicesOK++
		}
	}
	for _, s := range sr.Stats() {
		line.Devices++
		if s.Online {
			line.DevicesOK++
		}
	}
	g.board.Status(line.String())
	g.board.SetUplink(st.Connected)
	// The board's identity and health for whoever watches $SYS/.
	info := map[string]any{"gateway_id": g.gatewayID(), "identity": g.board.Identity()}
	if h, err := g.board.Health(); err == nil {
		info["health"] = h
	}
	if payload, err := json.Marshal(info); err == nil {
		_ = g.broker.Publish(context.Background(), bus.Message{Topic: "$SYS/fieldgate/board", Payload: payload, Retain: true, ContentType: "application/json"})
	}
}

// gatewayID is the running gateway id.
// running returns a copy of the running config. Goroutines that outlive
// a config change read it through here, never g.cfg directly (apply writes
// g.cfg under g.mu).
func (g *gateway) running() config.Config {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cfg
}

func (g *gateway) gatewayID() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.id
}

// setGatewayID changes the running gateway id.
func (g *gateway) setGatewayID(id string) {
	g.mu.Lock()
	g.id = id
	g.mu.Unlock()
}

// gatewayIDOr is the configured id, or else the board's default one.
func gatewayIDOr(configured, boardDefault string) string {
	if configured != "" {
		return configured
	}
	return gatewayID(boardDefault)
}

// path is where the config file is read from and written to.
func (g *gateway) path() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.configPath
}

// reload reads the config file again and applies it, under applyMu like
// every config change.
func (g *gateway) reload(ctx context.Context) ([]string, error) {
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	path := g.path()
	if path == "" {
		return nil, errors.New("running on built-in defaults: no config file to reload")
	}
	next, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if g.opts.Override != nil {
		g.opts.Override(&next)
	}
	restart, err := g.apply(ctx, next)
	if err != nil {
		return nil, err
	}
	g.log.Info("config reloaded", "path", path)
	return restart, nil
}
