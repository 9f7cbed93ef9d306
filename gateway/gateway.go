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
//
// Every long-lived part runs under one supervisor (gateway/supervise),
// which restarts a part that fails, panics or stops making progress, feeds
// the health check that gates the systemd watchdog and /readyz, and bounds
// the stop by gateway.stop_budget (docs/reliability.md).
package gateway

import (
	"cmp"
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
	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/gateway/supervise"
	"github.com/fieldgate/fieldgate/gateway/web"
	"github.com/fieldgate/fieldgate/internal/clock"
	"github.com/fieldgate/fieldgate/internal/membudget"
	"github.com/fieldgate/fieldgate/internal/memreturn"
	"github.com/fieldgate/fieldgate/protocols/coap"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
	"github.com/fieldgate/fieldgate/protocols/mqttsn"
	"github.com/fieldgate/fieldgate/rules"
	"github.com/fieldgate/fieldgate/southbound/modbus"
	"github.com/fieldgate/fieldgate/southbound/opcua"
	"github.com/fieldgate/fieldgate/southbound/serial"
	"github.com/fieldgate/fieldgate/store"
	"github.com/fieldgate/fieldgate/uplink"
)

// Options are what cmd/fieldgate hands the gateway.
type Options struct {
	// ConfigPath is the file reloaded on Reload; "" means built-in defaults
	// (a reload then has nothing to read and is ignored).
	ConfigPath string
	// ConfigWritePath is the saved config: where a config changed on the
	// setup page is written (and then reloaded from), whatever ConfigPath
	// was read at start (the factory config, say); "" means ConfigPath.
	ConfigWritePath string
	// RequestStop, if not nil, asks the process to stop the gateway (a
	// factory reset from the page).
	RequestStop func()
	// Updater, if not nil, installs update bundles from the page and API.
	Updater web.Updater
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

	// extraParts are supervised beside the gateway's own (tests).
	extraParts []supervise.Part
	// supervise, if set, replaces the supervisor's options (tests).
	supervise *supervise.Options
	// outboxHook is store.OutboxOptions.BeforeCommit and outboxBound
	// replaces outboxBound (tests that wedge the outbox writer).
	outboxHook  func()
	outboxBound time.Duration
}

