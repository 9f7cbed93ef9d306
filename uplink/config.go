package uplink

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/check"
	"github.com/fieldgate/fieldgate/internal/secret"
)

// Config is the uplink section: where the cloud is, how to reach it, and
// which messages go up and come down.
type Config struct {
	// Enabled runs the bridge. Without it nothing is tapped or queued.
	Enabled bool `yaml:"enabled"`
	// Servers is the failover list, tried in order; after a failure the
	// next one is tried.
	Servers []Server `yaml:"servers"`
	// Transport is quic, tls, tcp or auto (QUIC first; after
	// quic_failures failed QUIC attempts in a row TLS, while QUIC is probed
	// every quic_probe and taken again as soon as it works).
	Transport    string        `yaml:"transport"`
	QUICFailures int           `yaml:"quic_failures"`
	QUICProbe    time.Duration `yaml:"quic_probe"`
	TLS          TLS           `yaml:"tls"`
	QUIC         QUIC          `yaml:"quic"`
	// ClientID towards the cloud; empty means the gateway id.
	ClientID string        `yaml:"client_id"`
	Username string        `yaml:"username"`
	Password secret.String `yaml:"password"`
	// KeepAlive is the MQTT keep alive towards the cloud.
	KeepAlive time.Duration `yaml:"keepalive"`
	// CleanSession false keeps the cloud session (and the downlink
	// subscriptions' queued commands) across reconnects.
	CleanSession bool `yaml:"clean_session"`
	// ConnectTimeout bounds one connection attempt (dial, handshake, CONNACK).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// BackoffMin and BackoffMax bound the reconnect delay, which doubles
	// from min to max after each failure, with jitter.
	BackoffMin time.Duration `yaml:"backoff_min"`
	BackoffMax time.Duration `yaml:"backoff_max"`
	// PathProbe is how often, while waiting out a backoff longer than it,
	// the bridge checks whether a server is reachable again (a TCP connect
	// to its TLS or TCP port, closed at once; a QUIC handshake for a
	// QUIC-only server). When one answers, the wait ends and the backoff
	// starts again from backoff_min: after an outage of any length the
	// bridge reconnects within about this interval. 0: no probe.
	PathProbe time.Duration `yaml:"path_probe"`
	// Inflight is how many QoS 1 publishes may wait for their PUBACK at
	// once. The drain rate is at most inflight ÷ round-trip time, so size
	// it for the link (the default, 1024, carries 10,000 messages/s at
	// 100 ms); keep it within the cloud broker's receive maximum.
	Inflight int `yaml:"inflight"`
	// Connections is how many MQTT connections carry the stream (each its
	// own QUIC or TCP connection, client ids id, id-1, id-2, ...). Messages
	// are spread by topic, so each topic keeps its order. On a lossy link a
	// single connection's congestion control caps the rate (about 2,600
	// messages/s at 50 ms and 1 % loss); several connections add up.
	Connections int `yaml:"connections"`
	// Forward rules select local messages for the cloud.
	Forward []ForwardRule `yaml:"forward"`
	// Downlink rules bring cloud messages into the local broker.
	Downlink []DownlinkRule `yaml:"downlink"`
	// Outbox bounds the durable queue of messages waiting for the cloud.
	Outbox OutboxLimits `yaml:"outbox"`
	// MinClock is the earliest wall clock time taken as plausible. Before
	// it (a board without RTC boots in 1970) no TLS connection is tried,
	// because certificates cannot be checked; messages keep queueing.
	MinClock string `yaml:"min_clock"`
}

// Server is one cloud broker. A port of 0 means that transport is not
// offered by this server.
type Server struct {
	Host     string `yaml:"host"`
	QUICPort int    `yaml:"quic_port"`
	TLSPort  int    `yaml:"tls_port"`
	TCPPort  int    `yaml:"tcp_port"`
}

