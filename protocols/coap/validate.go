package coap

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/fieldgate/fieldgate/internal/check"
)

// Ranges accepted by Validate: wide, to catch typos and nonsense only.
const (
	maxPayloadLimit = 64 << 20 // block-wise payloads are held in memory
	maxSessions     = 10_000_000
	maxHeartbeat    = 65535 * time.Second // an MQTT keep alive is a uint16
	maxIdle         = 7 * 24 * time.Hour
	maxPerEndpoint  = 65535
	maxObservations = 10_000_000
)

// Validate checks the CoAP section and returns every problem found, joined
// with errors.Join. Each error is one line "path: reason", the path relative
// to the section (e.g. "dtls.cert: open s.pem: no such file or directory");
// the gateway config prefixes "coap.". A disabled gateway is not checked.
// Validate reads no file: Provision reads the DTLS certificate files.
func (c Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	var v validator
	v.Address("address", c.Address, ":5683")
	switch c.NotifyType {
	case NotifyNon, NotifyCon, NotifyQoS:
	default:
		v.Addf("notify_type", "must be one of non, con, qos, got %q", c.NotifyType)
	}
	v.durationRange("heartbeat", c.Heartbeat, time.Second, maxHeartbeat)
	v.durationRange("session_idle", c.SessionIdle, time.Second, maxIdle)
	v.durationRange("block_timeout", c.BlockTimeout, time.Second, time.Hour)
	v.durationRange("ack_timeout", c.AckTimeout, time.Second, 10*time.Minute)
	if c.MaxPayload < 1 || c.MaxPayload > maxPayloadLimit {
		v.Addf("max_payload", "must be between 1 and %d bytes, got %d", maxPayloadLimit, c.MaxPayload)
	}
	if c.MaxSessions < 1 || c.MaxSessions > maxSessions {
		v.Addf("max_sessions", "must be between 1 and %d, got %d", maxSessions, c.MaxSessions)
	}
	v.IntRange("max_observations_per_endpoint", c.MaxObservationsPerEndpoint, 1, maxPerEndpoint)
	v.IntRange("max_observations", c.MaxObservations, 1, maxObservations)
	// RFC 7641 §4.5: a CON notification at least every 24 hours.
	v.durationRange("observe_check_interval", c.ObserveCheck, time.Second, 24*time.Hour)
	if c.DTLS.Enabled {
		c.DTLS.validate(&v)
	}
	return v.Err()
}

func (d DTLS) validate(v *validator) {
	v.Address("dtls.address", d.Address, ":5683")
	if len(d.PSK) == 0 && d.Cert == "" && d.Key == "" {
		v.Addf("dtls", "needs psk entries or cert and key when enabled")
	}
	seen := make(map[string]int, len(d.PSK))
	for i, p := range d.PSK {
		path := fmt.Sprintf("dtls.psk[%d]", i)
		if p.Identity == "" {
			v.Addf(path+".identity", "must not be empty")
		} else if first, dup := seen[p.Identity]; dup {
			v.Addf(path+".identity", "duplicate of dtls.psk[%d] (%q)", first, p.Identity)
		} else {
			seen[p.Identity] = i
		}
		if p.Key.IsZero() {
			v.Addf(path+".key", "must not be empty") // never echo the key
		}
	}
	switch {
	case d.Cert != "" && d.Key == "":
		v.Addf("dtls.key", "required when cert is set")
	case d.Cert == "" && d.Key != "":
		v.Addf("dtls.cert", "required when key is set")
	}
	if d.CA != "" && d.Cert == "" {
		v.Addf("dtls.ca", "client certificates need the server's cert and key")
	}
}

// Provision reads the certificate, key and CA files of an enabled DTLS
// endpoint and checks that they load. It runs after Validate (which reads
// no file) when the gateway starts or applies a config. Each error is one
// line "path: reason" relative to the section, naming the file, joined.
func (c Config) Provision() error {
	d := c.DTLS
	if !c.Enabled || !d.Enabled {
		return nil
	}
	var v validator
	certOK := d.Cert != "" && v.Readable("dtls.cert", d.Cert)
	keyOK := d.Key != "" && v.Readable("dtls.key", d.Key)
	if certOK && keyOK {
		if _, err := tls.LoadX509KeyPair(d.Cert, d.Key); err != nil {
			v.Addf("dtls.cert", "cannot load %s with key %s: %v", d.Cert, d.Key, err)
		}
	}
	if d.CA != "" && v.Readable("dtls.ca", d.CA) {
		if _, err := loadCAs(d.CA); err != nil {
			v.Add("dtls.ca", err)
		}
	}
	return v.Err()
}

// loadCAs reads a PEM CA bundle.
func loadCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate found in %s", file)
	}
	return pool, nil
}

// validator collects "path: reason" errors.
type validator struct {
	check.Errors
}

func (v *validator) durationRange(path string, d, lo, hi time.Duration) {
	if d < lo || d > hi {
		v.Addf(path, "must be between %s and %s, got %s", lo, hi, d)
	}
}
