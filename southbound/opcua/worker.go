package opcua

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/ratelog"
	"github.com/fieldgate/fieldgate/southbound/roundtrip"
)

// Request batching and timing.
const (
	maxNodesPerRequest = 500             // nodes per Read, monitored items per create
	watchdogEvery      = 5 * time.Second // a ServerState read when nothing else proves the session alive
	tick               = time.Second     // the worker looks at least this often (progress)
	keepAliveTarget    = 10 * time.Second
)

// server is one configured server and its worker. Fields not under mu are
// owned by the worker goroutine.
type server struct {
	svc         *Service
	cfg         Server
	index       int
	points      []*point
	byName      map[string]*point
	statusTopic string
	cmds        chan command
	wake        chan struct{}
	sem         chan struct{} // bounds the requests in flight
	logLimit    *ratelog.Limiter
	progress    atomic.Int64

	// client is the session's client while one is up (for Browse).
	client atomic.Pointer[opcua.Client]

	online      bool
	statusKnown bool
	reason      string         // why it is offline, as published
	sessions    int            // sessions established by this worker
	clientOpts  []opcua.Option // the last session's client options (for a resume)
	subID       uint32         // the session's subscription, 0 when none
	resume      *resumable     // a session lost to a network cut, to re-activate

	mu         sync.Mutex
	stats      ServerStats
	rtt        roundtrip.Window
	serverCert *Certificate
	untrusted  *Certificate
}

// point is one configured point, its resolution in the current session
// and what was last published.
type point struct {
	cfg         Point
	index       int
	conv        conv
	topic       string
	resultTopic string
	unitJSON    []byte
	cfgType     builtin // from the config; id 0 when not set

	node       *ua.NodeID // resolved in this session
	typ        builtin    // the type values are written as (config, else DataType)
	resolveErr error
	polled     bool

	published  bool
	lastV      []byte // JSON of the last published value
	lastQ      string
	lastStatus ua.StatusCode
	lastGood   []byte // JSON of the last good value, for stale
	lastNum    float64
	hasNum     bool

	// notified is the last value published from a notification: a
	// resumed subscription sends no initial values, and this one is still
	// the server's.
	notified *notified
}

// notified is a published notification value.
type notified struct {
	payload []byte
	v       []byte
	q       string
	status  ua.StatusCode
}

// command is a set command queued for a server.
type command struct {
	point    string
	topic    string
	payload  []byte
	received time.Time
	expiry   time.Duration
}

// run keeps a session up until ctx is done.
func (s *server) run(ctx context.Context) {
	backoff := DefaultReconnect
	for {
		s.progress.Store(time.Now().UnixNano())
		started := time.Now()
		err := s.session(ctx)
		s.svc.log.Debug("session ended", "server", s.cfg.Name, "err", err, "lasted", time.Since(started))
		if ctx.Err() != nil {
			return
		}
		s.offline(ctx, err)
		if time.Since(started) > 2*MaxReconnect {
			backoff = DefaultReconnect
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, MaxReconnect)
		if !s.idle(ctx, wait) {
			return
		}
	}
}

// idle waits before the next connection attempt, answering commands (the
// server is offline) and waking early when a certificate is trusted.
func (s *server) idle(ctx context.Context, wait time.Duration) bool {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		s.progress.Store(time.Now().UnixNano())
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		case <-s.wake:
			return true
		case cmd := <-s.cmds:
			s.write(ctx, nil, cmd)
		case <-t.C:
		}
	}
}

// offline publishes the server offline and its points stale, and counts
// the error that ended the session.
func (s *server) offline(ctx context.Context, err error) {
	if err == nil {
		err = errLost
	}
	s.countError(err)
	if s.online || !s.statusKnown || s.reason != err.Error() {
		s.logf(slog.LevelWarn, "server offline", "kind", errorKind(err), "err", err)
		s.publishStatus(ctx, false, err.Error())
	}
	now := s.svc.now()
	for _, p := range s.points {
		if p.lastQ != QualityStale || !p.published {
			s.publishStale(ctx, p, now)
		}
	}
}

// countError counts err by kind and keeps it as the last error.
func (s *server) countError(err error) {
	s.mu.Lock()
	s.stats.Errors[errorKind(err)]++
	s.stats.LastError = err.Error()
	s.stats.LastErrorTime = s.svc.now()
	s.mu.Unlock()
}

