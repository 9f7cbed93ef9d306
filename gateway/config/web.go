package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/fieldgate/fieldgate/internal/check"
)

// The web section lives here rather than in gateway/web, because the web
// package needs the whole Config (it edits it) and config cannot import it.

// Web is the web section of the gateway config (`web:` in YAML): where
// the local setup page, the admin API and /metrics are served, and how
// logins and sessions behave. Its defaults come from DefaultConfig only.
type Web struct {
	// Enabled serves the page, the API, /metrics, /healthz and /readyz.
	Enabled bool `yaml:"enabled"`
	// Address is the host:port to listen on (":8080"; the image uses ":80").
	Address string `yaml:"address"`
	// TLS serves HTTPS when both files are set.
	TLS WebTLS `yaml:"tls"`
	// SessionTTL logs a browser out after this long without a request.
	SessionTTL time.Duration `yaml:"session_ttl"`
	// SessionMax logs a browser out this long after login, active or not.
	SessionMax time.Duration `yaml:"session_max"`
	// MetricsAuth protects /metrics with the admin login (a bearer token
	// of scope metrics for Prometheus). Off: anyone who reaches the port
	// can scrape it.
	MetricsAuth bool `yaml:"metrics_auth"`
	// LoginFreeAttempts is how many wrong passwords in a row one address may
	// try without waiting; after that each failure doubles the wait, from
	// LoginDelay up to LoginDelayMax.
	LoginFreeAttempts int           `yaml:"login_free_attempts"`
	LoginDelay        time.Duration `yaml:"login_delay"`
	LoginDelayMax     time.Duration `yaml:"login_delay_max"`
	// LiveStreams bounds how many live message views (browser tabs) may be
	// open at once.
	LiveStreams int `yaml:"live_streams"`
	// MDNS advertises the page over mDNS/DNS-SD as fieldgate-<id>.local,
	// under _http._tcp (_https._tcp with TLS) and _fieldgate._tcp.
	MDNS bool `yaml:"mdns"`
	// LoginConcurrency bounds how many password checks (bcrypt, ~0.1 s of
	// one CPU each) run at once over all addresses; a login beyond it
	// is answered 429 at once, so a burst cannot starve the broker.
	LoginConcurrency int `yaml:"login_concurrency"`
	// ReadTimeout bounds reading one whole request, body included;
	// WriteTimeout bounds writing one response (the live view sets its
	// own deadline per write instead); IdleTimeout closes a keep-alive
	// connection without a request.
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	IdleTimeout  time.Duration `yaml:"idle_timeout"`
	// MaxConnections bounds the open connections of the page; more wait in
	// the kernel's accept queue. It is further held to a quarter of the
	// process's open file limit, so that the broker always has descriptors.
	MaxConnections int `yaml:"max_connections"`
}

// WebTLS names the PEM files of the HTTPS certificate.
type WebTLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// DefaultWeb returns the web section's defaults: enabled on :8080 over
// plain HTTP, metrics behind the admin login.
func DefaultWeb() Web {
	return Web{
		Enabled:           true,
		Address:           ":8080",
		SessionTTL:        8 * time.Hour,
		SessionMax:        7 * 24 * time.Hour,
		MetricsAuth:       true,
		LoginFreeAttempts: 3,
		LoginDelay:        time.Second,
		LoginDelayMax:     15 * time.Minute,
		LiveStreams:       8,
		MDNS:              true,
		LoginConcurrency:  2,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxConnections:    256,
	}
}

// Validate checks the section and returns every problem, joined, each one
// line "path: reason" relative to the section. A disabled section is still
// checked, so that enabling it cannot surprise.
func (c Web) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if host, port, err := net.SplitHostPort(c.Address); err != nil {
		add("address", "must be host:port, got %q", c.Address)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		add("address", "port must be a number between 0 and 65535, got %q", port)
	} else if host != "" && net.ParseIP(host) == nil && len(host) > 253 {
		add("address", "host name too long")
	}
	switch {
	case c.TLS.Cert != "" && c.TLS.Key == "":
		add("tls.key", "required when tls.cert is set")
	case c.TLS.Cert == "" && c.TLS.Key != "":
		add("tls.cert", "required when tls.key is set")
	}
	if c.SessionTTL < time.Minute {
		add("session_ttl", "must be at least 1m, got %s", c.SessionTTL)
	}
	if c.SessionMax < c.SessionTTL {
		add("session_max", "must not be below session_ttl (%s), got %s", c.SessionTTL, c.SessionMax)
	}
	if c.LoginFreeAttempts < 0 || c.LoginFreeAttempts > 100 {
		add("login_free_attempts", "must be between 0 and 100, got %d", c.LoginFreeAttempts)
	}
	if c.LoginDelay <= 0 {
		add("login_delay", "must be above 0, got %s", c.LoginDelay)
	}
	if c.LoginDelayMax < c.LoginDelay {
		add("login_delay_max", "must not be below login_delay (%s), got %s", c.LoginDelay, c.LoginDelayMax)
	}
	if c.LiveStreams < 1 || c.LiveStreams > 1000 {
		add("live_streams", "must be between 1 and 1000, got %d", c.LiveStreams)
	}
	if c.LoginConcurrency < 1 || c.LoginConcurrency > 64 {
		add("login_concurrency", "must be between 1 and 64, got %d", c.LoginConcurrency)
	}
	for _, d := range []struct {
		path string
		v    time.Duration
	}{{"read_timeout", c.ReadTimeout}, {"write_timeout", c.WriteTimeout}, {"idle_timeout", c.IdleTimeout}} {
		if d.v < time.Second || d.v > time.Hour {
			add(d.path, "must be between 1s and 1h, got %s", d.v)
		}
	}
	if c.MaxConnections < 8 || c.MaxConnections > 65536 {
		add("max_connections", "must be between 8 and 65536, got %d", c.MaxConnections)
	}
	return errors.Join(errs...)
}

// Provision reads the page's certificate and key, when both are set, and
// checks that they load (Validate reads no file). Errors are "path: reason"
// relative to the section, naming the file.
func (c Web) Provision() error {
	if c.TLS.Cert == "" || c.TLS.Key == "" {
		return nil
	}
	var e check.Errors
	certOK := e.Readable("tls.cert", c.TLS.Cert)
	keyOK := e.Readable("tls.key", c.TLS.Key)
	if certOK && keyOK {
		if _, err := tls.LoadX509KeyPair(c.TLS.Cert, c.TLS.Key); err != nil {
			e.Addf("tls.cert", "cannot load %s with key %s: %v", c.TLS.Cert, c.TLS.Key, err)
		}
	}
	return e.Err()
}
