package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/gateway/supervise"
	"github.com/fieldgate/fieldgate/gateway/web"
	"github.com/fieldgate/fieldgate/southbound/opcua"
)

// The OPC UA southbound: one supervised part, "opcua", that runs only
// while servers are configured. Its application certificate and trust list
// live under gateway.data_dir/opcua/ (the package's defaults for DataDir).

// The gateway is the page's OPC UA backend too.
var _ web.OPCUABackend = (*gateway)(nil)

// newOPCUA builds the OPC UA service for cfg, or nil when cfg names no
// server.
func (g *gateway) newOPCUA(cfg config.Config) (*opcua.Service, error) {
	if len(cfg.Southbound.OPCUA.Servers) == 0 {
		return nil, nil
	}
	svc, err := opcua.New(cfg.Southbound.OPCUA, g.broker, opcua.Options{
		Logger:  g.log, // the service adds part=opcua
		Now:     g.clk.Now,
		DataDir: cfg.Gateway.DataDir,
	})
	if err != nil {
		return nil, fmt.Errorf("southbound.opcua: %w", err)
	}
	// The application certificate is made now rather than at the first
	// secure connection: a server's administrator can then trust it (the
	// page offers it for download) before the gateway first connects.
	if _, err := svc.ClientCertificate(); err != nil {
		g.log.Warn("OPC UA application certificate not made", "part", "opcua", "dir", filepath.Join(cfg.Gateway.DataDir, "opcua"), "error", err)
	}
	return svc, nil
}

// opcuaPart is the supervised part of an OPC UA service built from cfg.
func opcuaPart(svc *opcua.Service, cfg opcua.Config) supervise.Part {
	return supervise.Part{Name: "opcua", Run: svc.Run, Progress: svc.Progress, Bound: opcuaBound(cfg)}
}

// opcuaBound is how long the server worker furthest behind may go without
// going round its loop. A worker looks at its connection at least every
// second (also while it waits to reconnect) unless it is blocked in a
// request, which its timeout ends; polls come every interval. So: three
// longest intervals plus four longest timeouts, and never less than 30 s.
func opcuaBound(cfg opcua.Config) time.Duration {
	var interval, timeout time.Duration
	for _, s := range cfg.Servers {
		s = opcua.WithDefaults(s)
		interval = max(interval, s.Interval)
		timeout = max(timeout, s.Timeout)
	}
	return max(3*interval+4*timeout, 30*time.Second)
}

// startOPCUA runs svc (nil: nothing) as the part "opcua".
func (g *gateway) startOPCUA(svc *opcua.Service, cfg opcua.Config) {
	if svc != nil {
		g.start(opcuaPart(svc, cfg))
	}
}

// reloadOPCUA applies a change of the OPC UA section live: a new service
// built from it replaces the running one under the supervisor (servers
// that stay keep their retained status), is started when the first server
// is added, and is stopped when the last one is removed.
func reloadOPCUA(g *gateway, cur, next config.Config) ([]string, error) {
	if reflect.DeepEqual(next.Southbound.OPCUA, cur.Southbound.OPCUA) {
		return nil, nil
	}
	svc, err := g.newOPCUA(next)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	old := g.opcua
	g.mu.Unlock()
	if old != nil {
		var keep []string
		for _, s := range next.Southbound.OPCUA.Servers {
			keep = append(keep, s.Name)
		}
		old.KeepStatus(keep)
		g.stop("opcua")
	}
	g.mu.Lock()
	g.opcua = svc
	g.mu.Unlock()
	g.startOPCUA(svc, next.Southbound.OPCUA)
	return nil, nil
}

// opcuaService is the running OPC UA service, or nil.
func (g *gateway) opcuaService() *opcua.Service {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.opcua
}

// errNoOPCUA is the answer of the page's OPC UA calls while no server is
// configured.
var errNoOPCUA = errors.New("no OPC UA server is configured")

// OPCUAServers is every configured server's state and counters
// (web.OPCUABackend).
func (g *gateway) OPCUAServers() []web.OPCUAServerStatus {
	svc := g.opcuaService()
	if svc == nil {
		return nil
	}
	stats := map[string]opcua.ServerStats{}
	for _, st := range svc.Stats() {
		stats[st.Name] = st
	}
	var out []web.OPCUAServerStatus
	for _, s := range svc.Servers() {
		st := stats[s.Name]
		ws := web.OPCUAServerStatus{Name: s.Name, Endpoint: s.Endpoint, State: "offline", LastError: s.LastError,
			Stats: web.OPCUAStats{Connects: st.Connects, Reconnects: st.Reconnects, Resumed: st.Resumed, Recreated: st.Recreated, MonitoredItems: st.Subscribed, PolledPoints: st.Polled,
				Notifications: st.Notifications, Reads: st.Reads, Writes: st.Writes, WriteErrors: st.WriteErrors, Errors: st.Errors,
				RoundTripP50Ms: float64(st.RoundTripP50.Microseconds()) / 1000, RoundTripP99Ms: float64(st.RoundTripP99.Microseconds()) / 1000}}
		switch {
		case s.Online:
			ws.State = "online"
		case s.Untrusted != nil:
			ws.State = "untrusted"
		}
		if c := cmpCert(s.Untrusted, s.Server); c != nil {
			ws.Certificate = &web.OPCUACertificate{Thumbprint: c.Thumbprint, Subject: c.Subject, NotAfter: c.NotAfter, Trusted: s.Untrusted == nil}
		}
		out = append(out, ws)
	}
	return out
}

