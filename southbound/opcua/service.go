package opcua

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/ratelog"
)

// syncedAfter is the default test of a synchronised wall clock.
var syncedAfter = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// commandQueue is how many set commands wait per server.
const commandQueue = 64

// Service keeps one session per configured server, publishes their values
// and executes set commands. Build it with New and run it with Run.
type Service struct {
	cfg      Config
	bus      bus.Bus
	log      *slog.Logger
	now      func() time.Time
	synced   func(time.Time) bool
	certDir  string // where the application certificate is kept ("" = memory)
	trustDir string
	appURI   string
	appName  string

	servers []*server
	byName  map[string]*server
	setSub  string

	keep atomic.Pointer[map[string]bool]

	certMu sync.Mutex
	cert   *appCert
}

// New validates cfg and builds the service. Nothing is opened or connected
// before Run (the application certificate is loaded or made by Run).
func New(cfg Config, b bus.Bus, opts Options) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("opcua: config: %w", err)
	}
	if b == nil {
		return nil, errors.New("opcua: no bus")
	}
	cfg = cfg.withDefaults()
	s := &Service{
		cfg:      cfg,
		bus:      b,
		log:      opts.Logger,
		now:      opts.Now,
		synced:   opts.ClockSynced,
		trustDir: opts.TrustDir,
		appURI:   opts.ApplicationURI,
		appName:  opts.ApplicationName,
		byName:   map[string]*server{},
		setSub:   cfg.Prefix + "/+/+/set",
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("part", "opcua")
	if s.now == nil {
		s.now = time.Now
	}
	if s.synced == nil {
		s.synced = func(t time.Time) bool { return !t.Before(syncedAfter) }
	}
	if opts.DataDir != "" {
		s.certDir = filepath.Join(opts.DataDir, certDir)
		if s.trustDir == "" {
			s.trustDir = filepath.Join(s.certDir, trustSubdir)
		}
	}
	if s.appURI == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "localhost"
		}
		s.appURI = "urn:fieldgate:" + host
	}
	if s.appName == "" {
		s.appName = "fieldgate"
	}
	for i, sc := range cfg.Servers {
		srv := newServer(s, i, sc)
		s.servers = append(s.servers, srv)
		s.byName[sc.Name] = srv
	}
	return s, nil
}

// newServer builds a server's points and queues.
func newServer(s *Service, index int, sc Server) *server {
	srv := &server{
		svc:         s,
		cfg:         sc,
		index:       index,
		byName:      map[string]*point{},
		statusTopic: s.cfg.Prefix + "/" + sc.Name + "/status",
		cmds:        make(chan command, commandQueue),
		wake:        make(chan struct{}, 1),
		sem:         make(chan struct{}, sc.MaxInFlight),
		logLimit:    ratelog.NewLimiter(ratelog.Config{Every: 10 * time.Second, Burst: 3, Now: s.now}),
		stats:       ServerStats{Name: sc.Name, Errors: map[string]uint64{}},
	}
	for i, pc := range sc.Points {
		p := &point{
			cfg:         pc,
			index:       i,
			conv:        newConv(pc),
			topic:       s.cfg.Prefix + "/" + sc.Name + "/" + pc.Name,
			resultTopic: s.cfg.Prefix + "/" + sc.Name + "/" + pc.Name + "/set/result",
			unitJSON:    appendString(nil, pc.Unit),
		}
		if pc.Type != "" {
			p.cfgType, _ = typeByName(pc.Type)
		}
		srv.points = append(srv.points, p)
		srv.byName[pc.Name] = p
	}
	return srv
}

// Run connects to every server, keeps the sessions up (reconnecting with a
// backoff) and serves set commands until ctx is done. It publishes every
// server's status "offline" (reason "stopped") before it returns, except
// those passed to KeepStatus, and returns nil after a clean stop.
func (s *Service) Run(ctx context.Context) error {
	unsub, err := s.bus.Subscribe(s.setSub, s.onSet)
	if err != nil {
		return fmt.Errorf("opcua: subscribe %s: %w", s.setSub, err)
	}
	defer unsub()

	var wg sync.WaitGroup
	for _, srv := range s.servers {
		wg.Go(func() { srv.run(ctx) })
	}
	wg.Wait()

	stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	var keep map[string]bool
	if k := s.keep.Load(); k != nil {
		keep = *k
	}
	for _, srv := range s.servers {
		if !keep[srv.cfg.Name] {
			srv.publishStatus(stop, false, "stopped")
		}
	}
	return nil
}

