// Package coap is fieldgate's CoAP gateway (RFC 7252, with Observe RFC 7641
// and block-wise transfer RFC 7959) on UDP and DTLS, built on go-coap v3.
//
// It speaks EMQX 5's CoAP gateway URL scheme and what older clients send:
// POST/PUT /ps/{topic} and PUT /mqtt/{topic} publish, GET /ps/{filter} with
// Observe subscribes, GET without Observe reads the retained message, and
// POST/PUT/DELETE /mqtt/connection open, keep alive and close a connection.
// Every device is a real broker session (protocols/mqtt's session API), so
// the broker's authentication, ACL, wills, retained messages and limits hold
// for it exactly as for an MQTT client.
package coap

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	dtlsServer "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapNet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
	udpServer "github.com/plgd-dev/go-coap/v3/udp/server"

	"github.com/fieldgate/fieldgate/internal/membudget"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// maxDatagram is the largest CoAP message read from the wire: a UDP
// datagram cannot be larger.
const maxDatagram = 65535

// tick is how often retransmissions, block-wise transfers, idle devices and
// missed heartbeats are checked.
const tick = 250 * time.Millisecond

// Gateway is the CoAP gateway. New binds its sockets; Run serves them.
type Gateway struct {
	cfg    Config
	broker *mqtt.Broker
	log    *slog.Logger
	warn   *logLimiter
	stats  stats

	udpConn  *coapNet.UDPConn
	dtlsConn *coapNet.DTLSListener

	obsBudget  *membudget.Account // the observations; nil: unlimited
	sessBudget *membudget.Account // the devices' sessions; nil: unlimited

	mu           sync.Mutex
	running      bool // Run has started and not finished: workers may start
	runCtx       context.Context
	devices      map[string]*device   // by deviceKey / connKey
	endpoints    map[string]*endpoint // observing endpoints by address
	observations int                  // in all endpoints
	uploads      uploads              // block-wise uploads being reassembled (own lock)
	workers      sync.WaitGroup       // device workers and periodic runners, added under mu
}

// Option changes how New builds a Gateway.
type Option func(*Gateway)

// WithBudget makes every observation and every device's broker session
// count against the memory budget b (accounts "coap_observations" and
// "coap_sessions"): a registration or a new device that would exceed it
// gets 5.03. A nil b is unlimited.
func WithBudget(b *membudget.Budget) Option {
	return func(g *Gateway) {
		g.obsBudget = b.Account(budgetAccount)
		g.sessBudget = b.Account(sessionsAccount)
	}
}

// New checks cfg, binds the UDP socket (and the DTLS one when enabled) and
// returns a gateway ready to Run. The broker must be running for requests
// to succeed.
func New(cfg Config, broker *mqtt.Broker, logger *slog.Logger, opts ...Option) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("coap: config: %w", err)
	}
	if broker == nil {
		return nil, errors.New("coap: no broker")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{
		cfg:       cfg,
		broker:    broker,
		log:       logger.With("part", "coap"),
		devices:   make(map[string]*device),
		endpoints: make(map[string]*endpoint),
		uploads:   uploads{m: make(map[string]*upload)},
	}
	for _, o := range opts {
		o(g)
	}
	g.warn = newLogLimiter(g.log, 10*time.Second)
	g.stats.init()
	l, err := coapNet.NewListenUDP("udp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("coap: listen %s: %w", cfg.Address, err)
	}
	g.udpConn = l
	if cfg.DTLS.Enabled {
		opts, err := dtlsOptions(cfg.DTLS)
		if err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("coap: dtls: %w", err)
		}
		dl, err := coapNet.NewDTLSListener("udp", cfg.DTLS.Address, coapNet.NewDTLSServerOptions(opts...))
		if err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("coap: dtls listen %s: %w", cfg.DTLS.Address, err)
		}
		g.dtlsConn = dl
	}
	return g, nil
}

// dtlsOptions builds the pion DTLS server options of the config: PSK
// (identity → key), certificates, and client certificates checked against
// CA.
func dtlsOptions(c DTLS) ([]piondtls.ServerOption, error) {
	var opts []piondtls.ServerOption
	var suites []piondtls.CipherSuiteID
	if len(c.PSK) > 0 {
		keys := make(map[string][]byte, len(c.PSK))
		for _, p := range c.PSK {
			keys[p.Identity] = []byte(p.Key.Reveal())
		}
		opts = append(opts, piondtls.WithPSK(func(identity []byte) ([]byte, error) {
			k, ok := keys[string(identity)]
			if !ok {
				return nil, fmt.Errorf("unknown PSK identity %q", truncate(string(identity)))
			}
			return k, nil
		}))
		suites = append(suites, piondtls.TLS_PSK_WITH_AES_128_CCM_8, piondtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
			piondtls.TLS_PSK_WITH_AES_128_CCM, piondtls.TLS_PSK_WITH_AES_128_CBC_SHA256)
	}
	if c.Cert != "" {
		pair, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", c.Cert, err)
		}
		opts = append(opts, piondtls.WithCertificates(pair))
		suites = append(suites, piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			piondtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)
		if c.CA != "" {
			pool, err := loadCAs(c.CA)
			if err != nil {
				return nil, err
			}
			opts = append(opts, piondtls.WithClientCAs(pool), piondtls.WithClientAuth(piondtls.RequireAndVerifyClientCert))
		}
	}
	opts = append(opts, piondtls.WithCipherSuites(suites...), piondtls.WithExtendedMasterSecret(piondtls.RequestExtendedMasterSecret))
	return opts, nil
}

