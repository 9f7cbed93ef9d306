package coap

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Ranges accepted by Validate: wide, to catch typos and nonsense only.
const (
	maxPayloadLimit = 64 << 20 // block-wise payloads are held in memory
	maxSessions     = 10_000_000
	maxHeartbeat    = 65535 * time.Second // an MQTT keep alive is a uint16
	maxIdle         = 7 * 24 * time.Hour
)

// Validate checks the CoAP section and returns every problem found, joined
// with errors.Join. Each error is one line "path: reason", the path relative
// to the section (e.g. "dtls.cert: open s.pem: no such file or directory");
// the gateway config prefixes "coap.". A disabled gateway is not checked.
// Certificate files of an enabled DTLS endpoint are read.
func (c Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	var v validator
	v.address("address", c.Address)
	switch c.NotifyType {
	case NotifyNon, NotifyCon, NotifyQoS:
	default:
		v.addf("notify_type", "must be one of non, con, qos, got %q", c.NotifyType)
	}
	v.durationRange("heartbeat", c.Heartbeat, time.Second, maxHeartbeat)
	v.durationRange("session_idle", c.SessionIdle, time.Second, maxIdle)
	v.durationRange("block_timeout", c.BlockTimeout, time.Second, time.Hour)
	v.durationRange("ack_timeout", c.AckTimeout, time.Second, 10*time.Minute)
	if c.MaxPayload < 1 || c.MaxPayload > maxPayloadLimit {
		v.addf("max_payload", "must be between 1 and %d bytes, got %d", maxPayloadLimit, c.MaxPayload)
	}
	if c.MaxSessions < 1 || c.MaxSessions > maxSessions {
		v.addf("max_sessions", "must be between 1 and %d, got %d", maxSessions, c.MaxSessions)
	}
	if c.DTLS.Enabled {
		c.DTLS.validate(&v)
	}
	return errors.Join(v.errs...)
}

func (d DTLS) validate(v *validator) {
	v.address("dtls.address", d.Address)
	if len(d.PSK) == 0 && d.Cert == "" && d.Key == "" {
		v.addf("dtls", "needs psk entries or cert and key when enabled")
	}
	seen := make(map[string]int, len(d.PSK))
	for i, p := range d.PSK {
		path := fmt.Sprintf("dtls.psk[%d]", i)
		if p.Identity == "" {
			v.addf(path+".identity", "must not be empty")
		} else if first, dup := seen[p.Identity]; dup {
			v.addf(path+".identity", "duplicate of dtls.psk[%d] (%q)", first, p.Identity)
		} else {
			seen[p.Identity] = i
		}
		if p.Key == "" {
			v.addf(path+".key", "must not be empty") // never echo the key
		}
	}
	switch {
	case d.Cert != "" && d.Key == "":
		v.addf("dtls.key", "required when cert is set")
	case d.Cert == "" && d.Key != "":
		v.addf("dtls.cert", "required when key is set")
	case d.Cert != "":
		if v.readable("dtls.cert", d.Cert) && v.readable("dtls.key", d.Key) {
			if _, err := tls.LoadX509KeyPair(d.Cert, d.Key); err != nil {
				v.addf("dtls.cert", "cannot load %s with key %s: %v", d.Cert, d.Key, err)
			}
		}
	}
	if d.CA != "" {
		if d.Cert == "" {
			v.addf("dtls.ca", "client certificates need the server's cert and key")
		}
		if v.readable("dtls.ca", d.CA) {
			if _, err := loadCAs(d.CA); err != nil {
				v.add("dtls.ca", err)
			}
		}
	}
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
	errs []error
}

func (v *validator) addf(path, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

func (v *validator) add(path string, err error) {
	v.errs = append(v.errs, fmt.Errorf("%s: %w", path, err))
}

func (v *validator) durationRange(path string, d, lo, hi time.Duration) {
	if d < lo || d > hi {
		v.addf(path, "must be between %s and %s, got %s", lo, hi, d)
	}
}

// address checks a listen address "host:port" with a numeric port.
func (v *validator) address(path, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.addf(path, "must be host:port (e.g. \":5683\"), got %q", addr)
		return
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || strings.TrimSpace(port) != port {
		v.addf(path, "port must be a number between 0 and 65535, got %q", port)
	}
}

// readable checks that file is a readable regular file (never a device or
// pipe, so that validation cannot block).
func (v *validator) readable(path, file string) bool {
	f, err := os.Open(file)
	if err != nil {
		v.add(path, err)
		return false
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		v.add(path, err)
		return false
	}
	if !info.Mode().IsRegular() {
		v.addf(path, "%s is not a regular file", file)
		return false
	}
	return true
}