// Progress returns the progress of the server worker that is furthest
// behind: when it last went round its loop (a notification, a poll, a
// command, a look at the connection at least every second, a reconnect
// attempt). A worker blocked inside a request stops it advancing. It is the
// zero time while a worker has not started, or when there is no server.
func (s *Service) Progress() time.Time {
	var oldest time.Time
	for i, srv := range s.servers {
		n := srv.progress.Load()
		if n == 0 {
			return time.Time{}
		}
		if t := time.Unix(0, n); i == 0 || t.Before(oldest) {
			oldest = t
		}
	}
	return oldest
}

// KeepStatus tells the service that the servers named go on in the service
// that replaces it (a config change): when it stops, their retained status
// is left as it is. Call it before stopping the service.
func (s *Service) KeepStatus(names []string) {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	s.keep.Store(&m)
}

// onSet takes a set command from the bus. It runs in the publisher's
// goroutine: it only parses the topic and enqueues.
func (s *Service) onSet(m bus.Message) {
	if m.Origin == Origin {
		return
	}
	rest, ok := strings.CutPrefix(m.Topic, s.cfg.Prefix+"/")
	if !ok {
		return
	}
	name, rest, _ := strings.Cut(rest, "/")
	pointName, _, _ := strings.Cut(rest, "/")
	srv := s.byName[name]
	if srv == nil {
		return // another part's device, or nobody's
	}
	cmd := command{
		point:    pointName,
		topic:    m.Topic,
		payload:  append([]byte(nil), m.Payload...),
		received: m.Time,
		expiry:   m.Expiry,
	}
	select {
	case srv.cmds <- cmd:
	default:
		srv.mu.Lock()
		srv.stats.Dropped++
		srv.mu.Unlock()
		srv.logf(slog.LevelWarn, "set command dropped: queue full", "point", pointName)
	}
}

// Stats returns every server's counters, in config order.
func (s *Service) Stats() []ServerStats {
	out := make([]ServerStats, len(s.servers))
	for i, srv := range s.servers {
		srv.mu.Lock()
		out[i] = srv.stats
		out[i].Errors = maps.Clone(srv.stats.Errors)
		out[i].RoundTripP50, out[i].RoundTripP99 = srv.rtt.Quantiles()
		srv.mu.Unlock()
	}
	return out
}

// Servers describes every server, in config order.
func (s *Service) Servers() []ServerInfo {
	out := make([]ServerInfo, len(s.servers))
	for i, srv := range s.servers {
		c := srv.cfg
		info := ServerInfo{
			Name: c.Name, Endpoint: c.Endpoint, Policy: c.Security.Policy, Mode: c.Security.Mode,
			Auth: "anonymous", Points: len(c.Points),
		}
		switch {
		case c.Auth.Username != "":
			info.Auth = "username"
		case c.Auth.Certificate != "":
			info.Auth = "certificate"
		}
		srv.mu.Lock()
		info.Online, info.LastError = srv.stats.Online, srv.stats.LastError
		info.Server, info.Untrusted = srv.serverCert, srv.untrusted
		srv.mu.Unlock()
		out[i] = info
	}
	return out
}

// Trust adds der (a server certificate, DER or PEM) to the trust
// directory and makes the servers waiting to connect try again at once.
func (s *Service) Trust(der []byte) (Certificate, error) {
	if s.trustDir == "" {
		return Certificate{}, errors.New("opcua: trust: no trust directory (no data directory configured)")
	}
	c, err := Trust(s.trustDir, der)
	if err != nil {
		return Certificate{}, err
	}
	s.log.Info("server certificate trusted", "thumbprint", c.Thumbprint, "subject", c.Subject)
	for _, srv := range s.servers {
		select {
		case srv.wake <- struct{}{}:
		default:
		}
	}
	return c, nil
}

// ClientCertificate returns the gateway's application certificate (made
// on first use), which a server's administrator trusts on the server side.
func (s *Service) ClientCertificate() (Certificate, error) {
	c, err := s.appCert()
	if err != nil {
		return Certificate{}, err
	}
	return ParseCertificate(c.der)
}

// appCert loads or makes the application certificate, once.
func (s *Service) appCert() (*appCert, error) {
	s.certMu.Lock()
	defer s.certMu.Unlock()
	if s.cert != nil {
		return s.cert, nil
	}
	c, err := loadOrCreateCert(s.certDir, s.appURI, s.appName)
	if err != nil {
		return nil, err
	}
	s.cert = &c
	return s.cert, nil
}
