package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/quic-go/quic-go"

	"github.com/fieldgate/fieldgate/internal/quicconn"
)

// quicListener serves MQTT over QUIC as EMQX does: ALPN "mqtt", TLS 1.3,
// one bidirectional stream per MQTT connection (the first stream the client
// opens). It makes a fieldgate usable as the cloud side of another one's
// uplink, and lets gateways be chained.
type quicListener struct {
	id      string
	address string
	tls     *tls.Config
	conf    *quic.Config
	admit   admitFunc
	conns   *addrConns // nil: no per-address cap
	wrap    func(net.Conn) net.Conn
	log     *slog.Logger

	mu     sync.Mutex
	ln     *quic.EarlyListener
	cancel context.CancelFunc
	closed bool
}

func newQUICListener(l QUICListener, tc *tls.Config) *quicListener {
	tc = tc.Clone()
	tc.MinVersion = tls.VersionTLS13 // QUIC is TLS 1.3 only
	tc.NextProtos = []string{quicconn.ALPN}
	return &quicListener{
		id:      "quic",
		address: l.Address,
		tls:     tc,
		conf: &quic.Config{
			MaxIdleTimeout:       l.IdleTimeout,
			KeepAlivePeriod:      l.IdleTimeout / 3,
			HandshakeIdleTimeout: 5 * time.Second,
			// 0-RTT: a returning client's CONNECT travels with its first
			// flight. It is replayable, which MQTT tolerates here: a
			// replayed CONNECT only reconnects the same session, and the
			// engine waits for the handshake before it answers (below).
			Allow0RTT: true,
		},
	}
}

// ID returns "quic".
func (l *quicListener) ID() string { return l.id }

// Protocol returns "quic".
func (l *quicListener) Protocol() string { return "quic" }

// Address returns the bound UDP address once listening.
func (l *quicListener) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Init binds the UDP socket, so a busy port fails at start.
func (l *quicListener) Init(log *slog.Logger) error {
	l.log = log
	ln, err := quic.ListenAddrEarly(l.address, l.tls, l.conf)
	if err != nil {
		return fmt.Errorf("listen quic %s: %w", l.address, err)
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	return nil
}

// Serve accepts QUIC connections until Close; each one's first stream is
// handed to the engine.
func (l *quicListener) Serve(establish listeners.EstablishFn) {
	ctx, cancel := context.WithCancel(context.Background())
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		cancel()
		return
	}
	l.cancel = cancel
	l.mu.Unlock()
	for {
		qc, err := l.ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, quic.ErrServerClosed) {
				return
			}
			l.log.Warn("quic accept failed", "error", err)
			continue
		}
		if !l.admit(qc.RemoteAddr()) {
			_ = qc.CloseWithError(0, "refused")
			continue
		}
		release := func() {}
		if l.conns != nil {
			var ok bool
			if release, ok = l.conns.acquire(qc.RemoteAddr()); !ok {
				_ = qc.CloseWithError(0, "too many connections from this address")
				continue
			}
		}
		go func() {
			defer release()
			l.serveConn(ctx, qc, establish)
		}()
	}
}

func (l *quicListener) serveConn(ctx context.Context, qc *quic.Conn, establish listeners.EstablishFn) {
	// Early data may already hold the CONNECT; the client's certificate
	// (and so a username taken from it) is known only once the handshake
	// is complete.
	select {
	case <-qc.HandshakeComplete():
	case <-qc.Context().Done():
		return
	case <-ctx.Done():
		_ = qc.CloseWithError(0, "shutting down")
		return
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	st, err := qc.AcceptStream(sctx)
	cancel()
	if err != nil {
		_ = qc.CloseWithError(0, "no stream")
		return
	}
	c := l.wrap(quicconn.New(qc, st))
	if err := establish(l.id, c); err != nil && !isQuietClose(err) {
		l.log.Debug("client connection ended", "listener", l.id, "remote", qc.RemoteAddr().String(), "error", err)
	}
	// Through the wrapper, which lets a last DISCONNECT reach the client
	// before the QUIC connection goes (closing it at once discards it).
	_ = c.Close()
}

// Close stops accepting and lets the engine disconnect this listener's
// clients.
func (l *quicListener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	already := l.closed
	l.closed = true
	cancel := l.cancel
	l.mu.Unlock()
	if already {
		return
	}
	if cancel != nil {
		cancel()
	}
	closeClients(l.id)
	if l.ln != nil {
		_ = l.ln.Close()
	}
}