// call runs one request with the server's timeout, bounded in-flight
// requests and round-trip statistics.
func (s *server) call(ctx context.Context, fn func(context.Context) error) error {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.sem }()
	tctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	start := time.Now()
	err := fn(tctx)
	took := time.Since(start)
	s.progress.Store(time.Now().UnixNano()) // a finished request is progress
	if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		err = kindError{ErrKindTimeout, fmt.Errorf("no answer within %s", s.cfg.Timeout)}
	}
	if err == nil || errorKind(err) == ErrKindStatus {
		s.mu.Lock()
		s.rtt.Add(took)
		s.mu.Unlock()
	}
	return err
}

// session connects, reads until the connection is lost or ctx is done,
// and closes. It returns why the session ended (nil when ctx ended).
func (s *server) session(ctx context.Context) (err error) {
	stateCh := make(chan opcua.ConnState, 16)
	lost := make(chan struct{})
	done := make(chan struct{})
	var watchers sync.WaitGroup
	watchers.Go(func() {
		connected, closed := false, false
		for {
			select {
			case st := <-stateCh:
				switch st {
				case opcua.Connected:
					connected = true
				case opcua.Disconnected, opcua.Closed:
					if connected && !closed {
						closed = true
						close(lost)
					}
				}
			case <-done:
				return
			}
		}
	})
	defer func() {
		close(done)
		watchers.Wait()
	}()

	notify := make(chan *opcua.PublishNotificationData, 64)
	var c *opcua.Client
	var pub *publisher
	established := false // set up and online: only such a session is resumed
	if s.resume != nil {
		c, pub, err = s.resumeSession(ctx, notify)
		if err != nil {
			return err
		}
	}
	resumed := c != nil
	if !resumed {
		s.subID = 0
		c, err = s.connect(ctx, stateCh)
		if err != nil {
			return err
		}
	}
	defer func() {
		s.client.Store(nil)
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
		defer cancel()
		if pub != nil {
			pub.cancel()
		}
		var keep *opcua.Session
		if established && err != nil && ctx.Err() == nil && resumableErr(err) {
			// Keep the session on the server: the next attempt
			// re-activates it on a new secure channel.
			keep, _ = c.DetachSession(cctx)
		}
		c.Close(cctx)
		var next uint32
		if pub != nil {
			<-pub.done
			next = pub.next
		}
		if keep != nil {
			s.resume = &resumable{sess: keep, subID: s.subID, next: next, lost: time.Now()}
		}
	}()
	s.client.Store(c)
	var pubErr <-chan error
	if pub != nil {
		pubErr = pub.errc
	}
	if !resumed {
		if err := s.setUp(ctx, c, notify); err != nil {
			return err
		}
	}

	polled, subscribed := 0, 0
	for _, p := range s.points {
		switch {
		case p.node == nil:
		case p.polled:
			polled++
		default:
			subscribed++
		}
	}
	established = true
	s.sessions++
	s.mu.Lock()
	s.stats.Connects++
	switch {
	case resumed:
		s.stats.Reconnects++
		s.stats.Resumed++
	case s.sessions > 1:
		s.stats.Reconnects++
		s.stats.Recreated++
	}
	s.stats.Polled, s.stats.Subscribed = polled, subscribed
	s.untrusted = nil
	s.mu.Unlock()
	s.svc.log.Info("server online", "server", s.cfg.Name, "subscribed", subscribed, "polled", polled, "resumed", resumed)
	s.publishStatus(ctx, true, "")
	for _, p := range s.points {
		if p.resolveErr != nil {
			s.publishUnresolved(ctx, p)
		}
		if n := p.notified; resumed && n != nil && p.node != nil && !p.polled && p.lastQ == QualityStale {
			// Unchanged since the cut (a change would be queued on the
			// server and follow): the last value is current again.
			p.published, p.lastV, p.lastQ, p.lastStatus = true, n.v, n.q, n.status
			s.publish(ctx, bus.Message{Topic: p.topic, Payload: n.payload, QoS: byte(s.svc.cfg.QoS)})
		}
	}

	pollTimer := time.NewTimer(0)
	defer pollTimer.Stop()
	if polled == 0 {
		pollTimer.Stop()
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	lastProof := time.Now()
	for {
		s.progress.Store(time.Now().UnixNano())
		select {
		case <-ctx.Done():
			return nil
		case <-lost:
			return errLost
		case err := <-pubErr:
			return fmt.Errorf("publish: %w", err)
		case n := <-notify:
			lastProof = time.Now()
			if err := s.notification(ctx, n); err != nil {
				return err
			}
		case <-pollTimer.C:
			start := time.Now()
			if err := s.poll(ctx, c); err != nil {
				return err
			}
			lastProof = time.Now()
			pollTimer.Reset(max(0, s.cfg.Interval-time.Since(start)))
		case cmd := <-s.cmds:
			s.write(ctx, c, cmd)
		case <-s.wake:
		case <-t.C:
			if time.Since(lastProof) < watchdogEvery {
				continue
			}
			if err := s.watchdog(ctx, c); err != nil {
				return err
			}
			lastProof = time.Now()
		}
	}
}

// setUp resolves the points of a new session and creates its
// subscription.
func (s *server) setUp(ctx context.Context, c *opcua.Client, notify chan *opcua.PublishNotificationData) error {
	if err := s.resolve(ctx, c); err != nil {
		return err
	}
	return s.subscribe(ctx, c, notify)
}

// connect picks the endpoint, checks the server's certificate against the
// trust list and opens the session.
func (s *server) connect(ctx context.Context, stateCh chan opcua.ConnState) (*opcua.Client, error) {
	var eps []*ua.EndpointDescription
	err := s.call(ctx, func(ctx context.Context) error {
		var err error
		eps, err = opcua.GetEndpoints(ctx, s.cfg.Endpoint, opcua.DialTimeout(s.cfg.Timeout), opcua.RequestTimeout(s.cfg.Timeout))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get endpoints: %w", err)
	}
	ep, err := s.pickEndpoint(eps)
	if err != nil {
		return nil, err
	}
	if s.cfg.Security.Policy != PolicyNone {
		cert, err := ParseCertificate(ep.ServerCertificate)
		if err != nil {
			return nil, kindError{ErrKindSecurity, fmt.Errorf("the server's certificate: %w", err)}
		}
		s.mu.Lock()
		s.serverCert = &cert
		s.mu.Unlock()
		ok, err := trusted(s.svc.trustDir, cert.DER)
		if err != nil {
			return nil, err
		}
		if !ok {
			s.mu.Lock()
			s.untrusted = &cert
			s.mu.Unlock()
			return nil, &UntrustedError{Endpoint: s.cfg.Endpoint, Cert: cert}
		}
	}
	app, err := s.svc.appCert()
	if err != nil {
		return nil, err
	}
	appInfo, _ := ParseCertificate(app.der)
	opts := []opcua.Option{
		opcua.ApplicationName(s.svc.appName),
		opcua.ProductURI("urn:fieldgate"),
		opcua.SessionName("fieldgate " + s.cfg.Name),
	}
	if s.cfg.Security.Policy != PolicyNone || s.cfg.Auth.Certificate != "" {
		// With policy None no certificate is sent: servers (node-opcua
		// among them) check one that is sent even then.
		opts = append(opts, opcua.Certificate(app.der), opcua.PrivateKey(app.key))
	}
	opts = append(opts,
		opcua.ApplicationURI(s.svc.appURI),
		opcua.RequestTimeout(s.cfg.Timeout),
		opcua.DialTimeout(s.cfg.Timeout),
		opcua.AutoReconnect(false),
		opcua.SessionTimeout(sessionTimeout),
	)
	authType := ua.UserTokenTypeAnonymous
	switch a := s.cfg.Auth; {
	case a.Username != "":
		authType = ua.UserTokenTypeUserName
		opts = append(opts, opcua.AuthUsername(a.Username, a.Password.Reveal()))
	case a.Certificate != "":
		authType = ua.UserTokenTypeCertificate
		der, key, err := loadUserCert(a.Certificate, a.Key)
		if err != nil {
			return nil, err
		}
		opts = append(opts, opcua.AuthCertificate(der), opcua.AuthPrivateKey(key))
	default:
		opts = append(opts, opcua.AuthAnonymous())
	}
	if !offersToken(ep, authType) {
		return nil, kindError{ErrKindAuth, fmt.Errorf("the endpoint accepts no %s user token (it accepts %s)", tokenName(authType), tokenNames(ep))}
	}
	opts = append(opts, opcua.SecurityFromEndpoint(ep, authType))
	s.clientOpts = opts
	c, err := opcua.NewClient(s.cfg.Endpoint, append(slices.Clip(opts), opcua.StateChangedCh(stateCh))...)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 3*s.cfg.Timeout)
	defer cancel()
	start := time.Now()
	if err := connectSafe(cctx, c); err != nil {
		cl, ccancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
		c.Close(cl)
		ccancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, connectError(err, s.cfg, appInfo)
	}
	s.mu.Lock()
	s.rtt.Add(time.Since(start) / 4) // the connection's four round trips
	s.mu.Unlock()
	return c, nil
}

// connectSafe connects c, turning a panic of the library (it dereferences
// a nil session when the server's session signature does not verify) into
// an error.
func connectSafe(ctx context.Context, c *opcua.Client) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = kindError{ErrKindSecurity, fmt.Errorf("the session could not be created (the server's signature did not verify: %v)", r)}
		}
	}()
	return c.Connect(ctx)
}