// TLS is the client side TLS of the uplink (used by tls and quic).
type TLS struct {
	// CA is a PEM bundle of the authorities to trust; empty means the
	// system's.
	CA string `yaml:"ca"`
	// Cert and Key are the client certificate, when the cloud wants one.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ServerName overrides the name checked in the server certificate
	// (default: the server's host).
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify turns off certificate verification. Never in
	// production; a warning is logged at every connect.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// QUIC tunes the QUIC transport.
type QUIC struct {
	// KeepAlive is the QUIC keep-alive period (0: off).
	KeepAlive time.Duration `yaml:"keepalive"`
	// IdleTimeout closes a silent QUIC connection; keep it above 1.5 × the
	// MQTT keep alive.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// ForwardRule sends local messages matching Filter to the cloud under
// RemoteTopic, a template with {gateway_id}, {topic} (the local topic) and
// {suffix} (what the filter's wildcards matched). QoS caps the cloud QoS
// (0 or 1); QoS 1 and 2 local messages are made durable before their
// publisher is acknowledged, whatever this QoS.
type ForwardRule struct {
	Filter      string `yaml:"filter"`
	RemoteTopic string `yaml:"remote_topic"`
	QoS         int    `yaml:"qos"`
}

// DownlinkRule subscribes to Filter on the cloud and publishes what comes
// in locally under LocalTopic (same placeholders, {topic} being the cloud
// topic). A message that came down is never forwarded back up.
type DownlinkRule struct {
	Filter     string `yaml:"filter"`
	LocalTopic string `yaml:"local_topic"`
	QoS        int    `yaml:"qos"`
}

// OutboxLimits bound the durable queue.
type OutboxLimits struct {
	// MaxBytes and MaxMessages bound the queue (0: no limit).
	MaxBytes    int64 `yaml:"max_bytes"`
	MaxMessages int64 `yaml:"max_messages"`
	// Policy when full: drop_oldest or refuse_new (v5 publishers get 0x97).
	Policy string `yaml:"policy"`
	// TTL drops messages older than this (0: keep until delivered).
	TTL time.Duration `yaml:"ttl"`
}

// DefaultConfig is the uplink's built-in configuration: off, with every
// setting at the value it takes once enabled.
func DefaultConfig() Config {
	return Config{
		Transport:      "auto",
		QUICFailures:   3,
		QUICProbe:      time.Minute,
		QUIC:           QUIC{KeepAlive: 15 * time.Second, IdleTimeout: 90 * time.Second},
		KeepAlive:      30 * time.Second,
		CleanSession:   false,
		ConnectTimeout: 10 * time.Second,
		BackoffMin:     time.Second,
		BackoffMax:     time.Minute,
		PathProbe:      2 * time.Second,
		Inflight:       1024,
		Connections:    1,
		Outbox:         OutboxLimits{MaxBytes: 256 << 20, MaxMessages: 0, Policy: "drop_oldest"},
		MinClock:       "2025-01-01T00:00:00Z",
	}
}

// Validate checks the section and returns every problem, joined, each as
// "path: reason" relative to the section. A disabled uplink is still
// checked, so that turning it on cannot surprise.
func (c Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if c.Enabled && len(c.Servers) == 0 {
		add("servers", "at least one server is needed when the uplink is enabled")
	}
	switch c.Transport {
	case "quic", "tls", "tcp", "auto":
	default:
		add("transport", "must be one of quic, tls, tcp, auto, got %q", c.Transport)
	}
	for i, s := range c.Servers {
		p := fmt.Sprintf("servers[%d]", i)
		if s.Host == "" {
			add(p+".host", "must not be empty")
		}
		for name, port := range map[string]int{"quic_port": s.QUICPort, "tls_port": s.TLSPort, "tcp_port": s.TCPPort} {
			if port < 0 || port > 65535 {
				add(p+"."+name, "must be between 0 and 65535, got %d", port)
			}
		}
		if !s.offers(c.Transport) {
			add(p, "offers no port for transport %s", c.Transport)
		}
	}
	if c.QUICFailures < 1 || c.QUICFailures > 1000 {
		add("quic_failures", "must be between 1 and 1000, got %d", c.QUICFailures)
	}
	if c.QUICProbe < time.Second {
		add("quic_probe", "must be at least 1s, got %s", c.QUICProbe)
	}
	if c.QUIC.KeepAlive < 0 {
		add("quic.keepalive", "must not be negative, got %s", c.QUIC.KeepAlive)
	}
	if c.QUIC.IdleTimeout < time.Second {
		add("quic.idle_timeout", "must be at least 1s, got %s", c.QUIC.IdleTimeout)
	} else if c.KeepAlive > 0 && c.QUIC.IdleTimeout*2 < c.KeepAlive*3 {
		add("quic.idle_timeout", "must be at least 1.5 × keepalive (%s), got %s", c.KeepAlive*3/2, c.QUIC.IdleTimeout)
	}
	if c.KeepAlive < 0 || c.KeepAlive > 65535*time.Second || c.KeepAlive%time.Second != 0 {
		add("keepalive", "must be whole seconds between 0s and 65535s, got %s", c.KeepAlive)
	}
	if c.ConnectTimeout < 100*time.Millisecond {
		add("connect_timeout", "must be at least 100ms, got %s", c.ConnectTimeout)
	}
	if c.BackoffMin < 10*time.Millisecond {
		add("backoff_min", "must be at least 10ms, got %s", c.BackoffMin)
	}
	if c.PathProbe != 0 && c.PathProbe < 100*time.Millisecond {
		add("path_probe", "must be 0 (off) or at least 100ms, got %s", c.PathProbe)
	}
	if c.BackoffMax < c.BackoffMin {
		add("backoff_max", "must not be below backoff_min (%s), got %s", c.BackoffMin, c.BackoffMax)
	}
	if c.Inflight < 1 || c.Inflight > 65535 {
		add("inflight", "must be between 1 and 65535, got %d", c.Inflight)
	}
	if c.Connections < 1 || c.Connections > 64 {
		add("connections", "must be between 1 and 64, got %d", c.Connections)
	}
	if len(c.ClientID) > 65535 || strings.HasPrefix(c.ClientID, "$") {
		add("client_id", "must not start with $ and must be shorter than 64 KiB")
	}
	c.TLS.validate(add)
	for i, r := range c.Forward {
		p := fmt.Sprintf("forward[%d]", i)
		if !bus.ValidFilter(r.Filter) {
			add(p+".filter", "not a valid MQTT topic filter: %q", r.Filter)
		}
		validTemplate(add, p+".remote_topic", r.RemoteTopic)
		if r.QoS < 0 || r.QoS > 1 {
			add(p+".qos", "must be 0 or 1, got %d", r.QoS)
		}
	}
	for i, r := range c.Downlink {
		p := fmt.Sprintf("downlink[%d]", i)
		if !bus.ValidFilter(r.Filter) {
			add(p+".filter", "not a valid MQTT topic filter: %q", r.Filter)
		}
		validTemplate(add, p+".local_topic", r.LocalTopic)
		if r.QoS < 0 || r.QoS > 1 {
			add(p+".qos", "must be 0 or 1, got %d", r.QoS)
		}
	}
	if c.Outbox.MaxBytes < 0 {
		add("outbox.max_bytes", "must not be negative, got %d", c.Outbox.MaxBytes)
	}
	if c.Outbox.MaxMessages < 0 {
		add("outbox.max_messages", "must not be negative, got %d", c.Outbox.MaxMessages)
	}
	if c.Outbox.Policy != "drop_oldest" && c.Outbox.Policy != "refuse_new" {
		add("outbox.policy", "must be drop_oldest or refuse_new, got %q", c.Outbox.Policy)
	}
	if c.Outbox.TTL < 0 {
		add("outbox.ttl", "must not be negative, got %s", c.Outbox.TTL)
	}
	if _, err := time.Parse(time.RFC3339, c.MinClock); err != nil {
		add("min_clock", "must be an RFC 3339 time such as 2025-01-01T00:00:00Z, got %q", c.MinClock)
	}
	return errors.Join(errs...)
}

func (t TLS) validate(add func(path, format string, args ...any)) {
	switch {
	case t.Cert != "" && t.Key == "":
		add("tls.key", "required when tls.cert is set")
	case t.Cert == "" && t.Key != "":
		add("tls.cert", "required when tls.key is set")
	}
}

// Provision reads the uplink's CA bundle and client certificate and key,
// when set, and checks that they load. It runs after Validate (which reads
// no file) when the gateway starts or applies a config; like Validate it
// checks a disabled uplink too. Each error is one line "path: reason"
// relative to the section, naming the file, joined.
func (c Config) Provision() error {
	var e check.Errors
	t := c.TLS
	if t.CA != "" && e.Readable("tls.ca", t.CA) {
		if pem, err := os.ReadFile(t.CA); err != nil {
			e.Add("tls.ca", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			e.Addf("tls.ca", "no PEM certificate in %s", t.CA)
		}
	}
	certOK := t.Cert != "" && t.Key != "" && e.Readable("tls.cert", t.Cert)
	keyOK := t.Cert != "" && t.Key != "" && e.Readable("tls.key", t.Key)
	if certOK && keyOK {
		if _, err := tls.LoadX509KeyPair(t.Cert, t.Key); err != nil {
			e.Addf("tls.cert", "cannot load %s with key %s: %v", t.Cert, t.Key, err)
		}
	}
	return e.Err()
}

// validTemplate checks a topic template: not empty, no wildcards, and only
// known placeholders.
func validTemplate(add func(path, format string, args ...any), path, tmpl string) {
	if tmpl == "" {
		add(path, "must not be empty")
		return
	}
	if strings.ContainsAny(tmpl, "+#") {
		add(path, "must not contain wildcards, got %q", tmpl)
	}
	rest := tmpl
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			add(path, "unclosed { in %q", tmpl)
			return
		}
		switch name := rest[i+1 : i+j]; name {
		case "gateway_id", "topic", "suffix":
		default:
			add(path, "unknown placeholder {%s} (known: {gateway_id}, {topic}, {suffix})", name)
		}
		rest = rest[i+j+1:]
	}
}

// offers reports whether the server has a port for transport.
func (s Server) offers(transport string) bool {
	switch transport {
	case "quic":
		return s.QUICPort > 0
	case "tls":
		return s.TLSPort > 0
	case "tcp":
		return s.TCPPort > 0
	default: // auto
		return s.QUICPort > 0 || s.TLSPort > 0
	}
}