// gateway is one run of the gateway: the parts and what ties them together.
type gateway struct {
	opts    Options
	log     *slog.Logger
	ring    *web.LogRing
	started time.Time
	board   *board.Board
	live    *board.Liveness
	clk     clock.Clock // the wall clock of payloads, the outbox and the uplink
	db      *store.DB
	broker  *mqtt.Broker
	reg     *prometheus.Registry

	// conf holds the running and the saved config (apply changes them);
	// nothing reads either but through its lock.
	conf *supervise.Configs[config.Config]
	// defaultID is the gateway id when the config names none (from the
	// board, else the host name); fixed at start.
	defaultID string
	// restart is signalled to stop the gateway for a restart (the page's
	// "Restart now").
	restart chan struct{}

	// mu guards what a config change replaces.
	mu         sync.Mutex
	configPath string
	obox       *store.Outbox // nil until the uplink is first enabled
	bridge     *uplink.Bridge
	sn         *mqttsn.Gateway
	coap       *coap.Gateway
	modbus     *modbus.Service
	serial     *serial.Service
	opcua      *opcua.Service // nil while no OPC UA server is configured
	rules      *rules.Engine
	memret     *memreturn.Returner   // returns the heap after storms of peers; fixed at start
	sup        *supervise.Supervisor // runs every long-lived part
	probeSeen  atomic.Int64          // Unix nanoseconds of the last probe through the bus
	// outboxWatched: the outbox writer's part runs (from the first time
	// the uplink is enabled; the outbox stays open until Run returns).
	outboxWatched atomic.Bool

	applyMu  sync.Mutex        // one config change at a time
	budget   *membudget.Budget // the global memory budget, fixed at start
	ready    chan struct{}
	writeSeq atomic.Int64 // numbers the page's Modbus write commands
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
		conf:       supervise.NewConfigs(cfg),
		restart:    make(chan struct{}, 1),
		configPath: opts.ConfigPath,
		live:       board.NewLiveness(nil),
		clk:        clock.ForProcess(log),
		ready:      make(chan struct{}),
	}
	supOpts := supervise.Options{}
	if opts.supervise != nil {
		supOpts = *opts.supervise
	}
	supOpts.Logger = log
	g.sup = supervise.New(supOpts)
	if err := os.MkdirAll(cfg.Gateway.DataDir, 0o750); err != nil {
		return fmt.Errorf("gateway: data dir: %w", err)
	}
	var err error
	g.board, err = board.New(board.Options{Config: cfg.Board, Root: opts.BoardRoot, DataDir: cfg.Gateway.DataDir, Logger: log.With("part", "board")})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	g.defaultID = gatewayIDOr("", g.board.Identity().DefaultID())

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
	g.broker, err = mqtt.New(cfg.Broker, mqtt.Options{Logger: log, Store: newBrokerStore(g.db), Version: opts.Version, Budget: g.budget})
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
	if g.bridge, err = g.newBridge(cfg.Uplink, g.gatewayID()); err != nil {
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
	if g.modbus, err = modbus.New(cfg.Southbound.Modbus, g.broker, modbus.Options{Logger: log.With("part", "modbus"), Now: g.clk.Now}); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if g.serial, err = serial.New(cfg.Southbound.Serial, g.broker, log.With("part", "serial"), serial.WithClock(g.clk.Now)); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if g.opcua, err = g.newOPCUA(cfg); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if g.rules, err = g.newRules(cfg); err != nil {
		return err
	}
	g.memret = newMemReturner(g.broker, log)
	g.reg = g.registry()
	var webSrv *web.Server
	if cfg.Web.Enabled {
		webSrv, err = web.New(cfg.Web, g, web.Options{DataDir: cfg.Gateway.DataDir, Logger: log.With("part", "web"), Version: opts.Version, GatewayID: g.gatewayID, RequestStop: opts.RequestStop, Updater: opts.Updater})
		if err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
	}

	// Everything is bound: run.
	brokerCtx, stopBroker := context.WithCancel(context.Background())
	defer stopBroker()
	brokerDone := make(chan error, 1)
	go func() { brokerDone <- g.broker.Run(brokerCtx) }()
	defer func() {
		// An early return: whatever still runs stops here.
		if err := g.sup.StopAll(stopBudget(g.running())); err != nil {
			log.Error("parts abandoned", "error", err)
		}
	}()
	g.startBridge()
	if g.sn != nil {
		g.start(supervise.Part{Name: "mqttsn", Run: g.sn.Run})
	}
	if g.coap != nil {
		g.start(supervise.Part{Name: "coap", Run: g.coap.Run})
	}
	g.start(modbusPart(g.modbus, cfg.Southbound.Modbus))
	g.start(serialPart(g.serial))
	g.startOPCUA(g.opcua, cfg.Southbound.OPCUA)
	g.start(rulesPart(g.rules))
	if webSrv != nil {
		g.start(supervise.Part{Name: "web", Run: webSrv.Run})
	}
	g.start(supervise.Part{Name: "board", Run: func(ctx context.Context) error { return g.board.Run(ctx, g.healthy) }})
	g.start(supervise.Part{Name: "probe", Run: g.probe, Progress: g.probeProgress, Bound: probeBound})
	g.start(memReturnPart(g.memret))
	for _, p := range opts.extraParts {
		g.start(p)
	}

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
	sysEvery := cfg.Broker.SysInterval
	if sysEvery <= 0 {
		sysEvery = 10 * time.Second
	}
	sys := time.NewTicker(sysEvery)
	defer sys.Stop()
	g.publishParts()
	for {
		select {
		case <-ctx.Done():
			return g.shutdown(stopBroker, brokerDone)
		case <-g.restart:
			log.Info("restart requested: stopping the gateway to start it again", "settings", pendingNames(g.pending()))
			return errors.Join(ErrRestart, g.shutdown(stopBroker, brokerDone))
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
		case <-sys.C:
			g.publishParts()
		}
	}
}

// intakeParts are the parts stopped before the broker: the page and
// whatever brings data in, and memreturn, which would take the broker's
// clients leaving for a storm.
var intakeParts = []string{"web", "mqttsn", "coap", "modbus", "serial", "opcua", "probe", "memreturn"}