// pickEndpoint finds the endpoint with the configured policy and mode.
func (s *server) pickEndpoint(eps []*ua.EndpointDescription) (*ua.EndpointDescription, error) {
	uri := ua.FormatSecurityPolicyURI(s.cfg.Security.Policy)
	mode := ua.MessageSecurityModeFromString(s.cfg.Security.Mode)
	var offered []string
	for _, ep := range eps {
		if ep.SecurityPolicyURI == uri && ep.SecurityMode == mode {
			return ep, nil
		}
		p := strings.TrimPrefix(ep.SecurityPolicyURI, "http://opcfoundation.org/UA/SecurityPolicy#")
		offered = append(offered, p+"/"+strings.TrimPrefix(ep.SecurityMode.String(), "MessageSecurityMode"))
	}
	return nil, kindError{ErrKindSecurity, fmt.Errorf("the server offers no endpoint with policy %s and mode %s (it offers %s)", s.cfg.Security.Policy, s.cfg.Security.Mode, strings.Join(offered, ", "))}
}

func offersToken(ep *ua.EndpointDescription, t ua.UserTokenType) bool {
	for _, tok := range ep.UserIdentityTokens {
		if tok.TokenType == t {
			return true
		}
	}
	return false
}

func tokenName(t ua.UserTokenType) string {
	switch t {
	case ua.UserTokenTypeAnonymous:
		return "anonymous"
	case ua.UserTokenTypeUserName:
		return "username"
	case ua.UserTokenTypeCertificate:
		return "certificate"
	}
	return "issued"
}

