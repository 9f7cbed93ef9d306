package mqtt

import (
	"time"

	"github.com/fieldgate/fieldgate/internal/secret"
)

// Config is the broker's section of the gateway config (`broker:` in YAML).
// The gateway's config package embeds it; its defaults come from
// DefaultConfig and nowhere else.
type Config struct {
	// Listeners are the network endpoints MQTT clients connect to.
	Listeners Listeners `yaml:"listeners"`
	// Auth holds authentication: anonymous access, users, failed-login limits.
	Auth Auth `yaml:"auth"`
	// ACL rules are matched in order; the first match decides. Once any rule
	// exists, what no rule allows is denied.
	ACL []ACLRule `yaml:"acl"`
	// Limits bound what one client or one address may cost the broker.
	Limits Limits `yaml:"limits"`
	// QueueQoS0 queues QoS 0 messages for offline persistent sessions too
	// (QoS 1 and 2 are always queued).
	QueueQoS0 bool `yaml:"queue_qos0"`
	// SysInterval is how often the $SYS topics are republished.
	SysInterval time.Duration `yaml:"sys_interval"`
	// AutoSubscribe lists filters every client is subscribed to when it
	// connects; %c is replaced by the client id and %u by the username.
	AutoSubscribe []AutoSubscription `yaml:"auto_subscribe"`
	// Rewrite rules change topics of publishes and subscriptions, in order.
	Rewrite []RewriteRule `yaml:"rewrite"`
	// Banned refuses connections by client id, username or source address.
	Banned Banned `yaml:"banned"`
}

// Listeners configures each listener; each can be enabled on its own address.
type Listeners struct {
	TCP       TCPListener       `yaml:"tcp"`
	TLS       TLSListener       `yaml:"tls"`
	WebSocket WebSocketListener `yaml:"websocket"`
	QUIC      QUICListener      `yaml:"quic"`
	// RawIO reads and writes the TCP, TLS and WebSocket listeners' sockets
	// with raw system calls (internal/rawio, ADR 0002): less scheduler
	// overhead at moderate rates. false takes the standard library's path.
	RawIO bool `yaml:"raw_io"`
}