// shutdown stops everything within the stop budget: intake first, then
// the broker, then the uplink, then what is left (the board); the store
// closes after Run returns. Each stage gets a share of the budget in
// proportion to its parts (the broker counts as one); a part that does not
// stop in time is abandoned, and the error names it.
func (g *gateway) shutdown(stopBroker context.CancelFunc, brokerDone <-chan error) error {
	g.log.Info("fieldgate stopping")
	g.board.Stopping()
	budget := stopBudget(g.running())
	deadline := time.Now().Add(budget)
	share := func(n, after int) time.Duration {
		return time.Until(deadline) * time.Duration(n) / time.Duration(n+after)
	}
	uplinkParts := []string{"uplink", "uplink-status"}
	rest := len(g.sup.Stats()) - len(intakeParts)
	var errs []error
	if err := g.sup.Stop(share(len(intakeParts), 1+max(rest, 0)), intakeParts...); err != nil {
		errs = append(errs, err)
	}
	stopBroker()
	t := time.NewTimer(max(share(1, max(len(g.sup.Stats()), 1)), 0))
	select {
	case err := <-brokerDone:
		if err != nil {
			errs = append(errs, err)
		}
	case <-t.C:
		g.log.Error("part did not stop in time; abandoned", "part", "broker")
		errs = append(errs, errors.New("gateway: the broker did not stop in time"))
	}
	t.Stop()
	if err := g.sup.Stop(share(len(uplinkParts), 1), uplinkParts...); err != nil {
		errs = append(errs, err)
	}
	if err := g.sup.StopAll(max(time.Until(deadline), 0)); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		err := errors.Join(errs...)
		g.log.Error("fieldgate stopped, abandoning parts", "budget", budget, "error", err)
		return err
	}
	g.log.Info("fieldgate stopped")
	return nil
}

// stopBudget is the config's stop budget, or its default.
func stopBudget(c config.Config) time.Duration {
	if c.Gateway.StopBudget > 0 {
		return c.Gateway.StopBudget
	}
	return 10 * time.Second
}

// start hands p to the supervisor, which runs and restarts it.
func (g *gateway) start(p supervise.Part) {
	if err := g.sup.Start(p); err != nil {
		g.log.Error("part not started", "part", p.Name, "error", err)
	}
}

// stop stops the named parts (in reverse start order) within the stop
// budget; a part that does not stop in time is abandoned and logged.
func (g *gateway) stop(names ...string) {
	if err := g.sup.Stop(stopBudget(g.running()), names...); err != nil {
		g.log.Error("parts abandoned", "error", err)
	}
}

// probeBound is how long the bus may go without delivering the probe
// (published every second) before the probe part counts as stuck.
const probeBound = 5 * time.Second

// probeProgress is when the probe last came through the bus.
func (g *gateway) probeProgress() time.Time {
	return time.Unix(0, g.probeSeen.Load())
}

// modbusPart is the supervised part of a Modbus service built from cfg. A
// line that completes no poll for its bound counts as stuck (see
// modbusBound).
func modbusPart(svc *modbus.Service, cfg modbus.Config) supervise.Part {
	return supervise.Part{Name: "modbus", Run: svc.Run, Progress: svc.Progress, Bound: modbusBound(cfg)}
}

// modbusBound is how long the Modbus service may go without completing a
// poll: three times the longest poll interval plus one round in which every
// transaction of every device times out after all its retries, and never
// less than 10 s.
func modbusBound(cfg modbus.Config) time.Duration {
	longest := modbus.DefaultInterval
	var round time.Duration
	for _, d := range cfg.Devices {
		timeout := d.Timeout
		if timeout <= 0 {
			timeout = modbus.DefaultTimeout
		}
		groups := max(len(d.PollGroups), 1)
		for _, pg := range d.PollGroups {
			longest = max(longest, pg.Interval)
		}
		round += (timeout + d.RequestDelay) * time.Duration(d.Retries+1) * time.Duration(groups)
	}
	return max(3*(longest+round), 10*time.Second)
}

// uplinkBound is how long the uplink may hold messages without its state
// machine advancing (a state change, a retry or an acknowledgement).
const uplinkBound = 5 * time.Minute

// uplinkProgress reports the bridge's progress; a bridge with nothing to
// send, or waiting for the wall clock, is not stuck.
func uplinkProgress(br *uplink.Bridge, q *store.Outbox) func() time.Time {
	return func() time.Time {
		if q == nil || q.Stats().Depth == 0 || br.Status().State == "waiting for the clock" {
			return time.Now()
		}
		return br.Progress()
	}
}