// Addr returns the bound UDP address of plain CoAP.
func (g *Gateway) Addr() net.Addr { return g.udpConn.LocalAddr() }

// DTLSAddr returns the bound address of CoAP over DTLS, or nil when DTLS
// is not enabled.
func (g *Gateway) DTLSAddr() net.Addr {
	if g.dtlsConn == nil {
		return nil
	}
	return g.dtlsConn.Addr()
}

// Run serves CoAP until ctx is done, then stops the servers, ends every
// device's broker session and returns. It returns early with an error if a
// socket fails.
func (g *Gateway) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g.mu.Lock()
	if g.running || g.runCtx != nil {
		g.mu.Unlock()
		return errors.New("coap: Run called twice")
	}
	g.running, g.runCtx = true, ctx
	g.mu.Unlock()

	common := []interface {
		udpServer.Option
		dtlsServer.Option
	}{
		options.WithContext(ctx),
		options.WithHandlerFunc(udpClient.HandlerFunc(g.handle)),
		options.WithRequestMonitor(udpClient.RequestMonitorFunc(g.monitor)),
		options.WithErrors(g.coapError),
		options.WithMaxMessageSize(maxDatagram),
		options.WithBlockwise(true, blockwise.SZX1024, g.cfg.BlockTimeout),
		options.WithPeriodicRunner(g.periodic),
		options.WithInactivityMonitor(g.cfg.SessionIdle, g.inactive),
	}
	var udpOpts []udpServer.Option
	var dtlsOpts []dtlsServer.Option
	for _, o := range common {
		udpOpts = append(udpOpts, o)
		dtlsOpts = append(dtlsOpts, o)
	}
	var serving sync.WaitGroup
	errc := make(chan error, 2)
	us := udp.NewServer(udpOpts...)
	serving.Go(func() { errc <- wrapServe("udp", us.Serve(g.udpConn)) })
	var ds *dtlsServer.Server
	if g.dtlsConn != nil {
		ds = dtls.NewServer(dtlsOpts...)
		serving.Go(func() { errc <- wrapServe("dtls", ds.Serve(g.dtlsConn)) })
	}
	g.log.Info("coap gateway listening", "address", g.Addr().String(), "dtls", g.DTLSAddr())

	janitor := time.NewTicker(tick)
	defer janitor.Stop()
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-errc:
			if err != nil {
				break loop
			}
		case now := <-janitor.C:
			g.sweep(now)
		}
	}
	cancel()
	us.Stop()
	if ds != nil {
		ds.Stop()
	}
	serving.Wait()
	_ = g.udpConn.Close()
	if g.dtlsConn != nil {
		_ = g.dtlsConn.Close()
	}
	g.mu.Lock()
	g.running = false
	devs := make([]*device, 0, len(g.devices))
	for _, d := range g.devices {
		devs = append(devs, d)
	}
	g.mu.Unlock()
	for _, d := range devs {
		d.stop()
	}
	g.workers.Wait()
	return err
}

func wrapServe(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("coap: serve %s: %w", what, err)
}

// goWorker starts f as a worker owned by the gateway, unless the gateway
// is shutting down.
func (g *Gateway) goWorker(f func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.running {
		return false
	}
	g.workers.Go(f)
	return true
}

// periodic is go-coap's periodic runner: f runs every tick until it returns
// false or the gateway stops.
func (g *Gateway) periodic(f func(now time.Time) bool) {
	g.goWorker(func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-g.runCtx.Done():
				return
			case now := <-t.C:
				if !f(now) {
					return
				}
			}
		}
	})
}

// inactive closes a go-coap connection idle for SessionIdle unless it
// carries observations (an observer only listens).
func (g *Gateway) inactive(cc *udpClient.Conn) {
	if g.hasObservers(cc.RemoteAddr().String()) {
		return
	}
	_ = cc.Close()
}

func (g *Gateway) coapError(err error) {
	g.warn.debug("coap-error", "coap transport error", "error", err)
}