// QUICListener is MQTT over QUIC (EMQX-compatible: ALPN "mqtt", TLS 1.3,
// one stream per connection) on UDP. Without cert and key of its own it
// uses those of the TLS listener.
type QUICListener struct {
	Enabled  bool   `yaml:"enabled"`
	Address  string `yaml:"address"`
	TLSFiles `yaml:",inline"`
	// IdleTimeout closes a silent QUIC connection; keep it above 1.5 × the
	// clients' MQTT keep alive.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// files returns the TLS files the QUIC listener uses.
func (q QUICListener) files(tls TLSListener) TLSFiles {
	if q.Cert == "" && q.Key == "" {
		f := tls.TLSFiles
		f.MinVersion = "1.3"
		return f
	}
	return q.TLSFiles
}

// TCPListener is plain MQTT over TCP.
type TCPListener struct {
	Enabled bool   `yaml:"enabled"`
	Address string `yaml:"address"`
}

// TLSFiles names the PEM files of a TLS server endpoint.
type TLSFiles struct {
	// Cert and Key are the server certificate chain and private key.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ClientCA, when set, makes the listener ask for client certificates and
	// verify them against this CA bundle.
	ClientCA string `yaml:"client_ca"`
	// RequireClientCert refuses clients without a valid certificate.
	RequireClientCert bool `yaml:"require_client_cert"`
	// CNAsUsername uses the client certificate's common name as the MQTT
	// username (authenticated by the certificate, no password needed).
	CNAsUsername bool `yaml:"cn_as_username"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
}

// TLSListener is MQTT over TLS.
type TLSListener struct {
	Enabled  bool   `yaml:"enabled"`
	Address  string `yaml:"address"`
	TLSFiles `yaml:",inline"`
}

// WebSocketListener is MQTT over WebSocket (RFC 6455), with subprotocol
// "mqtt". When TLS cert and key are given it serves WSS.
type WebSocketListener struct {
	Enabled  bool   `yaml:"enabled"`
	Address  string `yaml:"address"`
	Path     string `yaml:"path"`
	TLSFiles `yaml:",inline"`
}

// Auth configures authentication.
type Auth struct {
	// AllowAnonymous lets clients without a username connect.
	AllowAnonymous bool `yaml:"allow_anonymous"`
	// AnonymousListeners, when not empty, limits AllowAnonymous to these
	// listeners: tcp, tls, websocket, quic, mqttsn, coap. Empty: all.
	AnonymousListeners []string `yaml:"anonymous_listeners"`
	// AnonymousDenyPublish are topic filters no anonymous client may
	// publish to, whatever the ACL says. The default holds the southbound
	// write commands (southbound/<device>/<point>/set): no anonymous client
	// writes to a field device.
	AnonymousDenyPublish []string `yaml:"anonymous_deny_publish"`
	// Users are the accounts; passwords are bcrypt hashes
	// (`fieldgate passwd` makes one).
	Users []User `yaml:"users"`
	// MaxFailures failed logins from one source address within
	// FailureWindow block that address for BlockFor, doubling on each
	// further block up to 16 times BlockFor. Failures over plain UDP
	// (MQTT-SN, CoAP without DTLS), whose source anyone can forge, only
	// block password logins over plain UDP from that address, for BlockFor
	// and never longer; they never block a TCP, TLS, WebSocket, QUIC or
	// DTLS client.
	MaxFailures   int           `yaml:"max_failures"`
	FailureWindow time.Duration `yaml:"failure_window"`
	BlockFor      time.Duration `yaml:"block_for"`
	// AccountMaxFailures failed logins against one username, or one client
	// id, within FailureWindow from any addresses throttle that account:
	// logins to it are refused for AccountBlockFor (0: never), doubling on
	// each further block up to AccountBlockMax, except from sources that
	// logged in to it successfully within the last 7 days.
	AccountMaxFailures int           `yaml:"account_max_failures"`
	AccountBlockFor    time.Duration `yaml:"account_block_for"`
	AccountBlockMax    time.Duration `yaml:"account_block_max"`
}

// User is one broker account.
type User struct {
	Username string `yaml:"username"`
	// PasswordHash is a bcrypt hash: offline-crackable, so a secret too.
	PasswordHash secret.String `yaml:"password_hash"`
}

// ACLRule allows or denies an action on topics matching Topic to clients
// matching Username and ClientID ("" or "*" match anyone; a trailing * is a
// prefix match). Topic may hold %u (username) and %c (client id).
type ACLRule struct {
	Username   string `yaml:"username"`
	ClientID   string `yaml:"client_id"`
	Topic      string `yaml:"topic"`
	Action     string `yaml:"action"`     // publish, subscribe or all
	Permission string `yaml:"permission"` // allow or deny
}

// QueueDropOldest and QueueDropNewest are the values of Limits.QueueDrop.
const (
	QueueDropOldest = "oldest"
	QueueDropNewest = "newest"
)

// Limits bound resource use. Zero means "no limit" only where noted.
type Limits struct {
	// MaxPacketSize in bytes; larger packets get v5 DISCONNECT 0x95 (v3: close).
	MaxPacketSize int `yaml:"max_packet_size"`
	// MaxConnections over all listeners.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerAddress is how many connections one source IP
	// address may hold open over all network listeners (0 = no limit).
	// Further ones are closed at accept, before anything is read from them.
	MaxConnectionsPerAddress int `yaml:"max_connections_per_address"`
	// ReceiveMaximum is how many QoS 1/2 publishes a client may have
	// unacknowledged towards the broker (exceeding it: DISCONNECT 0x93).
	ReceiveMaximum int `yaml:"receive_maximum"`
	// MaxInflight is how many QoS 1/2 messages the broker sends a client
	// before waiting for acknowledgements (v5 clients may ask for fewer).
	MaxInflight int `yaml:"max_inflight"`
	// MaxQueued is how many messages are kept for one session beyond those in
	// flight (offline, or waiting for inflight room); the oldest is dropped
	// and counted when it is full.
	MaxQueued int `yaml:"max_queued"`
	// MaxQueuedBytes bounds the bytes kept for one session (queued and in
	// flight, QoS 0 queue apart; payload, topic and properties plus 1 KiB
	// per message), with the same policy: the oldest is dropped and
	// counted. 0: no per-session byte limit (the memory budget still
	// applies to all sessions together).
	MaxQueuedBytes int64 `yaml:"max_queued_bytes"`
	// QueueDrop is what a full session queue drops: "oldest" (the default,
	// also when empty) or "newest" (the message that did not fit). Drops
	// are counted (Stats.QueuedDropped). While the session's client is
	// connected, publishers first wait for it to take messages (up to 5 s
	// without progress) instead.
	QueueDrop string `yaml:"queue_drop"`
	// PublishRate is the per-client publish rate (messages/s, 0 = no limit)
	// with PublishBurst; a client over it for PublishRateGrace gets v5
	// DISCONNECT 0x96.
	PublishRate      float64       `yaml:"publish_rate"`
	PublishBurst     int           `yaml:"publish_burst"`
	PublishRateGrace time.Duration `yaml:"publish_rate_grace"`
	// ConnectRate is new connections per second per source IP (0 = no limit)
	// with ConnectBurst.
	ConnectRate  float64 `yaml:"connect_rate"`
	ConnectBurst int     `yaml:"connect_burst"`
	// MaxTopicLevels and MaxTopicLength bound topic names and filters.
	MaxTopicLevels int `yaml:"max_topic_levels"`
	MaxTopicLength int `yaml:"max_topic_length"`
	// MaxKeepalive, when not zero, is imposed on clients asking for more (or
	// for none) as the v5 server keep alive.
	MaxKeepalive time.Duration `yaml:"max_keepalive"`
	// ConnectTimeout drops connections that send no CONNECT in time.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// MaxSessionExpiry caps the session expiry interval clients ask for.
	MaxSessionExpiry time.Duration `yaml:"max_session_expiry"`
	// MaxMessageExpiry caps how long a queued or retained message is kept.
	MaxMessageExpiry time.Duration `yaml:"max_message_expiry"`
}

// AutoSubscription is subscribed for every client when it connects.
type AutoSubscription struct {
	Topic string `yaml:"topic"`
	QoS   int    `yaml:"qos"`
}

// RewriteRule rewrites topics that match the filter Source and the regular
// expression Regex into Dest, where $1… are Regex's groups. Action is
// publish, subscribe or all.
type RewriteRule struct {
	Action string `yaml:"action"`
	Source string `yaml:"source"`
	Regex  string `yaml:"regex"`
	Dest   string `yaml:"dest"`
}

// Banned lists who may not connect.
type Banned struct {
	ClientIDs []string `yaml:"client_ids"`
	Usernames []string `yaml:"usernames"`
	CIDRs     []string `yaml:"cidrs"`
}

// DefaultConfig returns the broker defaults of DESIGN.md: TCP on 1883 and
// WebSocket on 8083 enabled, TLS off until certificate files are given,
// anonymous clients allowed (a fresh gateway must work out of the box; the
// setup page asks for users).
func DefaultConfig() Config {
	return Config{
		Listeners: Listeners{
			TCP:       TCPListener{Enabled: true, Address: ":1883"},
			TLS:       TLSListener{Enabled: false, Address: ":8883", TLSFiles: TLSFiles{MinVersion: "1.2"}},
			WebSocket: WebSocketListener{Enabled: true, Address: ":8083", Path: "/mqtt", TLSFiles: TLSFiles{MinVersion: "1.2"}},
			QUIC:      QUICListener{Enabled: false, Address: ":14567", TLSFiles: TLSFiles{MinVersion: "1.3"}, IdleTimeout: 90 * time.Second},
			RawIO:     true,
		},
		Auth: Auth{
			AllowAnonymous:       true,
			AnonymousDenyPublish: []string{"southbound/+/+/set"},
			MaxFailures:          5,
			FailureWindow:        time.Minute,
			BlockFor:             time.Minute,
			// Accounts: ten failures a minute from anywhere, then 30 s
			// doubling up to 5 min for sources the account has not seen.
			AccountMaxFailures: 10,
			AccountBlockFor:    30 * time.Second,
			AccountBlockMax:    5 * time.Minute,
		},
		Limits: Limits{
			MaxPacketSize:    1 << 20,
			MaxConnections:   10000,
			ReceiveMaximum:   1024,
			MaxInflight:      1024,
			MaxQueued:        10000,
			MaxQueuedBytes:   16 << 20,
			QueueDrop:        QueueDropOldest,
			PublishRate:      0,
			PublishBurst:     1000,
			PublishRateGrace: 10 * time.Second,
			ConnectRate:      0,
			ConnectBurst:     100,
			MaxTopicLevels:   128,
			MaxTopicLength:   65535,
			MaxKeepalive:     0,
			ConnectTimeout:   10 * time.Second,
			MaxSessionExpiry: 7 * 24 * time.Hour,
			MaxMessageExpiry: 7 * 24 * time.Hour,

			// A LAN gateway's devices each need a few connections; one
			// address must not take every slot.
			MaxConnectionsPerAddress: 64,
		},
		SysInterval: 10 * time.Second,
	}
}
