package mqttsn

import "time"

// Config is the MQTT-SN gateway's section of the gateway config (`mqttsn:`
// in YAML). The gateway's config package embeds it; its defaults come from
// DefaultConfig and nowhere else.
type Config struct {
	// Enabled starts the gateway.
	Enabled bool `yaml:"enabled"`
	// Address is the UDP address the gateway listens on.
	Address string `yaml:"address"`
	// GatewayID is sent in ADVERTISE and GWINFO (0-255).
	GatewayID int `yaml:"gateway_id"`
	// AdvertiseInterval is how often ADVERTISE is broadcast to
	// AdvertiseAddress; 0 turns it off.
	AdvertiseInterval time.Duration `yaml:"advertise_interval"`
	// AdvertiseAddress is where ADVERTISE goes (a broadcast or multicast
	// address with a port).
	AdvertiseAddress string `yaml:"advertise_address"`
	// PredefinedTopics are topic ids known to devices and gateway without
	// REGISTER.
	PredefinedTopics []PredefinedTopic `yaml:"predefined_topics"`
	// Clients decides which client ids may connect and the broker username
	// each one has for the ACL.
	Clients Clients `yaml:"clients"`
	// QoSMinusOne accepts QoS -1 publishes (no connection, predefined or
	// short topics). They go through one broker session with
	// QoSMinusOne.Username, so the ACL applies to them.
	QoSMinusOne QoSMinusOne `yaml:"qos_minus_one"`
	// RetryInterval and RetryCount govern retransmission of unacknowledged
	// QoS 1/2 publishes, REGISTERs and PUBRELs to a device; after RetryCount
	// retransmissions the device is lost (its will is published).
	RetryInterval time.Duration `yaml:"retry_interval"`
	RetryCount    int           `yaml:"retry_count"`
	// MaxInflight is how many QoS 1/2 publishes the gateway sends one device
	// before waiting for its acknowledgements.
	MaxInflight int `yaml:"max_inflight"`
	// SleepBuffer is how many messages are buffered for one device (asleep,
	// or waiting for room in flight); a full buffer drops its oldest QoS 0
	// message. QoS 1/2 messages beyond it wait in the broker's session.
	SleepBuffer int `yaml:"sleep_buffer"`
	// MaxClients is how many devices may be connected (asleep included,
	// and those still in their CONNECT handshake): the cap on MQTT-SN
	// sessions. A CONNECT beyond it gets CONNACK 0x01 (rejected:
	// congestion).
	MaxClients int `yaml:"max_clients"`
	// MaxClientsPerAddress is how many of those devices may speak from one
	// IP address (any number of ports, and every node behind a forwarder at
	// that address); a CONNECT beyond it gets CONNACK 0x01. 0 turns the
	// per-address cap off.
	MaxClientsPerAddress int `yaml:"max_clients_per_address"`
	// ConnectTimeout bounds a CONNECT: a device that starts the will
	// handshake must complete it (WILLTOPIC, WILLMSG) within it, and the
	// broker must accept or refuse the session within it; otherwise the
	// device is forgotten.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// MaxTopics bounds the topic ids registered per device.
	MaxTopics int `yaml:"max_topics"`
	// MaxKeepAlive caps the keep alive a device is held to: a device that
	// connects with keep alive 0 (none) or above it is held to
	// MaxKeepAlive, so it is lost (will published) after 1.5 × MaxKeepAlive
	// of silence and never stays forever. 0 turns the cap off.
	MaxKeepAlive time.Duration `yaml:"max_keepalive"`
	// SessionExpiry is how long the broker keeps the session of a device
	// that connected with CleanSession=0 after it is lost or disconnects.
	SessionExpiry time.Duration `yaml:"session_expiry"`
}

// PredefinedTopic maps a topic id to a topic name.
type PredefinedTopic struct {
	ID    int    `yaml:"id"`
	Topic string `yaml:"topic"`
}

// Clients are the client id rules. MQTT-SN CONNECT carries no password, so
// the gateway decides by client id. Patterns are exact, "*" (anyone) or end
// in "*" (a prefix), as in the broker's ACL.
type Clients struct {
	// Allow lists the client id patterns that may connect; empty allows
	// every client id.
	Allow []string `yaml:"allow"`
	// Usernames gives matching client ids a broker username (first match
	// wins); the gateway vouches for it and the broker's ACL applies to it.
	// A client id without one connects as an anonymous client, accepted
	// only when the broker allows anonymous clients.
	Usernames []ClientUsername `yaml:"usernames"`
}

// ClientUsername maps client ids matching ClientID to Username.
type ClientUsername struct {
	ClientID string `yaml:"client_id"`
	Username string `yaml:"username"`
}

// QoSMinusOne configures publishes without a connection.
type QoSMinusOne struct {
	Enabled bool `yaml:"enabled"`
	// Username is the broker username of those publishes ("" anonymous).
	Username string `yaml:"username"`
}

// DefaultConfig returns the defaults: enabled on 0.0.0.0:1884, gateway id 1,
// no ADVERTISE, every client id allowed as an anonymous broker client, QoS -1
// accepted, keep alive at most an hour, at most 1,000 devices (sized for a
// LAN) and 16 per IP address.
func DefaultConfig() Config {
	return Config{
		Enabled:              true,
		Address:              "0.0.0.0:1884",
		GatewayID:            1,
		AdvertiseInterval:    0,
		AdvertiseAddress:     "255.255.255.255:1884",
		QoSMinusOne:          QoSMinusOne{Enabled: true},
		RetryInterval:        10 * time.Second,
		RetryCount:           3,
		MaxInflight:          1,
		SleepBuffer:          100,
		MaxClients:           1000,
		MaxClientsPerAddress: 16,
		ConnectTimeout:       10 * time.Second,
		MaxTopics:            1000,
		MaxKeepAlive:         time.Hour,
		SessionExpiry:        24 * time.Hour,
	}
}