// handle is the handler of every request on UDP and DTLS.
func (g *Gateway) handle(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) {
	if r.Code() == codes.Empty {
		return // ACK or RST of a notification, or a ping: not a request
	}
	g.stats.request(r.Code())
	var path, query []string
	for _, o := range r.Options() {
		switch o.ID {
		case message.URIPath:
			path = append(path, string(o.Value))
		case message.URIQuery:
			query = append(query, string(o.Value))
		}
	}
	req, err := ParseRequest(r.Code(), path, query)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	if partialBlock(r) {
		g.fail(w, r, &RequestError{Code: codes.RequestEntityIncomplete, Reason: "last block of a block-wise upload unknown or expired: start again with block 0"})
		return
	}
	x := &exchange{g: g, w: w, r: r, req: req, cc: w.Conn()}
	switch req.Kind {
	case KindConnect:
		err = x.connect()
	case KindHeartbeat:
		err = x.heartbeat()
	case KindDisconnect:
		err = x.disconnect()
	case KindPublish:
		err = x.publish()
	case KindGet:
		err = x.get()
	case KindDiscovery:
		err = x.discover()
	}
	if err != nil {
		g.fail(w, r, err)
		return
	}
	if block, ok := r.Context().Value(assembledKey{}).(uint32); ok && w.Message().Code() < codes.BadRequest {
		// The answer to the final block of an upload echoes its Block1
		// option (RFC 7959 §2.3).
		w.Message().SetOptionUint32(message.Block1, block)
	}
}

// partialBlock tells a POST or PUT that still carries a Block1 option past
// block 0: one block of an upload the monitor did not reassemble, which
// must not be taken for the whole body.
func partialBlock(r *pool.Message) bool {
	if r.Code() != codes.POST && r.Code() != codes.PUT {
		return false
	}
	block, err := r.GetOptionUint32(message.Block1)
	if err != nil {
		return false
	}
	_, num, _, err := blockwise.DecodeBlockOption(block)
	return err != nil || num > 0
}

// fail answers a refused request with its CoAP code and a diagnostic
// payload, and logs it (rate-limited).
func (g *Gateway) fail(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, err error) {
	code, reason := codeOf(err)
	g.stats.failed(code)
	g.warn.warn(code.String(), "coap request refused", "remote", w.Conn().RemoteAddr().String(), "code", code.String(), "error", reason)
	if err := w.SetResponse(code, message.TextPlain, bytes.NewReader([]byte(reason))); err != nil {
		g.warn.debug("set-response", "coap: cannot set response", "error", err)
	}
}

// codeOf maps an error to the CoAP response code and diagnostic it gets.
func codeOf(err error) (codes.Code, string) {
	var re *RequestError
	if errors.As(err, &re) {
		return re.Code, re.Reason
	}
	return codes.InternalServerError, "internal error"
}

// monitor sees every incoming message before go-coap handles it: it notes
// RSTs that reject notifications, refuses uploads larger than max_payload
// (announced by Size1 or grown block by block), and reassembles block-wise
// uploads (upload.go).
func (g *Gateway) monitor(cc *udpClient.Conn, m *pool.Message) (bool, error) {
	if (m.Type() == message.Reset || m.Type() == message.Acknowledgement) && m.Code() == codes.Empty &&
		g.pong(cc.RemoteAddr().String(), m.MessageID()) {
		return true, nil // the answer to a ping: go-coap need not see it
	}
	if m.Type() == message.Reset {
		g.onReset(cc.RemoteAddr().String())
		return false, nil
	}
	if m.Code() != codes.POST && m.Code() != codes.PUT {
		return false, nil
	}
	if size1, err := m.GetOptionUint32(message.Size1); err == nil && int64(size1) > int64(g.cfg.MaxPayload) {
		g.tooLarge(cc, m)
		return true, nil
	}
	block, err := m.GetOptionUint32(message.Block1)
	if err != nil {
		return false, nil
	}
	return g.block1(cc, m, block), nil
}

// tooLarge answers 4.13 with Size1 = max_payload (RFC 7959 §2.9.3).
func (g *Gateway) tooLarge(cc *udpClient.Conn, req *pool.Message) {
	size1 := blockOption(message.Size1, uint32(g.cfg.MaxPayload))
	g.answer(cc, req, codes.RequestEntityTooLarge, []message.Option{size1}, fmt.Sprintf("payload larger than %d bytes", g.cfg.MaxPayload))
}

// sweep closes connections that missed their heartbeats, ends idle
// connectionless sessions and pings silent observers.
func (g *Gateway) sweep(now time.Time) {
	g.expireUploads(now)
	g.probeObservers(now)
	g.mu.Lock()
	devs := make([]*device, 0, len(g.devices))
	for _, d := range g.devices {
		devs = append(devs, d)
	}
	g.mu.Unlock()
	for _, d := range devs {
		idle := now.Sub(d.seen())
		switch {
		case d.connection && idle > g.cfg.Heartbeat*3/2:
			g.log.Info("coap connection missed its heartbeats: closing", "client", d.clientID, "idle", idle.Round(time.Millisecond))
			d.lost()
		case !d.connection && idle > g.cfg.SessionIdle && !d.observing():
			d.stop()
		}
	}
}