func tokenNames(ep *ua.EndpointDescription) string {
	var names []string
	for _, tok := range ep.UserIdentityTokens {
		if n := tokenName(tok.TokenType); !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// loadUserCert reads a user certificate and its RSA key (PEM or DER).
func loadUserCert(certFile, keyFile string) ([]byte, *rsa.PrivateKey, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("user certificate: %w", err)
	}
	c, err := ParseCertificate(data)
	if err != nil {
		return nil, nil, fmt.Errorf("user certificate %s: %w", certFile, err)
	}
	kd, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("user key: %w", err)
	}
	if b, _ := pem.Decode(kd); b != nil {
		kd = b.Bytes
	}
	if k, err := x509.ParsePKCS1PrivateKey(kd); err == nil {
		return c.DER, k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(kd)
	if err != nil {
		return nil, nil, fmt.Errorf("user key %s: %w", keyFile, err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("user key %s is not an RSA key (OPC UA needs RSA)", keyFile)
	}
	return c.DER, rk, nil
}

// resolve finds every point's NodeId (translating browse paths) and the
// type its values are written as.
func (s *server) resolve(ctx context.Context, c *opcua.Client) error {
	var paths []*point
	for _, p := range s.points {
		p.node, p.resolveErr, p.polled, p.typ, p.notified = nil, nil, false, p.cfgType, nil
		if p.cfg.Node != "" {
			p.node, _ = ParseNodeID(p.cfg.Node) // validated
			continue
		}
		paths = append(paths, p)
	}
	objects := ua.NewNumericNodeID(0, 85)
	for start := 0; start < len(paths); start += maxNodesPerRequest {
		chunk := paths[start:min(start+maxNodesPerRequest, len(paths))]
		req := &ua.TranslateBrowsePathsToNodeIDsRequest{}
		for _, p := range chunk {
			names, _ := ParseBrowsePath(p.cfg.BrowsePath) // validated
			rp := &ua.RelativePath{}
			for _, n := range names {
				rp.Elements = append(rp.Elements, &ua.RelativePathElement{
					ReferenceTypeID: ua.NewNumericNodeID(0, 33), // HierarchicalReferences
					IncludeSubtypes: true,
					TargetName:      n,
				})
			}
			req.BrowsePaths = append(req.BrowsePaths, &ua.BrowsePath{StartingNode: objects, RelativePath: rp})
		}
		var res *ua.TranslateBrowsePathsToNodeIDsResponse
		err := s.call(ctx, func(ctx context.Context) error {
			return c.Send(ctx, req, func(v ua.Response) error {
				r, ok := v.(*ua.TranslateBrowsePathsToNodeIDsResponse)
				if !ok {
					return fmt.Errorf("unexpected answer %T", v)
				}
				res = r
				return nil
			})
		})
		if err != nil {
			if sessionEnding(err) {
				return fmt.Errorf("translate browse paths: %w", err)
			}
			for _, p := range chunk {
				p.resolveErr = kindError{ErrKindResolve, fmt.Errorf("browse path %s: %w", p.cfg.BrowsePath, err)}
			}
			continue
		}
		for i, p := range chunk {
			switch {
			case i >= len(res.Results):
				p.resolveErr = kindError{ErrKindResolve, fmt.Errorf("browse path %s: no answer", p.cfg.BrowsePath)}
			case !isGood(res.Results[i].StatusCode):
				p.resolveErr = kindError{ErrKindResolve, fmt.Errorf("browse path %s: %w", p.cfg.BrowsePath, res.Results[i].StatusCode)}
			case len(res.Results[i].Targets) == 0 || res.Results[i].Targets[0].TargetID == nil || res.Results[i].Targets[0].TargetID.NodeID == nil:
				p.resolveErr = kindError{ErrKindResolve, fmt.Errorf("browse path %s: %w", p.cfg.BrowsePath, ua.StatusBadNoMatch)}
			default:
				p.node = res.Results[i].Targets[0].TargetID.NodeID
			}
		}
	}
	// The DataType of every resolved point: for writes, and to find
	// nodes that do not exist.
	var nodes []*point
	for _, p := range s.points {
		if p.node != nil {
			nodes = append(nodes, p)
		}
	}
	for start := 0; start < len(nodes); start += maxNodesPerRequest {
		chunk := nodes[start:min(start+maxNodesPerRequest, len(nodes))]
		req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnNeither}
		for _, p := range chunk {
			req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: p.node, AttributeID: ua.AttributeIDDataType})
		}
		res, err := s.read(ctx, c, req)
		if err != nil {
			if sessionEnding(err) {
				return fmt.Errorf("read data types: %w", err)
			}
			s.countError(err)
			continue
		}
		for i, p := range chunk {
			if i >= len(res.Results) {
				break
			}
			dv := res.Results[i]
			switch {
			case dv.Status == ua.StatusBadNodeIDUnknown || dv.Status == ua.StatusBadNodeIDInvalid || dv.Status == ua.StatusBadAttributeIDInvalid:
				p.resolveErr = kindError{ErrKindResolve, fmt.Errorf("node %s: %w", formatNodeID(p.node), dv.Status)}
				p.node = nil
			case isGood(dv.Status) && dv.Value != nil && p.cfgType.id == 0:
				if id, ok := dv.Value.Value().(*ua.NodeID); ok {
					if b, ok := dataTypeBuiltin(id); ok {
						p.typ = b
					}
				}
			}
		}
	}
	for _, p := range s.points {
		if p.resolveErr != nil {
			s.countError(p.resolveErr)
			s.logf(slog.LevelWarn, "point not resolved", "point", p.cfg.Name, "err", p.resolveErr)
		}
	}
	return nil
}

