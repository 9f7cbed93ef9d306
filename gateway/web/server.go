// Package web serves fieldgate's local setup page, its JSON admin API under
// /api/v1/, Prometheus metrics on /metrics and the /healthz and /readyz
// probes, all on one port.
//
// The page is plain HTML, CSS and JavaScript embedded with go:embed: it
// works without internet access and without a build step. Everything it
// does goes through the API, which scripts can use too with a bearer token.
//
// Auth: on first boot no admin password exists and the page asks for one
// before anything else. Then a login gives a session cookie (HttpOnly,
// SameSite=Strict, Secure over HTTPS) and a CSRF token that every change
// must carry in the X-CSRF-Token header. Wrong passwords from one address
// are slowed down by a doubling delay, counted before the password is
// checked, and at most web.login_concurrency checks run at once. Bearer
// tokens made on the page authenticate scripts without CSRF, each with a
// scope: metrics (GET /metrics only, for Prometheus), read (every GET but
// the token list) or admin (everything). The admin password's bcrypt hash
// and the tokens' SHA-256 hashes live in data_dir/web-auth.json, written
// atomically; sessions live in memory.
//
// Limits: a whole request must arrive within web.read_timeout and its
// answer be written within web.write_timeout (the live view sets a
// deadline per write instead), idle connections close after
// web.idle_timeout, and at most web.max_connections are open at once (and
// never more than a quarter of the open file limit, so that the broker
// keeps descriptors to accept with).
//
// No secret is ever returned: configs are redacted (see Redacted) and an
// upload that keeps Redacted in a secret field keeps the running secret.
//
// What the page needs from the gateway is the Backend interface.
package web

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fieldgate/fieldgate/board"
	"github.com/fieldgate/fieldgate/internal/ratelog"
)

//go:embed static
var staticFS embed.FS

// Cookie is the name of the session cookie.
const Cookie = "fieldgate_session"

// maxBody bounds a request body (configs, certificates).
const maxBody = 1 << 20

// Fixed bounds of a request: its headers must arrive within
// headerTimeout (or read_timeout when shorter) and fit in maxHeaderBytes.
const (
	headerTimeout  = 10 * time.Second
	maxHeaderBytes = 16 << 10
)

// fileShare is the share of the open file limit the page may hold in
// connections (1/fileShare): the rest is the broker's reserve.
const fileShare = 4

// Options are the server's collaborators.
type Options struct {
	// DataDir holds web-auth.json (and uploaded certificates under certs/).
	DataDir string
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Version is shown on the page and in the diagnostics bundle.
	Version string
	// BcryptCost hashes the admin password and the broker users made on the
	// page (0: 12, as `fieldgate passwd`). Tests use bcrypt.MinCost.
	BcryptCost int
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// GatewayID returns the current gateway id, advertised over mDNS as
	// fieldgate-<id>.local (nil: "fieldgate").
	GatewayID func() string
	// FileLimit is the process's open file limit, of which the page holds
	// at most a quarter in connections (0: read it from the system).
	FileLimit uint64
	// RequestStop, if not nil, asks the process to stop the gateway: the
	// page's factory reset uses it (nil: the page cannot reset).
	RequestStop func()
	// Updater, if not nil, installs update bundles (POST /api/v1/update).
	Updater Updater
}

// Server is the web page, admin API and metrics endpoint.
type Server struct {
	cfg     Config
	b       Backend
	log     *slog.Logger
	opts    Options
	now     func() time.Time
	auth    *authStore
	gate    *setupGate // the first-boot setup code
	sess    *sessions
	lim     *limiter
	ln      net.Listener
	srv     *http.Server
	live    chan struct{} // semaphore of open live streams
	logins  chan struct{} // semaphore of running password checks
	conns   int           // connections allowed at once
	metrics *webMetrics
	logSome *ratelog.Logger // failed login log lines: one per 10 s each
	hist    *history        // the Overview's numbers over the last 24 h
}

