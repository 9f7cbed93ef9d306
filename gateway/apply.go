package gateway

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/gateway/supervise"
	"github.com/fieldgate/fieldgate/internal/atomicfile"
)

// apply makes next the saved (desired) config and applies what it can
// live, each key as its entry in reloaders says: the broker changes in
// place, the uplink, Modbus devices and serial sensors are rebuilt and
// swapped under the supervisor, and the rest keeps its running value until
// the gateway restarts (see pending). A part that cannot be built with its
// new settings keeps running with the old ones, and its section goes back
// to them in the saved config too; the error says why. An invalid config
// changes nothing. It returns the saved config.
//
// The caller holds applyMu, across reading or writing the config file too
// (ApplyConfig, reload), so that the file and the configs change together:
// one config change at a time, whoever asks.
func (g *gateway) apply(ctx context.Context, next config.Config) (config.Config, error) {
	if err := next.Validate(); err != nil {
		return config.Config{}, err
	}
	if err := next.Provision(); err != nil { // the files it names load
		return config.Config{}, err
	}
	cur := g.conf.Running()
	running, desired := next, next
	var errs []error
	for _, r := range reloaders {
		if r.reload == nil {
			if !equalAt(cur, next, r.key) {
				copyAt(&running, cur, r.key)
			}
			continue
		}
		restart, err := r.reload(g, cur, next)
		if err != nil {
			errs = append(errs, err)
			for _, k := range append([]string{r.key}, r.also...) {
				copyAt(&running, cur, k)
				copyAt(&desired, cur, k)
			}
			continue
		}
		for _, k := range restart {
			copyAt(&running, cur, k)
		}
	}
	g.conf.Set(running, desired)
	if p := pending(running, desired); len(p) > 0 {
		g.log.Warn("config change: these settings need a restart and keep their running values until then", "settings", pendingNames(p), "parts", pendingParts(p))
	}
	return desired, errors.Join(errs...)
}

// pendingNames are the keys of ks.
func pendingNames(ks []pendingKey) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.Key
	}
	return out
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
	br, err := g.newBridge(next.Uplink, gatewayIDOr(next.Gateway.ID, g.defaultID))
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
// the file always holds the saved (desired) config: the file is written
// first (a write that fails changes nothing), and written again when a part
// kept its old settings or the broker refused the change. It returns every
// saved setting that still waits for a restart (not only this change's).
func (g *gateway) ApplyConfig(ctx context.Context, c config.Config) ([]string, error) {
	if g.opts.Override != nil {
		g.opts.Override(&c)
	}
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := c.Provision(); err != nil { // before the file is written
		return nil, err
	}
	path := g.opts.ConfigWritePath // the saved config (the factory one is never written)
	if path == "" {
		path = g.path()
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
	desired, err := g.apply(ctx, c)
	if err != nil && !reflect.DeepEqual(desired, c) {
		// A part kept its running settings: the file follows.
		if werr := writeConfigFile(path, desired); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	return pendingNames(g.pending()), err
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