// read sends one Read request, counting it.
func (s *server) read(ctx context.Context, c *opcua.Client, req *ua.ReadRequest) (*ua.ReadResponse, error) {
	var res *ua.ReadResponse
	err := s.call(ctx, func(ctx context.Context) error {
		var err error
		res, err = c.Read(ctx, req)
		return err
	})
	s.mu.Lock()
	s.stats.Reads++
	if err == nil {
		s.stats.ReadValues += uint64(len(res.Results))
	}
	s.mu.Unlock()
	if err == nil && len(res.Results) != len(req.NodesToRead) {
		return nil, kindError{ErrKindStatus, fmt.Errorf("read: %d results for %d nodes", len(res.Results), len(req.NodesToRead))}
	}
	return res, err
}

// subscribe creates the session's subscription and a monitored item for
// each subscribed point. Points whose item the server refuses, and every
// point when it refuses the subscription, are polled instead.
func (s *server) subscribe(ctx context.Context, c *opcua.Client, notify chan *opcua.PublishNotificationData) error {
	var want []*point
	for _, p := range s.points {
		if p.node == nil {
			continue
		}
		if p.cfg.Mode == ModePoll {
			p.polled = true
			continue
		}
		want = append(want, p)
	}
	if len(want) == 0 {
		return nil
	}
	keepAlive := uint32(max(3, keepAliveTarget/s.cfg.Interval))
	var sub *opcua.Subscription
	err := s.call(ctx, func(ctx context.Context) error {
		var err error
		sub, err = c.Subscribe(ctx, &opcua.SubscriptionParameters{
			Interval:          s.cfg.Interval,
			MaxKeepAliveCount: keepAlive,
			LifetimeCount:     4 * keepAlive,
		}, notify)
		return err
	})
	if err == nil {
		s.subID = sub.SubscriptionID
	}
	if err != nil {
		if sessionEnding(err) {
			return fmt.Errorf("create subscription: %w", err)
		}
		s.countError(kindError{ErrKindSubscription, err})
		s.logf(slog.LevelWarn, "subscription refused: polling every point", "err", err)
		for _, p := range want {
			p.polled = true
		}
		return nil
	}
	for start := 0; start < len(want); start += maxNodesPerRequest {
		chunk := want[start:min(start+maxNodesPerRequest, len(want))]
		items := make([]*ua.MonitoredItemCreateRequest, len(chunk))
		for i, p := range chunk {
			items[i] = s.monitoredItem(p)
		}
		var res *ua.CreateMonitoredItemsResponse
		err := s.call(ctx, func(ctx context.Context) error {
			var err error
			res, err = monitorSafe(ctx, sub, items)
			return err
		})
		if err == nil && len(res.Results) != len(items) {
			err = kindError{ErrKindSubscription, fmt.Errorf("%d results for %d monitored items", len(res.Results), len(items))}
		}
		if err != nil {
			if sessionEnding(err) {
				return fmt.Errorf("create monitored items: %w", err)
			}
			s.countError(kindError{ErrKindSubscription, err})
			for _, p := range chunk {
				p.polled = true
			}
			continue
		}
		for i, p := range chunk {
			sc := res.Results[i].StatusCode
			switch {
			case isGood(sc):
			case sc == ua.StatusBadNodeIDUnknown || sc == ua.StatusBadNodeIDInvalid:
				p.resolveErr = kindError{ErrKindResolve, fmt.Errorf("node %s: %w", formatNodeID(p.node), sc)}
				p.node = nil
			default:
				s.countError(kindError{ErrKindSubscription, fmt.Errorf("monitored item of %s: %w", p.cfg.Name, sc)})
				s.logf(slog.LevelInfo, "monitored item refused: polling the point", "point", p.cfg.Name, "status", statusName(sc))
				p.polled = true
			}
		}
	}
	return nil
}