// cmpCert is the first certificate that is not nil.
func cmpCert(cs ...*opcua.Certificate) *opcua.Certificate {
	for _, c := range cs {
		if c != nil {
			return c
		}
	}
	return nil
}

// OPCUABrowse lists the children of node on a server (web.OPCUABackend).
func (g *gateway) OPCUABrowse(ctx context.Context, server, node string) ([]web.OPCUANode, error) {
	svc := g.opcuaService()
	if svc == nil {
		return nil, errNoOPCUA
	}
	entries, err := svc.Browse(ctx, server, node)
	if err != nil {
		return nil, err
	}
	out := make([]web.OPCUANode, len(entries))
	for i, e := range entries {
		out[i] = web.OPCUANode{NodeID: e.NodeID, BrowseName: e.BrowseName, BrowsePath: e.BrowsePath, DisplayName: e.DisplayName,
			Class: e.NodeClass, HasChildren: e.HasChildren, Type: e.DataType, Array: e.Array, Value: e.Value, Status: e.Status, Access: e.Access}
	}
	return out, nil
}

// OPCUATrust trusts the certificate the server presented, when its
// thumbprint is the one the page showed (web.OPCUABackend).
func (g *gateway) OPCUATrust(_ context.Context, server, thumbprint string) error {
	svc := g.opcuaService()
	if svc == nil {
		return errNoOPCUA
	}
	for _, s := range svc.Servers() {
		if s.Name != server {
			continue
		}
		c := cmpCert(s.Untrusted, s.Server)
		if c == nil {
			return fmt.Errorf("server %s has presented no certificate yet", server)
		}
		if !strings.EqualFold(c.Thumbprint, thumbprint) {
			return fmt.Errorf("server %s now presents the certificate %s, not %s: look at it again before trusting it", server, c.Thumbprint, thumbprint)
		}
		if _, err := svc.Trust(c.DER); err != nil {
			return fmt.Errorf("trust %s: %w", server, err)
		}
		g.log.Info("OPC UA server certificate trusted", "part", "opcua", "server", server, "thumbprint", c.Thumbprint, "subject", c.Subject)
		return nil
	}
	return fmt.Errorf("no OPC UA server %s", server)
}

// OPCUAClientCertificate is the gateway's application certificate
// (web.OPCUABackend).
func (g *gateway) OPCUAClientCertificate() (web.OPCUACertificate, []byte, error) {
	svc := g.opcuaService()
	if svc == nil {
		return web.OPCUACertificate{}, nil, errNoOPCUA
	}
	c, err := svc.ClientCertificate()
	if err != nil {
		return web.OPCUACertificate{}, nil, err
	}
	return web.OPCUACertificate{Thumbprint: c.Thumbprint, Subject: c.Subject, NotAfter: c.NotAfter, Trusted: true}, c.DER, nil
}

// OPCUAWrite writes value to a point through its set command topic and
// waits for the result (web.OPCUABackend), as WritePoint does for Modbus.
func (g *gateway) OPCUAWrite(ctx context.Context, server, point string, value any) error {
	prefix := g.running().Southbound.OPCUA.Prefix
	if prefix == "" {
		prefix = opcua.DefaultPrefix
	}
	return g.writeVia(ctx, prefix+"/"+server+"/"+point+"/set", server, point, value)
}

// writeVia publishes a set command on topic as the page and waits for its
// result on topic/result: the page writes a point (Modbus or OPC UA) the way
// any MQTT client does (origin "$web").
func (g *gateway) writeVia(ctx context.Context, topic, device, point string, value any) error {
	id := "web-" + strconv.FormatInt(g.writeSeq.Add(1), 10)
	type result struct {
		ID  string `json:"id"`
		OK  bool   `json:"ok"`
		Err string `json:"err"`
	}
	got := make(chan result, 1)
	unsub, err := g.broker.Subscribe(topic+"/result", func(m bus.Message) {
		var r result
		if json.Unmarshal(m.Payload, &r) == nil && r.ID == id {
			select {
			case got <- r:
			default:
			}
		}
	})
	if err != nil {
		return err
	}
	defer unsub()
	payload, err := json.Marshal(map[string]any{"id": id, "v": value})
	if err != nil {
		return err
	}
	if err := g.broker.Publish(ctx, bus.Message{Topic: topic, Payload: payload, QoS: 1, Origin: "$web"}); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	select {
	case r := <-got:
		if !r.OK {
			return errors.New(r.Err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("write %s/%s: no result: %w", device, point, ctx.Err())
	}
}
