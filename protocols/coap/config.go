package coap

import (
	"time"

	"github.com/fieldgate/fieldgate/internal/secret"
)

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
	// sent nothing for this long and observes nothing.
	SessionIdle time.Duration `yaml:"session_idle"`
	// MaxPayload is the largest request payload accepted, block-wise
	// transfers included (4.13 beyond it).
	MaxPayload int `yaml:"max_payload"`
	// MaxSessions bounds the broker sessions of CoAP devices (connections
	// and connectionless devices together); beyond it new devices get 5.03.
	MaxSessions int `yaml:"max_sessions"`
	// BlockTimeout is how long an unfinished block-wise transfer is kept.
	BlockTimeout time.Duration `yaml:"block_timeout"`
	// AckTimeout bounds how long a CON notification or a liveness check
	// waits for its ACK (retransmissions included) before the endpoint is
	// taken for gone and all its observations end.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// MaxObservationsPerEndpoint bounds the observations of one client
	// endpoint (address and port, over all its sessions); beyond it a
	// registration gets 4.29 Too Many Requests.
	MaxObservationsPerEndpoint int `yaml:"max_observations_per_endpoint"`
	// MaxObservations bounds all observations together; beyond it (or
	// beyond the memory budget) a registration gets 5.03.
	MaxObservations int `yaml:"max_observations"`
	// ObserveCheck is how long an observing endpoint may go without showing
	// it is there (an ACK of a CON notification, an answer to a CoAP ping,
	// a re-registration): then its next notification is CON, or, when none
	// is due, it gets a CoAP ping. Without an answer within AckTimeout all
	// its observations end. Every fifth notification in a row without such
	// a sign is CON too.
	ObserveCheck time.Duration `yaml:"observe_check_interval"`
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
// string); it is never logged or shown (secret.String).
type PSK struct {
	Identity string        `yaml:"identity"`
	Key      secret.String `yaml:"key"`
}

// Notification types accepted in Config.NotifyType.
const (
	NotifyNon = "non"
	NotifyCon = "con"
	NotifyQoS = "qos"
)

// DefaultConfig returns the CoAP defaults of DESIGN.md: plain CoAP on
// 5683/udp, DTLS off until keys or certificates are given, connectionless
// requests allowed, at most 16 observations per endpoint and 10,000 in all,
// each observer checked every minute.
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

		MaxObservationsPerEndpoint: 16,
		MaxObservations:            10000,
		ObserveCheck:               time.Minute,
	}
}