// monitorSafe creates monitored items, turning a panic of the library on
// a malformed answer into an error.
func monitorSafe(ctx context.Context, sub *opcua.Subscription, items []*ua.MonitoredItemCreateRequest) (res *ua.CreateMonitoredItemsResponse, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = kindError{ErrKindSubscription, fmt.Errorf("malformed answer to CreateMonitoredItems: %v", r)}
		}
	}()
	return sub.Monitor(ctx, ua.TimestampsToReturnBoth, items...)
}

// monitoredItem is p's monitored item request, its client handle p's index.
func (s *server) monitoredItem(p *point) *ua.MonitoredItemCreateRequest {
	req := opcua.NewMonitoredItemCreateRequestWithDefaults(p.node, ua.AttributeIDValue, uint32(p.index))
	req.RequestedParameters.SamplingInterval = float64(p.cfg.SamplingInterval) / float64(time.Millisecond)
	req.RequestedParameters.QueueSize = uint32(s.cfg.QueueSize)
	req.RequestedParameters.DiscardOldest = true
	if p.cfg.Deadband > 0 {
		typ := uint32(ua.DeadbandTypeAbsolute)
		if p.cfg.DeadbandType == DeadbandPercent {
			typ = uint32(ua.DeadbandTypePercent)
		}
		req.RequestedParameters.Filter = ua.NewExtensionObject(&ua.DataChangeFilter{
			Trigger:       ua.DataChangeTriggerStatusValue,
			DeadbandType:  typ,
			DeadbandValue: p.cfg.Deadband,
		})
	}
	return req
}