// partsStatus is what $SYS/fieldgate/parts carries.
type partsStatus struct {
	Healthy bool                  `json:"healthy"`
	Error   string                `json:"error,omitempty"`
	Parts   []supervise.PartStats `json:"parts"`
	// Restart names the parts that wait for a restart to run saved
	// settings (GET /api/v1/status has the settings).
	Restart []string `json:"restart,omitempty"`
}

// publishParts publishes every part's state, restarts and last progress
// as JSON on $SYS/fieldgate/parts (retained).
func (g *gateway) publishParts() {
	st := partsStatus{Healthy: true, Parts: g.sup.Stats(), Restart: pendingParts(g.pending())}
	if err := g.sup.Healthy(); err != nil {
		st.Healthy, st.Error = false, err.Error()
	}
	payload, err := json.Marshal(st)
	if err == nil {
		err = g.broker.Publish(context.Background(), bus.Message{Topic: "$SYS/fieldgate/parts", Payload: payload, Retain: true, ContentType: "application/json"})
	}
	if err != nil {
		g.log.Debug("parts status not published", "error", err)
	}
}

// newBridge builds a bridge for cfg, opening the outbox when the uplink is
// enabled for the first time.
func (g *gateway) newBridge(cfg uplink.Config, id string) (*uplink.Bridge, error) {
	opts := uplink.Options{Bus: g.broker, GatewayID: id, Logger: g.log, Now: g.clk.Now}
	if cfg.Enabled {
		if g.obox == nil {
			q, err := openOutbox(cfg, g.running().Gateway.DataDir, g.board.ReserveReached, g.clk.Now, g.log.With("part", "outbox"), g.opts.outboxHook)
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
	g.mu.Lock()
	br, q := g.bridge, g.obox
	g.mu.Unlock()
	if q != nil && g.outboxWatched.CompareAndSwap(false, true) {
		g.start(outboxPart(q, cmp.Or(g.opts.outboxBound, outboxBound)))
	}
	g.start(supervise.Part{Name: "uplink", Run: br.Run, Progress: uplinkProgress(br, q), Bound: uplinkBound})
	if q != nil {
		every := g.running().Broker.SysInterval
		g.start(supervise.Part{Name: "uplink-status", Run: func(ctx context.Context) error {
			publishUplinkStatus(ctx, g.broker, br, q, every, g.log)
			return nil
		}})
	}
}

// healthy is the board's health check: the watchdog is fed, and /readyz
// passes, only while it does. The bus must have dispatched the probe, the
// main loop must have run recently, and no part may be failing past what
// its restarts fix.
func (g *gateway) healthy() error {
	return errors.Join(g.live.Stale(30*time.Second), g.sup.Healthy())
}

// probe publishes a message to itself every second through the broker; its
// arrival is the bus's heartbeat.
func (g *gateway) probe(ctx context.Context) error {
	const topic = "$fieldgate/probe" // clients cannot subscribe to $fieldgate/
	unsub, err := g.broker.Subscribe(topic, func(bus.Message) {
		g.live.Beat("bus")
		g.probeSeen.Store(time.Now().UnixNano())
	})
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
	br, q, mb, sr, ua := g.bridge, g.obox, g.modbus, g.serial, g.opcua
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
	if ua != nil {
		for _, s := range ua.Stats() {
			line.Devices++
			if s.Online {
				line.DevicesOK++
			}
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

// running returns a copy of the running config: the config the parts run
// with, which differs from the saved one while a change waits for a
// restart.
func (g *gateway) running() config.Config { return g.conf.Running() }

// gatewayID is the running gateway id: the configured one, or else the
// board's (or host's) default.
func (g *gateway) gatewayID() string {
	if id := g.running().Gateway.ID; id != "" {
		return id
	}
	return g.defaultID
}

// pending lists the saved settings that wait for a restart.
func (g *gateway) pending() []pendingKey {
	return pending(g.conf.Both())
}

// ErrRestart is returned by Run after the gateway stopped because a
// restart was asked for (the page's "Restart now"): the caller starts it
// again (cmd/fieldgate exits under systemd, whose Restart=always starts a
// new process, and replaces itself with a fresh copy otherwise).
var ErrRestart = errors.New("gateway: restart requested")

// requestRestart asks the main loop to stop the gateway for a restart.
func (g *gateway) requestRestart() {
	select {
	case g.restart <- struct{}{}:
	default:
	}
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
	if _, err := g.apply(ctx, next); err != nil {
		return nil, err
	}
	g.log.Info("config reloaded", "path", path)
	return pendingNames(g.pending()), nil
}
