package web

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/rules"
	"github.com/fieldgate/fieldgate/uplink"
)

// Backend is what the page and the API need from the running gateway. The
// gateway package implements it; every method must be safe for concurrent
// use and must not return secrets (password hashes, keys) except inside
// Config, which the web package redacts itself.
type Backend interface {
	// Config returns the saved config: what the config file holds. It
	// differs from the running one while a setting waits for a restart
	// (Status.Restart).
	Config() config.Config
	// ApplyConfig validates c, writes the config file atomically and applies
	// it live. restart names what changed but only takes effect after a
	// restart. A validation error is "path: reason" lines joined with
	// errors.Join (as config.Config.Validate returns them). Concurrent calls
	// (and reloads) are serialised: when it returns, the config file holds
	// the running config.
	ApplyConfig(ctx context.Context, c config.Config) (restart []string, err error)
	// Status is the overview.
	Status() Status
	// Clients lists the connected MQTT, MQTT-SN and CoAP clients.
	Clients() []Client
	// DisconnectClient drops one client by id.
	DisconnectClient(id string) error
	// Subscribe calls h for every message matching filter until the
	// returned function is called. h runs in the publisher's goroutine and
	// must only enqueue.
	Subscribe(filter string, h bus.Handler) (unsubscribe func(), err error)
	// TestUplink tries the settings in c without applying them and returns
	// what failed in plain words (DNS, UDP blocked, TLS verification, bad
	// credentials), or nil when a connection was made.
	TestUplink(ctx context.Context, c uplink.Config) error
	// ReadNow reads every point of a Modbus device once.
	ReadNow(ctx context.Context, device string) (Reading, error)
	// WritePoint writes value to a writable point.
	WritePoint(ctx context.Context, device, point string, value any) error
	// SerialPorts lists the serial ports present on the board.
	SerialPorts() ([]SerialPort, error)
	// Logs returns up to max recent log entries at minLevel or above, of
	// one part ("" for all), oldest first. LogRing implements it.
	Logs(minLevel slog.Level, part string, max int) []LogEntry
	// Registry holds the gateway's metrics, including the Go runtime and
	// process collectors; it is served on /metrics.
	Registry() *prometheus.Registry
	// Ready reports whether the broker listens and the store is open.
	Ready() bool
	// Publish publishes a message on the local broker as the page (the
	// Live page's test-publish box).
	Publish(ctx context.Context, m bus.Message) error
	// Restart stops the gateway cleanly so that it starts again with the
	// saved config (Status.Restart); it returns at once.
	Restart() error
}

// Status is the overview of the running gateway.
type Status struct {
	Version   string    `json:"version"`
	Started   time.Time `json:"started"`
	GatewayID string    `json:"gateway_id"`
	// Board is the board's identity and health (model, serial, MACs,
	// temperature, disk), when a board is present.
	Board map[string]any `json:"board,omitempty"`
	// Clients counts connected clients per listener or protocol ("tcp",
	// "websocket", "mqttsn", "coap"...).
	Clients map[string]int `json:"clients"`
	// MessagesIn and MessagesOut count messages received and sent by the
	// broker since start; the page derives the rates.
	MessagesIn  int64          `json:"messages_in"`
	MessagesOut int64          `json:"messages_out"`
	Uplink      uplink.Status  `json:"uplink"`
	Outbox      OutboxStatus   `json:"outbox"`
	Devices     []DeviceStatus `json:"devices"`
	// Parts are the supervised parts: state, last progress, restarts.
	Parts []PartStatus `json:"parts"`
	// Restart says which saved settings wait for a restart.
	Restart RestartStatus `json:"restart"`
	// Rules are the edge rules' counters (per rule and per action), when
	// the rules engine runs.
	Rules *rules.Stats `json:"rules,omitempty"`
}

// OutboxStatus is the durable queue towards the cloud.
type OutboxStatus struct {
	Messages int64     `json:"messages"`
	Bytes    int64     `json:"bytes"`
	Oldest   time.Time `json:"oldest,omitzero"`
	Dropped  int64     `json:"dropped"`
}

// DeviceStatus is one southbound device.
type DeviceStatus struct {
	Name      string    `json:"name"`
	Kind      string    `json:"kind"` // modbus-tcp, modbus-rtu, serial, opcua
	Online    bool      `json:"online"`
	LastError string    `json:"last_error,omitempty"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
	// Stats are the device's poll counters (Modbus devices).
	Stats *DeviceStats `json:"stats,omitempty"`
}

// Client is one connected client of the broker or of a protocol gateway.
type Client struct {
	ID        string    `json:"id"`
	Username  string    `json:"username,omitempty"`
	Listener  string    `json:"listener"`
	Remote    string    `json:"remote"`
	Protocol  string    `json:"protocol"` // e.g. "mqtt 5", "mqtt-sn", "coap"
	Connected time.Time `json:"connected,omitzero"`
}

// Reading is the result of a Modbus "read now".
type Reading struct {
	Time   time.Time      `json:"time"`
	Points []PointReading `json:"points"`
}

// PointReading is one point of a Reading: the decoded value and the raw
// registers (or bits) it came from.
type PointReading struct {
	Name  string   `json:"name"`
	Value any      `json:"value,omitempty"`
	Unit  string   `json:"unit,omitempty"`
	Raw   []uint16 `json:"raw,omitempty"`
	Error string   `json:"error,omitempty"`
}

// SerialPort is a serial port present on the board.
type SerialPort struct {
	Path        string `json:"path"`
	Description string `json:"description,omitempty"`
}

// LogEntry is one recent log record.
type LogEntry struct {
	Time    time.Time      `json:"time"`
	Level   string         `json:"level"`
	Part    string         `json:"part,omitempty"`
	Message string         `json:"message"`
	Attrs   map[string]any `json:"attrs,omitempty"`
}