// New opens the auth state, binds cfg.Address (a busy port is an error
// here, not in Run) and prepares the handlers.
func New(cfg Config, b Backend, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.BcryptCost == 0 {
		opts.BcryptCost = 12 // the cost of `fieldgate passwd`
	}
	if opts.DataDir == "" {
		return nil, errors.New("web: no data dir")
	}
	auth, err := openAuthStore(opts.DataDir, opts.BcryptCost)
	if err != nil {
		return nil, err
	}
	gate, newCode, err := openSetupGate(opts.DataDir, auth.hasPassword())
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, b: b, log: opts.Logger, opts: opts, now: opts.Now, auth: auth, gate: gate,
		sess:    newSessions(cfg.SessionTTL, cfg.SessionMax),
		lim:     newLimiter(cfg.LoginFreeAttempts, cfg.LoginDelay, cfg.LoginDelayMax),
		live:    make(chan struct{}, cfg.LiveStreams),
		logins:  make(chan struct{}, cfg.LoginConcurrency),
		metrics: newWebMetrics(),
		logSome: ratelog.New(opts.Logger, ratelog.Config{Every: 10 * time.Second, Now: opts.Now}),
		hist:    newHistory(),
	}
	var tlsConf *tls.Config
	if cfg.TLS.Cert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
		if err != nil {
			return nil, fmt.Errorf("web: tls: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	s.conns = cfg.MaxConnections
	files := opts.FileLimit
	if files == 0 {
		files = board.FileLimit()
	}
	if share := int(min(files/fileShare, 1<<20)); files > 0 && s.conns > share {
		s.conns = max(share, 1)
		s.log.Warn("web: max_connections lowered to a quarter of the open file limit, the broker's reserve",
			"max_connections", cfg.MaxConnections, "files", files, "allowed", s.conns)
	}
	s.metrics.connLimit.Set(float64(s.conns))
	raw, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("web: listen %s: %w", cfg.Address, err)
	}
	var ln net.Listener = newLimitListener(raw, s.conns, s.metrics.connections)
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	}
	s.ln = ln
	if auth.unscoped > 0 {
		s.log.Info("web: bearer tokens made before scopes keep full rights (scope admin)", "tokens", auth.unscoped)
	}
	s.srv = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: min(headerTimeout, cfg.ReadTimeout),
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if code := gate.current(); code != "" {
		// The one secret ever logged: the journal is readable only by
		// whoever has the device, which is who the code is for.
		s.log.Warn("web: first boot: the setup page asks for this setup code and an admin password",
			"setup_code", code, "new", newCode, "address", ln.Addr().String())
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Handler is the server's HTTP handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.srv.Handler }

// Run serves until ctx is done, then shuts down (waiting up to 5 s for
// requests in progress; live streams end with ctx).
func (s *Server) Run(ctx context.Context) error {
	s.srv.BaseContext = func(net.Listener) context.Context { return ctx }
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	histCtx, stopHist := context.WithCancel(ctx)
	histDone := make(chan struct{})
	go func() { defer close(histDone); s.runHistory(histCtx) }()
	defer func() { stopHist(); <-histDone }()
	if s.cfg.MDNS {
		mdnsCtx, stopMDNS := context.WithCancel(ctx)
		mdnsDone := make(chan struct{})
		go func() { defer close(mdnsDone); s.advertise(mdnsCtx) }()
		defer func() { stopMDNS(); <-mdnsDone }()
	}
	select {
	case err := <-errc:
		return fmt.Errorf("web: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if err != nil {
		s.srv.Close() // connections still busy after 5 s (a request body that never comes) are dropped
	}
	<-errc
	if err != nil {
		return fmt.Errorf("web: shutdown: %w", err)
	}
	return nil
}

// routes builds the mux. Handlers wrapped in s.authed need a session (and
// a CSRF token for changes) or a bearer token.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", s.readyz)
	metrics := promhttp.HandlerFor(prometheus.Gatherers{s.b.Registry(), s.metrics.reg}, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)})
	if s.cfg.MetricsAuth {
		mux.Handle("GET /metrics", s.authed(scopeMetrics, metrics.ServeHTTP))
	} else {
		mux.Handle("GET /metrics", metrics)
	}

	// Open: session state, first boot setup, login.
	mux.HandleFunc("GET /api/v1/session", s.getSession)
	mux.HandleFunc("POST /api/v1/setup", s.setup)
	mux.HandleFunc("GET /api/v1/exposure", s.getExposure)
	mux.HandleFunc("POST /api/v1/login", s.login)
	mux.HandleFunc("POST /api/v1/logout", s.logout)

	api := map[string]http.HandlerFunc{
		"POST /api/v1/password":                                         s.changePassword,
		"POST /api/v1/factory-reset":                                    s.factoryReset,
		"POST /api/v1/update":                                           s.postUpdate,
		"GET /api/v1/update":                                            s.getUpdate,
		"POST /api/v1/update/reboot":                                    s.postReboot,
		"GET /api/v1/tokens":                                            s.listTokens,
		"POST /api/v1/tokens":                                           s.createToken,
		"DELETE /api/v1/tokens/{id}":                                    s.deleteToken,
		"GET /api/v1/status":                                            s.status,
		"GET /api/v1/config":                                            s.getConfig,
		"GET /api/v1/config.yaml":                                       s.downloadConfig,
		"PUT /api/v1/config":                                            s.putConfig,
		"PUT /api/v1/config/{section}":                                  s.putSection,
		"GET /api/v1/clients":                                           s.clients,
		"DELETE /api/v1/clients/{id}":                                   s.disconnect,
		"PUT /api/v1/broker/users/{username}":                           s.setUser,
		"DELETE /api/v1/broker/users/{username}":                        s.deleteUser,
		"POST /api/v1/uplink/test":                                      s.testUplink,
		"POST /api/v1/rules/test":                                       s.testRule,
		"POST /api/v1/files/{name}":                                     s.uploadFile,
		"GET /api/v1/southbound/serial-ports":                           s.serialPorts,
		"POST /api/v1/southbound/devices/{device}/read":                 s.readNow,
		"POST /api/v1/southbound/devices/{device}/points/{point}/write": s.writePoint,
		"GET /api/v1/live":                                              s.streaming(s.liveStream),
		"GET /api/v1/logs":                                              s.logs,
		"GET /api/v1/diagnostics":                                       s.diagnostics,
		"POST /api/v1/restart":                                          s.restart,
		"GET /api/v1/history":                                           s.getHistory,
	}
	maps.Copy(api, s.tagRoutes())
	maps.Copy(api, s.publishRoutes())
	maps.Copy(api, s.probeRoutes())
	maps.Copy(api, s.opcuaRoutes())
	for pattern, h := range api {
		mux.Handle(pattern, s.authed(routeScope(pattern), h))
	}
	return s.common(mux)
}

// routeScope is the token scope an API route needs: read for a GET,
// admin for every change, and admin for the token list too (managing
// tokens is the admin's business). The diagnostics zip is a GET like the
// others: it holds only what the read routes return (the redacted config,
// the status, the clipped log ring, versions).
func routeScope(pattern string) string {
	switch {
	case pattern == "GET /api/v1/tokens":
		return scopeAdmin
	case strings.HasPrefix(pattern, "GET "):
		return scopeRead
	default:
		return scopeAdmin
	}
}

// streaming adapts a handler that streams its answer for as long as the
// client stays (the live view) to the server's timeouts: it lifts the
// whole-request read deadline (which would end the stream's context at
// web.read_timeout) and gives every write its own web.write_timeout
// deadline instead of one for the whole answer. A client that stops
// reading is still dropped: its next write times out.
func (s *Server) streaming(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Time{}); err != nil {
			writeError(w, http.StatusInternalServerError, "streaming not supported")
			return
		}
		h(&deadlineWriter{ResponseWriter: w, rc: rc, d: s.cfg.WriteTimeout}, r)
	}
}

// deadlineWriter sets a fresh write deadline before each write and flush.
type deadlineWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	if err := w.rc.SetWriteDeadline(time.Now().Add(w.d)); err != nil {
		return 0, err
	}
	return w.ResponseWriter.Write(p)
}

// Flush sends what is buffered, within its own deadline.
func (w *deadlineWriter) Flush() {
	if w.rc.SetWriteDeadline(time.Now().Add(w.d)) == nil {
		w.rc.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// limitListener holds at most n accepted connections open at once: Accept
// waits for a connection to close before taking the next one, which waits
// in the kernel's accept queue without costing the process a descriptor.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	open      prometheus.Gauge
}

func newLimitListener(ln net.Listener, n int, open prometheus.Gauge) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{}), open: open}
}

// Accept waits for a free slot, then for a connection.
func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	l.open.Inc()
	return &limitConn{Conn: c, release: func() { l.open.Dec(); <-l.sem }}, nil
}

// Close stops accepting; a waiting Accept returns at once.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn gives its slot back when closed (once).
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// common adds the security headers and counts requests.
func (s *Server) common(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if strings.HasPrefix(r.URL.Path, "/api/") {
			h.Set("Cache-Control", "no-store")
		}
		if s.cfg.TLS.Cert != "" {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		s.metrics.requests.Inc()
		next.ServeHTTP(w, r)
	})
}

// who is how a request authenticated.
type who struct {
	session string // cookie value; "" for bearer tokens
	csrf    string
	scope   string // scopeAdmin for sessions
}

type ctxKey struct{}

// authenticate returns the caller's identity, if any.
func (s *Server) authenticate(r *http.Request) (who, bool) {
	now := s.now()
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || !strings.HasPrefix(tok, tokenPrefix) {
			return who{}, false
		}
		scope, ok := s.auth.checkToken(tok, now)
		return who{scope: scope}, ok
	}
	c, err := r.Cookie(Cookie)
	if err != nil {
		return who{}, false
	}
	csrf, ok := s.sess.get(c.Value, now)
	if !ok {
		return who{}, false
	}
	return who{session: c.Value, csrf: csrf, scope: scopeAdmin}, true
}

// authed lets a request through with a valid session (plus the CSRF token
// for anything but GET) or a bearer token whose scope allows need;
// otherwise 401 or 403.
func (s *Server) authed(need string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.authenticate(r)
		if !ok {
			writeError(w, http.StatusUnauthorized, "login required")
			return
		}
		if !scopeAllows(id.scope, need) {
			s.metrics.scopeDenied.Inc()
			writeError(w, http.StatusForbidden, fmt.Sprintf("this token's scope (%s) does not allow %s %s: it needs scope %s", id.scope, r.Method, r.URL.Path, need))
			return
		}
		if id.session != "" && r.Method != http.MethodGet && r.Method != http.MethodHead {
			got := r.Header.Get("X-CSRF-Token")
			if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(id.csrf)) != 1 {
				writeError(w, http.StatusForbidden, "missing or wrong X-CSRF-Token header")
				return
			}
		}
		h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, id)))
	})
}

// clientAddr is the request's source address (no proxy headers trusted).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// apiError is the body of every error response.
type apiError struct {
	Error  string       `json:"error"`
	Fields []FieldError `json:"fields,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, apiError{Error: msg})
}

func writeFields(w http.ResponseWriter, msg string, fields ...FieldError) {
	for i, f := range fields {
		if f.Words == "" {
			fields[i] = describeFields(nil, []FieldError{f})[0]
		}
	}
	writeJSON(w, http.StatusBadRequest, apiError{Error: msg, Fields: fields})
}

// readJSON decodes a JSON request body strictly into v; on failure it has
// written the 400 and returns false.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeFields(w, "bad JSON body: "+err.Error())
		return false
	}
	return true
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.b.Ready() {
		http.Error(w, "not ready\n", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ready\n")
}
