package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/gateway/web"
	"github.com/fieldgate/fieldgate/uplink"
)

// The gateway is the setup page's Backend (gateway/web).
var _ web.Backend = (*gateway)(nil)

// Config returns the saved (desired) config: what the config file holds
// and the page edits. The parts run with it but for the settings that wait
// for a restart (Status().Restart).
func (g *gateway) Config() config.Config { return g.conf.Desired() }

// Status is the overview of the page.
func (g *gateway) Status() web.Status {
	g.mu.Lock()
	br, q, mb, sr := g.bridge, g.obox, g.modbus, g.serial
	g.mu.Unlock()
	info := g.broker.Info()
	st := web.Status{
		Version:     g.opts.Version,
		Started:     g.started,
		GatewayID:   g.gatewayID(),
		Clients:     map[string]int{},
		MessagesIn:  info.MessagesReceived,
		MessagesOut: info.MessagesSent,
		Uplink:      br.Status(),
		Parts:       g.partsStatus(),
		Restart:     g.restartStatus(),
	}
	if g.rules != nil {
		rs := g.rules.Stats()
		st.Rules = &rs
	}
	for _, c := range g.broker.Clients() {
		st.Clients[c.Listener]++
	}
	board := map[string]any{"identity": g.board.Identity()}
	if h, err := g.board.Health(); err == nil {
		board["health"] = h
	}
	st.Board = board
	if q != nil {
		os := q.Stats()
		st.Outbox = web.OutboxStatus{Messages: os.Depth, Bytes: os.Bytes, Dropped: int64(os.Drops.Total())}
		if os.OldestAge > 0 {
			st.Outbox.Oldest = time.Now().Add(-os.OldestAge)
		}
	}
	mbStats := map[string]*web.DeviceStats{}
	for _, ds := range mb.Stats() {
		mbStats[ds.Name] = &web.DeviceStats{Polls: ds.Polls, FailedPolls: ds.FailedPolls, Requests: ds.Requests, Errors: ds.Errors,
			Writes: ds.Writes, WriteErrors: ds.WriteErrors,
			RoundTripP50Ms: float64(ds.RoundTripP50.Microseconds()) / 1000, RoundTripP99Ms: float64(ds.RoundTripP99.Microseconds()) / 1000}
	}
	for _, d := range mb.Devices() {
		st.Devices = append(st.Devices, web.DeviceStatus{Name: d.Name, Kind: "modbus-" + d.Transport, Online: d.Online, LastError: d.LastError, Stats: mbStats[d.Name]})
	}
	for _, s := range sr.Stats() {
		st.Devices = append(st.Devices, web.DeviceStatus{Name: s.Name, Kind: "serial", Online: s.Online, LastError: s.LastError})
	}
	for _, s := range g.OPCUAServers() {
		st.Devices = append(st.Devices, web.DeviceStatus{Name: s.Name, Kind: "opcua", Online: s.State == "online", LastError: s.LastError})
	}
	return st
}

// Clients lists the connected clients of every listener and gateway.
func (g *gateway) Clients() []web.Client {
	var out []web.Client
	for _, c := range g.broker.Clients() {
		proto := "mqtt " + map[byte]string{3: "3.1", 4: "3.1.1", 5: "5"}[c.ProtocolVersion]
		switch c.Listener {
		case "mqttsn":
			proto = "mqtt-sn"
		case "coap":
			proto = "coap"
		}
		out = append(out, web.Client{ID: c.ID, Username: c.Username, Listener: c.Listener, Remote: c.Remote, Protocol: proto})
	}
	return out
}

// DisconnectClient drops one client.
func (g *gateway) DisconnectClient(id string) error { return g.broker.DisconnectClient(id) }

// Publish publishes the page's test message on the broker.
func (g *gateway) Publish(ctx context.Context, m bus.Message) error {
	return g.broker.Publish(ctx, m)
}

// Subscribe feeds the live view.
func (g *gateway) Subscribe(filter string, h bus.Handler) (func(), error) {
	return g.broker.Subscribe(filter, h)
}

// TestUplink tries uplink settings without applying them.
func (g *gateway) TestUplink(ctx context.Context, c uplink.Config) error {
	return uplink.TestConnection(ctx, c, g.gatewayID())
}

// ReadNow reads a Modbus device's points once.
func (g *gateway) ReadNow(ctx context.Context, device string) (web.Reading, error) {
	g.mu.Lock()
	mb := g.modbus
	g.mu.Unlock()
	snap, err := mb.ReadNow(ctx, device)
	if err != nil {
		return web.Reading{}, err
	}
	r := web.Reading{Time: snap.Time}
	for _, p := range snap.Readings {
		var v any
		if b, err := json.Marshal(p.Value); err == nil {
			_ = json.Unmarshal(b, &v)
		}
		r.Points = append(r.Points, web.PointReading{Name: p.Point, Value: v, Unit: p.Unit, Raw: p.Raw, Error: p.Err})
	}
	return r, nil
}

// WritePoint writes value to a writable Modbus point, through the same
// command topic and result as any other client ({prefix}/{device}/{point}/set),
// and waits for the result.
func (g *gateway) WritePoint(ctx context.Context, device, point string, value any) error {
	prefix := g.running().Southbound.Modbus.Prefix
	return g.writeVia(ctx, prefix+"/"+device+"/"+point+"/set", device, point, value)
}

// SerialPorts lists the board's serial ports.
func (g *gateway) SerialPorts() ([]web.SerialPort, error) {
	g.mu.Lock()
	sr := g.serial
	g.mu.Unlock()
	ports, err := sr.Ports()
	if err != nil {
		return nil, err
	}
	out := make([]web.SerialPort, 0, len(ports))
	for _, p := range ports {
		path := p.Name
		if p.ByID != "" {
			path = p.ByID
		}
		desc := strings.TrimSpace(p.Manufacturer + " " + p.Product)
		if p.USB {
			desc = strings.TrimSpace(fmt.Sprintf("%s (USB %s:%s) %s", desc, p.VID, p.PID, p.Name))
		}
		out = append(out, web.SerialPort{Path: path, Description: desc})
	}
	return out, nil
}

// Logs returns recent log records.
func (g *gateway) Logs(minLevel slog.Level, part string, max int) []web.LogEntry {
	return g.ring.Logs(minLevel, part, max)
}

// Registry holds the metrics served on /metrics.
func (g *gateway) Registry() *prometheus.Registry { return g.reg }

// Ready reports whether the broker serves, the store is open and the
// gateway is healthy (the check that also gates the systemd watchdog: a
// part that its restarts do not bring back fails it).
func (g *gateway) Ready() bool {
	select {
	case <-g.ready:
		return g.healthy() == nil
	default:
		return false
	}
}