// notification handles one publish notification.
func (s *server) notification(ctx context.Context, n *opcua.PublishNotificationData) error {
	if n.Error != nil {
		if sessionEnding(n.Error) {
			return fmt.Errorf("publish: %w", n.Error)
		}
		s.countError(kindError{ErrKindSubscription, n.Error})
		return nil
	}
	switch v := n.Value.(type) {
	case *ua.DataChangeNotification:
		s.mu.Lock()
		s.stats.Notifications += uint64(len(v.MonitoredItems))
		s.mu.Unlock()
		for _, item := range v.MonitoredItems {
			if item == nil || int(item.ClientHandle) >= len(s.points) {
				continue
			}
			p := s.points[item.ClientHandle]
			if p.node == nil || p.polled {
				continue
			}
			s.publishValue(ctx, p, item.Value, false)
		}
	case *ua.StatusChangeNotification:
		if !isGood(v.Status) {
			return kindError{ErrKindSubscription, fmt.Errorf("subscription ended by the server: %w", v.Status)}
		}
	}
	return nil
}

// poll reads every polled point.
func (s *server) poll(ctx context.Context, c *opcua.Client) error {
	var pts []*point
	for _, p := range s.points {
		if p.node != nil && p.polled {
			pts = append(pts, p)
		}
	}
	for start := 0; start < len(pts); start += maxNodesPerRequest {
		chunk := pts[start:min(start+maxNodesPerRequest, len(pts))]
		req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth}
		for _, p := range chunk {
			req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: p.node, AttributeID: ua.AttributeIDValue})
		}
		res, err := s.read(ctx, c, req)
		if err != nil {
			if sessionEnding(err) {
				return fmt.Errorf("read: %w", err)
			}
			s.countError(err)
			s.logf(slog.LevelWarn, "read refused", "err", err)
			continue
		}
		for i, p := range chunk {
			s.publishValue(ctx, p, res.Results[i], true)
		}
	}
	return nil
}

// watchdog reads the server's state (Server_ServerStatus_State, i=2259)
// to learn that the session still works when nothing else did lately.
func (s *server) watchdog(ctx context.Context, c *opcua.Client) error {
	req := &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: ua.NewNumericNodeID(0, 2259), AttributeID: ua.AttributeIDValue}}}
	if _, err := s.read(ctx, c, req); err != nil && sessionEnding(err) {
		return fmt.Errorf("watchdog read: %w", err)
	}
	return nil
}

// publishValue publishes a point's DataValue, from a notification or a
// poll. Polled values are published when value or status changed (and
// beyond the deadband for numbers), like the server does for subscribed
// ones.
func (s *server) publishValue(ctx context.Context, p *point, dv *ua.DataValue, polled bool) {
	if dv == nil {
		return
	}
	sc := dv.Status
	q := quality(sc)
	var v []byte
	var convErr error
	if q == QualityGood {
		v, convErr = p.conv.appendVariant(nil, dv.Value)
		if convErr != nil {
			q, v = QualityBad, nil
		}
	}
	num, isNum := numericOf(dv.Value)
	if polled && p.published && q == p.lastQ && sc == p.lastStatus {
		switch {
		case q != QualityGood:
			return
		case p.cfg.Deadband > 0 && isNum && p.hasNum:
			if d := num - p.lastNum; d < p.cfg.Deadband && -d < p.cfg.Deadband {
				return
			}
		case string(v) == string(p.lastV):
			return
		}
	}
	ts, own := dv.SourceTimestamp, false
	if ts.IsZero() {
		ts = dv.ServerTimestamp
	}
	if ts.IsZero() || ts.Year() < 1970 {
		ts, own = s.svc.now(), true
	}
	b := make([]byte, 0, 96+len(v))
	b = append(b, `{"v":`...)
	if v == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, v...)
	}
	b = append(b, `,"q":"`...)
	b = append(b, q...)
	b = append(b, '"')
	if p.cfg.Unit != "" {
		b = append(b, `,"unit":`...)
		b = append(b, p.unitJSON...)
	}
	if sc != ua.StatusOK {
		b = append(b, `,"status":`...)
		b = appendString(b, statusName(sc))
	}
	if convErr != nil {
		b = append(b, `,"err":`...)
		b = appendString(b, convErr.Error())
	}
	b = appendStamp(b, ts, !own || s.svc.synced(ts))
	b = append(b, '}')
	p.published, p.lastV, p.lastQ, p.lastStatus = true, v, q, sc
	if q == QualityGood {
		p.lastGood = v
	}
	p.lastNum, p.hasNum = num, isNum
	if !polled {
		p.notified = &notified{payload: b, v: v, q: q, status: sc}
	}
	s.publish(ctx, bus.Message{Topic: p.topic, Payload: b, QoS: byte(s.svc.cfg.QoS)})
}

