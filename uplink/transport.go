package uplink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/fieldgate/fieldgate/internal/quicconn"
)

// Transports, as named in the config and the status.
const (
	TransportQUIC = "quic"
	TransportTLS  = "tls"
	TransportTCP  = "tcp"
)

// dialer opens the byte stream an MQTT connection to the cloud runs on.
type dialer struct {
	cfg      Config
	tlsBase  *tls.Config            // CA, client certificate; ServerName set per server
	sessions tls.ClientSessionCache // TLS session resumption (faster reconnects, QUIC and TLS)
}

func newDialer(cfg Config) (*dialer, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: cfg.TLS.InsecureSkipVerify, //nolint:gosec // explicit choice, warned about at every connect
	}
	if cfg.TLS.CA != "" {
		pem, err := os.ReadFile(cfg.TLS.CA)
		if err != nil {
			return nil, fmt.Errorf("uplink: tls.ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("uplink: tls.ca: no PEM certificate in %s", cfg.TLS.CA)
		}
		tc.RootCAs = pool
	}
	if cfg.TLS.Cert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
		if err != nil {
			return nil, fmt.Errorf("uplink: tls.cert: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return &dialer{cfg: cfg, tlsBase: tc, sessions: tls.NewLRUClientSessionCache(16)}, nil
}

// tlsFor returns the TLS client config for server s.
func (d *dialer) tlsFor(s Server, alpn ...string) *tls.Config {
	tc := d.tlsBase.Clone()
	tc.ServerName = s.Host
	if d.cfg.TLS.ServerName != "" {
		tc.ServerName = d.cfg.TLS.ServerName
	}
	tc.ClientSessionCache = d.sessions
	tc.NextProtos = alpn
	return tc
}

// dial connects to s over transport within ctx.
func (d *dialer) dial(ctx context.Context, transport string, s Server) (net.Conn, error) {
	switch transport {
	case TransportTCP:
		var nd net.Dialer
		c, err := nd.DialContext(ctx, "tcp", net.JoinHostPort(s.Host, strconv.Itoa(s.TCPPort)))
		if err != nil {
			return nil, describeDialError(err)
		}
		return c, nil
	case TransportTLS:
		td := tls.Dialer{Config: d.tlsFor(s)}
		c, err := td.DialContext(ctx, "tcp", net.JoinHostPort(s.Host, strconv.Itoa(s.TLSPort)))
		if err != nil {
			return nil, describeDialError(err)
		}
		return c, nil
	case TransportQUIC:
		return d.dialQUIC(ctx, s)
	}
	return nil, fmt.Errorf("unknown transport %q", transport)
}

// dialQUIC opens a QUIC connection (ALPN mqtt, TLS 1.3) and the one
// bidirectional stream MQTT runs on.
func (d *dialer) dialQUIC(ctx context.Context, s Server) (net.Conn, error) {
	tc := d.tlsFor(s, quicconn.ALPN)
	tc.MinVersion = tls.VersionTLS13
	// DialAddrEarly: with a session ticket from an earlier connection the
	// CONNECT goes out as 0-RTT data, saving a round trip on reconnects.
	qc, err := quic.DialAddrEarly(ctx, net.JoinHostPort(s.Host, strconv.Itoa(s.QUICPort)), tc, d.quicConfig())
	if err != nil {
		return nil, describeDialError(err)
	}
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		_ = qc.CloseWithError(0, "")
		return nil, fmt.Errorf("open stream: %w", err)
	}
	return quicconn.New(qc, st), nil
}

func (d *dialer) quicConfig() *quic.Config {
	hs := d.cfg.ConnectTimeout
	return &quic.Config{
		HandshakeIdleTimeout: hs,
		MaxIdleTimeout:       d.cfg.QUIC.IdleTimeout,
		KeepAlivePeriod:      d.cfg.QUIC.KeepAlive,
	}
}

// probeQUIC checks whether a QUIC handshake with s succeeds now.
func (d *dialer) probeQUIC(ctx context.Context, s Server) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ConnectTimeout)
	defer cancel()
	tc := d.tlsFor(s, quicconn.ALPN)
	tc.MinVersion = tls.VersionTLS13
	qc, err := quic.DialAddr(ctx, net.JoinHostPort(s.Host, strconv.Itoa(s.QUICPort)), tc, d.quicConfig())
	if err != nil {
		return describeDialError(err)
	}
	return qc.CloseWithError(0, "probe")
}

// describeDialError says in plain words what failed: name resolution, a
// refused or unreachable address, a silent peer (UDP blocked), certificate
// verification, or the application protocol.
func describeDialError(err error) error {
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var idle *quic.IdleTimeoutError
	var hsTimeout *quic.HandshakeTimeoutError
	var transportErr *quic.TransportError
	switch {
	case errors.As(err, &dnsErr):
		return fmt.Errorf("DNS: cannot resolve %s: %w", dnsErr.Name, err)
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr):
		return fmt.Errorf("TLS verification failed: %w", err)
	case errors.As(err, &idle), errors.As(err, &hsTimeout), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no answer (UDP blocked or server down?): %w", err)
	case errors.As(err, &transportErr) && transportErr.ErrorCode.IsCryptoError():
		return fmt.Errorf("TLS handshake refused (wrong ALPN or certificate?): %w", err)
	case isTimeout(err):
		return fmt.Errorf("no answer: %w", err)
	}
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// jitter spreads d over [d/2, d) with r in [0,1).
func jitter(d time.Duration, r float64) time.Duration {
	return d/2 + time.Duration(float64(d/2)*r)
}

// dialError marks an error of the dial itself (before MQTT), already
// described in plain words.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }
