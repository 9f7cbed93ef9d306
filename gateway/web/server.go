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
// are slowed down by a doubling delay. Bearer tokens made on the page
// authenticate scripts (and Prometheus) without CSRF. The admin password's
// bcrypt hash and the tokens' SHA-256 hashes live in data_dir/web-auth.json,
// written atomically; sessions live in memory.
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
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"
)

//go:embed static
var staticFS embed.FS

// Cookie is the name of the session cookie.
const Cookie = "fieldgate_session"

// maxBody bounds a request body (configs, certificates).
const maxBody = 1 << 20

// Options are the server's collaborators.
type Options struct {
	// DataDir holds web-auth.json (and uploaded certificates under certs/).
	DataDir string
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Version is shown on the page and in the diagnostics bundle.
	Version string
	// BcryptCost hashes the admin password (0: bcrypt.DefaultCost). Tests
	// use bcrypt.MinCost.
	BcryptCost int
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// GatewayID returns the current gateway id, advertised over mDNS as
	// fieldgate-<id>.local (nil: "fieldgate").
	GatewayID func() string
}

// Server is the web page, admin API and metrics endpoint.
type Server struct {
	cfg     Config
	b       Backend
	log     *slog.Logger
	opts    Options
	now     func() time.Time
	auth    *authStore
	sess    *sessions
	lim     *limiter
	ln      net.Listener
	srv     *http.Server
	live    chan struct{} // semaphore of open live streams
	metrics *webMetrics
	logSome *rate.Sometimes // failed login log lines
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
		opts.BcryptCost = bcrypt.DefaultCost
	}
	if opts.DataDir == "" {
		return nil, errors.New("web: no data dir")
	}
	auth, err := openAuthStore(opts.DataDir, opts.BcryptCost)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, b: b, log: opts.Logger, opts: opts, now: opts.Now, auth: auth,
		sess:    newSessions(cfg.SessionTTL, cfg.SessionMax),
		lim:     newLimiter(cfg.LoginFreeAttempts, cfg.LoginDelay, cfg.LoginDelayMax),
		live:    make(chan struct{}, cfg.LiveStreams),
		metrics: newWebMetrics(),
		logSome: &rate.Sometimes{Interval: 10 * time.Second},
	}
	var tlsConf *tls.Config
	if cfg.TLS.Cert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
		if err != nil {
			return nil, fmt.Errorf("web: tls: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("web: listen %s: %w", cfg.Address, err)
	}
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if !auth.hasPassword() {
		s.log.Warn("web: no admin password set: the setup page asks for one", "address", ln.Addr().String())
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
		mux.Handle("GET /metrics", s.authed(metrics.ServeHTTP))
	} else {
		mux.Handle("GET /metrics", metrics)
	}

	// Open: session state, first boot setup, login.
	mux.HandleFunc("GET /api/v1/session", s.getSession)
	mux.HandleFunc("POST /api/v1/setup", s.setup)
	mux.HandleFunc("POST /api/v1/login", s.login)
	mux.HandleFunc("POST /api/v1/logout", s.logout)

	api := map[string]http.HandlerFunc{
		"POST /api/v1/password":                                         s.changePassword,
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
		"POST /api/v1/files/{name}":                                     s.uploadFile,
		"GET /api/v1/southbound/serial-ports":                           s.serialPorts,
		"POST /api/v1/southbound/devices/{device}/read":                 s.readNow,
		"POST /api/v1/southbound/devices/{device}/points/{point}/write": s.writePoint,
		"GET /api/v1/live":                                              s.liveStream,
		"GET /api/v1/logs":                                              s.logs,
		"GET /api/v1/diagnostics":                                       s.diagnostics,
	}
	for pattern, h := range api {
		mux.Handle(pattern, s.authed(h))
	}
	return s.common(mux)
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
}

type ctxKey struct{}

// authenticate returns the caller's identity, if any.
func (s *Server) authenticate(r *http.Request) (who, bool) {
	now := s.now()
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if ok && strings.HasPrefix(tok, tokenPrefix) && s.auth.checkToken(tok, now) {
			return who{}, true
		}
		return who{}, false
	}
	c, err := r.Cookie(Cookie)
	if err != nil {
		return who{}, false
	}
	csrf, ok := s.sess.get(c.Value, now)
	if !ok {
		return who{}, false
	}
	return who{session: c.Value, csrf: csrf}, true
}

// authed lets a request through with a valid session (plus the CSRF token
// for anything but GET) or bearer token; otherwise 401 or 403.
func (s *Server) authed(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.authenticate(r)
		if !ok {
			writeError(w, http.StatusUnauthorized, "login required")
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
