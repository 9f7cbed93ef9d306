package mqtt

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/fieldgate/fieldgate/internal/rawio"
	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// admitFunc decides whether a freshly accepted connection may go on to the
// MQTT handshake (banned addresses, connection rate per address).
type admitFunc func(remote net.Addr) bool

// listener is one network endpoint. It implements the engine's
// listeners.Listener, so the engine runs and closes it (and disconnects its
// clients with 0x8B on shutdown), but every connection passes through admit
// and is wrapped in a clientConn first.
type listener struct {
	id       string
	protocol string
	address  string
	tls      *tls.Config
	wsPath   string // WebSocket only
	admit    admitFunc
	wrap     func(net.Conn) net.Conn
	log      *slog.Logger

	mu     sync.Mutex
	ln     net.Listener
	http   *http.Server // WebSocket only
	closed bool
}

// ID returns the listener id ("tcp", "tls", "ws", "wss").
func (l *listener) ID() string { return l.id }

// Protocol returns the protocol name.
func (l *listener) Protocol() string { return l.protocol }

// Address returns the bound address (with the real port when :0 was asked).
func (l *listener) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Init binds the address, so a busy port is reported before the broker starts.
func (l *listener) Init(log *slog.Logger) error {
	l.log = log
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return fmt.Errorf("listener %s: %w", l.id, err)
	}
	l.mu.Lock()
	// Raw-syscall socket I/O (see internal/rawio): it halves the
	// runtime's scheduling overhead at moderate message rates.
	l.ln = rawio.Listener{Listener: ln}
	l.mu.Unlock()
	return nil
}

// Serve accepts connections until Close.
func (l *listener) Serve(establish listeners.EstablishFn) {
	if l.wsPath != "" {
		l.serveWebSocket(establish)
		return
	}
	ln := l.ln
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls)
	}
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary failure (EMFILE, …): back off instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("accept failed", "listener", l.id, "error", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !l.admit(conn.RemoteAddr()) {
			_ = conn.Close()
			continue
		}
		go func() {
			if err := establish(l.id, l.wrap(conn)); err != nil && !isQuietClose(err) {
				l.log.Debug("client connection ended", "listener", l.id, "remote", conn.RemoteAddr().String(), "error", err)
			}
		}()
	}
}

// Close stops accepting and lets the engine disconnect this listener's clients.
func (l *listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	already := l.closed
	l.closed = true
	l.mu.Unlock()
	if already {
		return
	}
	if l.http != nil {
		_ = l.http.Close()
	}
	if l.ln != nil {
		_ = l.ln.Close()
	}
	closeClients(l.id)
}

func isQuietClose(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

// serveWebSocket serves MQTT over WebSocket on wsPath.
func (l *listener) serveWebSocket(establish listeners.EstablishFn) {
	upgrader := &websocket.Upgrader{
		Subprotocols:    []string{"mqtt", "mqttv3.1"},
		CheckOrigin:     func(*http.Request) bool { return true },
		ReadBufferSize:  1024,
		WriteBufferSize: 1024,
	}
	mux := http.NewServeMux()
	mux.HandleFunc(l.wsPath, func(w http.ResponseWriter, r *http.Request) {
		if !websocket.IsWebSocketUpgrade(r) {
			http.Error(w, "MQTT over WebSocket: upgrade required", http.StatusUpgradeRequired)
			return
		}
		ra := remoteAddrOf(r)
		if !l.admit(ra) {
			http.Error(w, "connection refused", http.StatusTooManyRequests)
			return
		}
		ws, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return // the upgrader has answered with an HTTP error
		}
		c := &wsConn{ws: ws, remote: ra, tls: r.TLS}
		if err := establish(l.id, l.wrap(c)); err != nil && !isQuietClose(err) {
			l.log.Debug("client connection ended", "listener", l.id, "remote", ra.String(), "error", err)
		}
	})
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         l.tls,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(l.log.Handler(), slog.LevelDebug),
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.http = srv
	l.mu.Unlock()
	var err error
	if l.tls != nil {
		err = srv.ServeTLS(l.ln, "", "")
	} else {
		err = srv.Serve(l.ln)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		l.log.Error("websocket listener stopped", "listener", l.id, "error", err)
	}
}

func remoteAddrOf(r *http.Request) net.Addr {
	if a, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
		return a
	}
	return &net.TCPAddr{}
}

// errNotBinary is returned when a WebSocket client sends a text frame.
var errNotBinary = errors.New("websocket: MQTT needs binary frames")

// wsConn presents a WebSocket as the byte stream the engine reads packets
// from: each binary message is a run of bytes, and each Write is one binary
// message. Text frames are a protocol error and end the connection.
type wsConn struct {
	ws     *websocket.Conn
	r      io.Reader
	remote net.Addr
	tls    *tls.ConnectionState
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			op, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errNotBinary
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error                       { return c.ws.Close() }
func (c *wsConn) LocalAddr() net.Addr                { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr               { return c.remote }
func (c *wsConn) SetDeadline(t time.Time) error      { return c.ws.NetConn().SetDeadline(t) }
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }

// serverTLS builds the TLS configuration of a listener from its files.
func serverTLS(f TLSFiles) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("load certificate %s and key %s: %w", f.Cert, f.Key, err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	}
	if f.MinVersion == "1.3" {
		cfg.MinVersion = tls.VersionTLS13
	}
	if f.ClientCA != "" {
		pem, err := os.ReadFile(f.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("read client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA %s: no certificate found", f.ClientCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if f.RequireClientCert {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return cfg, nil
}
