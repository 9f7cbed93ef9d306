package mqtt

import (
	"context"
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
	"sync/atomic"
	"syscall"
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
// clients with 0x8B on shutdown), but every connection passes the
// per-address cap (conns) at accept and admit, and is wrapped in a
// clientConn first.
type listener struct {
	id       string
	protocol string
	address  string
	tls      *tls.Config
	wsPath   string // WebSocket only
	admit    admitFunc
	conns    *addrConns // nil: no per-address cap
	wrap     func(net.Conn) net.Conn
	rawIO    bool // broker.listeners.raw_io: accepted sockets use internal/rawio
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
	lc := listenConfig()
	ln, err := lc.Listen(context.Background(), "tcp", l.address)
	if err != nil {
		return fmt.Errorf("listener %s: %w", l.id, err)
	}
	// Raw-syscall socket I/O (see internal/rawio): it halves the
	// runtime's scheduling overhead at moderate message rates.
	if l.rawIO {
		ln = rawio.Listener{Listener: ln}
	}
	if l.conns != nil {
		// The per-address cap applies at the TCP accept, before TLS, the
		// WebSocket upgrade or the engine spend anything on the connection.
		ln = capListener{Listener: ln, conns: l.conns}
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	return nil
}

// tcpKeepAlive is the TCP keep-alive of accepted connections: the standard
// library's default timing (first probe after 15 s idle, then every 15 s,
// dead after 9 unanswered). MQTT keep alive finds dead clients on its own,
// but a client may connect with keep alive 0, and then only TCP keep-alive
// ends the connection of a client that vanished (power loss, cable pulled).
var tcpKeepAlive = net.KeepAliveConfig{
	Enable:   true,
	Idle:     15 * time.Second,
	Interval: 15 * time.Second,
	Count:    9,
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

// addrConns counts the open connections of each source address over all
// the broker's network listeners (broker.limits.max_connections_per_address),
// so that one address cannot take every connection slot. A connection over
// the cap is closed at accept, before anything is read from it: no CONNACK,
// because the protocol version is not known yet (MQTT 5 clients see a
// closed connection, as for a refused address). The gateway's own MQTT-SN
// and CoAP sessions are in-process pipes that never pass a listener, so
// they are not counted here (those gateways have limits of their own).
type addrConns struct {
	limit   func() int                       // the cap now (it may be reloaded); 0: none
	refused func(remote net.Addr, limit int) // counts and logs one refusal

	mu   sync.Mutex
	open map[string]int // address → open connections
}

func newAddrConns(limit func() int, refused func(net.Addr, int)) *addrConns {
	return &addrConns{limit: limit, refused: refused, open: make(map[string]int)}
}

// acquire takes a connection slot of remote's address. It returns false
// (and reports the refusal) when the address already holds the cap;
// otherwise release gives the slot back, at most once however often it is
// called. Addresses that are not IP addresses are not capped.
func (a *addrConns) acquire(remote net.Addr) (release func(), ok bool) {
	key, ok := a.take(remote)
	if !ok {
		return nil, false
	}
	var once sync.Once
	return func() { once.Do(func() { a.give(key) }) }, true
}

// take takes a connection slot of remote's address and returns the key to
// give it back with (empty: the address is not counted), or false when the
// address already holds the cap (the refusal is reported).
func (a *addrConns) take(remote net.Addr) (key string, ok bool) {
	ip := remoteIP(remote)
	if ip == nil {
		return "", true
	}
	key = ip.String()
	limit := a.limit()
	a.mu.Lock()
	n := a.open[key]
	if limit > 0 && n >= limit {
		a.mu.Unlock()
		a.refused(remote, limit)
		return "", false
	}
	a.open[key] = n + 1
	a.mu.Unlock()
	return key, true
}

// give gives back a slot taken under key.
func (a *addrConns) give(key string) {
	if key == "" {
		return
	}
	a.mu.Lock()
	if a.open[key]--; a.open[key] <= 0 {
		delete(a.open, key)
	}
	a.mu.Unlock()
}

// count returns the open connections of ip (tests).
func (a *addrConns) count(ip string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.open[ip]
}

// capListener applies the per-address cap at accept: a connection from an
// address at its cap is closed at once, and the next one is accepted. What
// it returns gives its slot back when closed.
type capListener struct {
	net.Listener
	conns *addrConns
}

// Accept returns the next connection whose address is under its cap.
func (l capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key, ok := l.conns.take(c.RemoteAddr())
		if !ok {
			_ = c.Close()
			continue
		}
		return &countedConn{Conn: c, conns: l.conns, key: key}, nil
	}
}

// countedConn is a connection that holds a per-address slot until closed.
// It keeps the slot's key rather than a release closure: it is held by every
// idle connection (ADR 0004).
type countedConn struct {
	net.Conn
	conns    *addrConns // nil: not counted
	key      string
	released atomic.Bool
}

// Close closes the connection and gives its slot back, once.
func (c *countedConn) Close() error {
	err := c.Conn.Close()
	if c.conns != nil && c.released.CompareAndSwap(false, true) {
		c.conns.give(c.key)
	}
	return err
}

// CloseWrite shuts the sending side down when the connection supports it
// (clientConn.Close relies on it to let a last DISCONNECT arrive).
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// SyscallConn gives the socket of the connection when it has one
// (clientConn.Close asks the kernel whether input is left unread).
func (c *countedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// newAddrConns builds the per-address connection counter shared by the
// broker's listeners: the cap is read from the running config at each
// accept, and each refusal is counted and logged (rate-limited per address).
func (b *Broker) newAddrConns() *addrConns {
	return newAddrConns(
		func() int { return b.rt.Load().limits.MaxConnectionsPerAddress },
		func(remote net.Addr, limit int) {
			b.stats.ConnectionsOverAddressLimit.Add(1)
			ip := remoteIP(remote).String()
			b.hook.logs.warn("addrcap:"+ip, "connection refused: too many connections from this address",
				"remote", remote.String(), "limit", limit)
		},
	)
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
