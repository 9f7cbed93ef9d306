package gateway

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/gateway/supervise"
	"github.com/fieldgate/fieldgate/internal/atomicfile"
	"github.com/fieldgate/fieldgate/southbound/modbus"
	"github.com/fieldgate/fieldgate/southbound/serial"
)

// apply makes next the running config: what can change live changes (the
// broker's users, ACL, limits and rules; the uplink, Modbus devices and
// serial sensors, whose parts are restarted with the new settings), and the
// names of what needs a restart are returned and logged. An invalid config
// changes nothing.
//
// The caller holds applyMu, across reading or writing the config file too
// (ApplyConfig, reload), so that the file and the running config change
// together: one config change at a time, whoever asks.
func (g *gateway) apply(ctx context.Context, next config.Config) ([]string, error) {
	if err := next.Validate(); err != nil {
		return nil, err
	}
	g.mu.Lock()
	cur := g.cfg
	g.mu.Unlock()

	restart, err := g.broker.Reload(next.Broker)
	if err != nil {
		return nil, err
	}
	for _, s := range []struct {
		name    string
		changed bool
	}{
		{"gateway.data_dir", next.Gateway.DataDir != cur.Gateway.DataDir},
		{"log", next.Log != cur.Log},
		{"web", next.Web != cur.Web},
		{"mqttsn", !reflect.DeepEqual(next.MQTTSN, cur.MQTTSN)},
		{"coap", !reflect.DeepEqual(next.CoAP, cur.CoAP)},
		{"board", next.Board != cur.Board},
	} {
		if s.changed {
			restart = append(restart, s.name)
		}
	}
	// Parts that restart in place. A part that cannot be built with the new
	// settings keeps running with the old ones.
	var errs []error
	// The gateway id (the site name the page asks for on first boot)
	// changes live: it names the gateway on the page and towards the cloud,
	// so the uplink restarts with it.
	oldID := g.gatewayID()
	if next.Gateway.ID != cur.Gateway.ID {
		g.setGatewayID(gatewayIDOr(next.Gateway.ID, g.board.Identity().DefaultID()))
	}
	if !reflect.DeepEqual(next.Uplink, cur.Uplink) || g.gatewayID() != oldID {
		if err := g.replaceBridge(next); err != nil {
			errs = append(errs, err)
			next.Uplink = cur.Uplink
			next.Gateway.ID = cur.Gateway.ID
			g.setGatewayID(oldID)
		}
	}
	if !reflect.DeepEqual(next.Southbound.Modbus, cur.Southbound.Modbus) {
		svc, err := modbus.New(next.Southbound.Modbus, g.broker, modbus.Options{Logger: g.log.With("part", "modbus")})
		if err != nil {
			errs = append(errs, fmt.Errorf("southbound.modbus: %w", err))
			next.Southbound.Modbus = cur.Southbound.Modbus
		} else {
			var keep []string
			for _, d := range next.Southbound.Modbus.Devices {
				keep = append(keep, d.Name)
			}
			swapService(g, modbusPart(svc, next.Southbound.Modbus), &g.modbus, svc, keep)
		}
	}
	if !reflect.DeepEqual(next.Southbound.Serial, cur.Southbound.Serial) {
		svc, err := serial.New(next.Southbound.Serial, g.broker, g.log.With("part", "serial"))
		if err != nil {
			errs = append(errs, fmt.Errorf("southbound.serial: %w", err))
			next.Southbound.Serial = cur.Southbound.Serial
		} else {
			var keep []string
			for _, sn := range next.Southbound.Serial.Sensors {
				keep = append(keep, sn.Name)
			}
			swapService(g, supervise.Part{Name: "serial", Run: svc.Run}, &g.serial, svc, keep)
		}
	}
	g.mu.Lock()
	g.cfg = next
	g.mu.Unlock()
	if len(restart) > 0 {
		g.log.Warn("config change: these settings need a restart and keep their running values until then", "settings", restart)
	}
	return restart, errors.Join(errs...)
}

// southboundService is a Modbus or serial service as a config change
// swaps it.
type southboundService interface {
	KeepStatus(names []string)
	Run(ctx context.Context) error
}

// swapService replaces the running part p.Name, held in *slot, with next
// (run as p). The devices named in keep stay in the new config: the old
// service leaves their retained status alone, so they do not blink offline.
func swapService[S southboundService](g *gateway, p supervise.Part, slot *S, next S, keep []string) {
	g.mu.Lock()
	old := *slot
	g.mu.Unlock()
	old.KeepStatus(keep)
	g.stop(p.Name)
	g.mu.Lock()
	*slot = next
	g.mu.Unlock()
	g.start(p)
}

// replaceBridge builds the uplink for next and swaps it in: the new bridge's
// taps are installed before the old one's are removed, so no message
// escapes the outbox in between (one may be queued twice: at least once).
func (g *gateway) replaceBridge(next config.Config) error {
	br, err := g.newBridge(next.Uplink)
	if err != nil {
		return fmt.Errorf("uplink: %w", err)
	}
	g.stop("uplink", "uplink-status")
	g.mu.Lock()
	old := g.bridge
	g.bridge = br
	g.mu.Unlock()
	old.Close()
	g.startBridge()
	return nil
}

// ApplyConfig validates c, writes it atomically to the config file and
// applies it (web.Backend). All of it happens under applyMu, so that
// concurrent changes (two browsers, a script, a SIGHUP) are serialised and
// the file always holds the running config: the file is written first (a
// write that fails changes nothing), and written again with what runs when
// a part kept its old settings or the broker refused the change.
func (g *gateway) ApplyConfig(ctx context.Context, c config.Config) ([]string, error) {
	if g.opts.Override != nil {
		g.opts.Override(&c)
	}
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	path := g.path()
	if path == "" {
		path = g.opts.ConfigWritePath
	}
	if path == "" {
		return nil, errors.New("no config file to write (start fieldgate with -config)")
	}
	if err := writeConfigFile(path, c); err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.configPath = path
	g.mu.Unlock()
	g.log.Info("config written", "path", path)
	restart, err := g.apply(ctx, c)
	if running := g.Config(); !reflect.DeepEqual(running, c) {
		// apply kept some running values: the file follows.
		if werr := writeConfigFile(path, running); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	return restart, err
}

// configHeader starts every config file the gateway writes.
const configHeader = "# Written by fieldgate's setup page; `fieldgate config default` shows every setting with comments.\n"

// writeConfigFile writes c atomically to path, secrets in clear (the file
// is the gateway's own, mode 0600). A config whose file would be larger than
// config.MaxFileSize is refused, since the next start could not read it.
func writeConfigFile(path string, c config.Config) error {
	data, err := config.Marshal(c)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	data = append([]byte(configHeader), data...)
	if err := config.CheckSize(len(data)); err != nil {
		return err
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("config: write %s: %w", path, err)
	}
	return nil
}
