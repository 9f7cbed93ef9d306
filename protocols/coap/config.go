package coap

import "time"

// Config is the CoAP gateway's section of the gateway config (`coap:` in
// YAML). The gateway's config package embeds it; its defaults come from
// DefaultConfig and nowhere else.
type Config struct {
	// Enabled starts the gateway.
	Enabled bool `yaml:"enabled"`
	// Address is the UDP address of plain CoAP (default ":5683").
	Address string `yaml:"address"`
	// DTLS is CoAP over DTLS (coaps://, default ":5684").
	DTLS DTLS `yaml:"dtls"`
	// ConnectionRequired refuses publish and subscribe requests that do not
	// carry the clientid and token of a connection made with
	// POST /mqtt/connection (4.01). When false, anonymous or
	// credential-carrying connectionless requests are allowed.
	ConnectionRequired bool `yaml:"connection_required"`
	// NotifyType is the message type of observe notifications: "non",
	// "con", or "qos" (CON for QoS 1/2 messages, NON for QoS 0).
	NotifyType string `yaml:"notify_type"`
	// Heartbeat is the keep alive of a connection: one that sends no
	// request (a PUT /mqtt/connection heartbeat or anything else) for 1.5 ×
	// Heartbeat is closed, and its will published.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// SessionIdle ends the broker session of a connectionless device that
	// sent nothing for this long and observes nothing. An observer that has
	// been silent this long gets its next notification as CON; if it does
	// not acknowledge it, its observations end.
	SessionIdle time.Duration `yaml:"session_idle"`
	// MaxPayload is the largest request payload accepted, block-wise
	// transfers included (4.13 beyond it).
	MaxPayload int `yaml:"max_payload"`
	// MaxSessions bounds the broker sessions of CoAP devices (connections
	// and connectionless devices together); beyond it new devices get 5.03.
	MaxSessions int `yaml:"max_sessions"`
	// BlockTimeout is how long an unfinished block-wise transfer is kept.
	BlockTimeout time.Duration `yaml:"block_timeout"`
	// AckTimeout bounds how long a CON notification waits for its ACK
	// (retransmissions included) before the observation is given up.
	AckTimeout time.Duration `yaml:"ack_timeout"`
}

// DTLS configures CoAP over DTLS 1.2, with pre-shared keys, certificates,
// or both.
type DTLS struct {
	Enabled bool   `yaml:"enabled"`
	Address string `yaml:"address"`
	// PSK maps client identities to pre-shared keys.
	PSK []PSK `yaml:"psk"`
	// Cert and Key are the server certificate chain and private key (PEM).
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// CA, when set, makes the server require client certificates signed by
	// this CA bundle (PEM).
	CA string `yaml:"ca"`
	// IdentityAsUsername makes the DTLS identity the broker username of a
	// request that came over DTLS: the PSK identity, or the common name of
	// the client certificate. DTLS has authenticated it, so no password is
	// needed, and a username in the request is ignored (as the MQTT TLS
	// listener's cn_as_username does).
	IdentityAsUsername bool `yaml:"identity_as_username"`
}

// PSK is one DTLS pre-shared key. Key is the secret itself (as bytes of the
// string); it is never logged.
type PSK struct {
	Identity string `yaml:"identity"`
	Key      string `yaml:"key"`
}

// Notification types accepted in Config.NotifyType.
const (
	NotifyNon = "non"
	NotifyCon = "con"
	NotifyQoS = "qos"
)

// DefaultConfig returns the CoAP defaults of DESIGN.md: plain CoAP on
// 5683/udp, DTLS off until keys or certificates are given, connectionless
// requests allowed.
func DefaultConfig() Config {
	return Config{
		Enabled:      true,
		Address:      ":5683",
		DTLS:         DTLS{Enabled: false, Address: ":5684"},
		NotifyType:   NotifyQoS,
		Heartbeat:    60 * time.Second,
		SessionIdle:  5 * time.Minute,
		MaxPayload:   256 << 10,
		MaxSessions:  10000,
		BlockTimeout: 30 * time.Second,
		AckTimeout:   45 * time.Second,
	}
}