// publishStale publishes p's last good value (or null) as stale.
func (s *server) publishStale(ctx context.Context, p *point, now time.Time) {
	b := append([]byte(nil), `{"v":`...)
	if p.lastGood == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, p.lastGood...)
	}
	b = append(b, `,"q":"stale"`...)
	if p.cfg.Unit != "" {
		b = append(b, `,"unit":`...)
		b = append(b, p.unitJSON...)
	}
	b = appendStamp(b, now, s.svc.synced(now))
	b = append(b, '}')
	p.published, p.lastV, p.lastQ, p.lastStatus = true, p.lastGood, QualityStale, 0
	s.publish(ctx, bus.Message{Topic: p.topic, Payload: b, QoS: byte(s.svc.cfg.QoS)})
}

// publishUnresolved publishes a point whose node the server does not know
// as bad, with the status and the reason.
func (s *server) publishUnresolved(ctx context.Context, p *point) {
	sc, _ := statusOf(p.resolveErr)
	if p.published && p.lastQ == QualityBad && p.lastStatus == sc && sc != 0 {
		return
	}
	now := s.svc.now()
	b := append([]byte(nil), `{"v":null,"q":"bad"`...)
	if p.cfg.Unit != "" {
		b = append(b, `,"unit":`...)
		b = append(b, p.unitJSON...)
	}
	if sc != 0 {
		b = append(b, `,"status":`...)
		b = appendString(b, statusName(sc))
	}
	b = append(b, `,"err":`...)
	b = appendString(b, p.resolveErr.Error())
	b = appendStamp(b, now, s.svc.synced(now))
	b = append(b, '}')
	p.published, p.lastV, p.lastQ, p.lastStatus = true, nil, QualityBad, sc
	s.publish(ctx, bus.Message{Topic: p.topic, Payload: b, QoS: byte(s.svc.cfg.QoS)})
}

// numericOf is a scalar numeric value as float64 (for the deadband).
func numericOf(v *ua.Variant) (float64, bool) {
	if v == nil {
		return 0, false
	}
	switch x := v.Value().(type) {
	case int8:
		return float64(x), true
	case int16:
		return float64(x), true
	case int32:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint8:
		return float64(x), true
	case uint16:
		return float64(x), true
	case uint32:
		return float64(x), true
	case uint64:
		return float64(x), true
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// appendStamp appends `,"ts":ms` and, when the clock is not synchronised,
// `,"ts_sync":false`.
func appendStamp(b []byte, ts time.Time, synced bool) []byte {
	b = append(b, `,"ts":`...)
	b = fmt.Appendf(b, "%d", ts.UnixMilli())
	if !synced {
		b = append(b, `,"ts_sync":false`...)
	}
	return b
}

// publish sends m with the package's origin, counting refusals.
func (s *server) publish(ctx context.Context, m bus.Message) {
	m.Origin = Origin
	if err := s.svc.bus.Publish(ctx, m); err != nil {
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		s.stats.PublishErrors++
		s.mu.Unlock()
		s.logf(slog.LevelWarn, "publish refused", "topic", m.Topic, "err", err)
	}
}

// publishStatus publishes the retained server status and records it.
func (s *server) publishStatus(ctx context.Context, online bool, reason string) {
	ts := s.svc.now()
	b := append([]byte(nil), `{"state":"`...)
	if online {
		b = append(b, "online\""...)
	} else {
		b = append(b, "offline\",\"err\":"...)
		b = appendString(b, reason)
	}
	b = appendStamp(b, ts, s.svc.synced(ts))
	b = append(b, '}')
	s.online, s.statusKnown, s.reason = online, true, reason
	s.mu.Lock()
	s.stats.Online = online
	s.mu.Unlock()
	s.publish(ctx, bus.Message{Topic: s.statusTopic, Payload: b, QoS: 1, Retain: true})
}

// logf logs about the server, at most a few lines of each message per 10 s.
func (s *server) logf(level slog.Level, msg string, args ...any) {
	ok, suppressed := s.logLimit.AllowAt(s.svc.now(), msg, "")
	if !ok {
		return
	}
	args = append([]any{"server", s.cfg.Name}, args...)
	if suppressed > 0 {
		args = append(args, ratelog.SuppressedKey, suppressed)
	}
	s.svc.log.Log(context.Background(), level, msg, args...)
}
