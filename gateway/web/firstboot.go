package web

import (
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/fieldgate/fieldgate/board/appliance"
	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// SetupPending reports whether the gateway whose data directory is dataDir
// still waits for its first-boot setup (no admin password set). The
// process prints the setup code at start when it does.
func SetupPending(dataDir string) bool {
	s, err := openAuthStore(dataDir, 0)
	return err == nil && !s.hasPassword()
}

// setupGate holds the first-boot setup code: whoever sets the first admin
// password must give it. It is printed on the serial console and in the
// log at start, and kept in dataDir/setup-code (mode 0600) until the
// setup is done.
type setupGate struct {
	dataDir string
	mu      sync.Mutex
	code    string // "" once the setup is done
}

// openSetupGate makes sure a setup code exists while no admin password is
// set, and removes a stale one once it is.
func openSetupGate(dataDir string, setUp bool) (*setupGate, bool, error) {
	g := &setupGate{dataDir: dataDir}
	if setUp {
		return g, false, appliance.RemoveSetupCode(dataDir)
	}
	code, created, err := appliance.EnsureSetupCode(dataDir)
	if err != nil {
		return nil, false, fmt.Errorf("web: %w", err)
	}
	g.code = code
	return g, created, nil
}

// current returns the code, "" when the setup is done.
func (g *setupGate) current() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.code
}

// done forgets the code and removes its file.
func (g *setupGate) done() error {
	g.mu.Lock()
	g.code = ""
	g.mu.Unlock()
	return appliance.RemoveSetupCode(g.dataDir)
}

// checkSetupCode checks the setup code of a setup request from addr under
// the same per-address limiter as the admin password: free attempts, then
// a doubling wait. On a refusal it has answered (429 or 403) and returns
// false.
func (s *Server) checkSetupCode(w http.ResponseWriter, r *http.Request, got string) bool {
	addr := clientAddr(r)
	wait, penalty := s.lim.reserve(addr, s.now())
	if wait > 0 {
		s.metrics.loginRefused.WithLabelValues("wait").Inc()
		tooManyCodes(w, wait.Seconds())
		return false
	}
	if !appliance.CheckSetupCode(s.gate.current(), got) {
		s.metrics.loginFailures.Inc()
		s.logSome.Warn("", "web: first-boot setup refused: wrong setup code", "address", addr, "wait", penalty)
		if penalty > 0 {
			tooManyCodes(w, penalty.Seconds())
			return false
		}
		writeJSON(w, http.StatusForbidden, apiError{
			Error:  "wrong setup code: it is printed on the serial console and in the journal at boot, and kept in " + filepath.Join(s.opts.DataDir, appliance.SetupCodeFile) + " (root only)",
			Fields: []FieldError{{Field: "setup_code", Error: "wrong setup code"}},
		})
		return false
	}
	s.lim.success(addr)
	return true
}

// tooManyCodes answers 429 after too many wrong setup codes.
func tooManyCodes(w http.ResponseWriter, secs float64) {
	n := max(int(secs+0.999), 1)
	w.Header().Set("Retry-After", fmt.Sprint(n))
	writeJSON(w, http.StatusTooManyRequests, map[string]any{
		"error":       fmt.Sprintf("too many wrong setup codes: wait %ds before trying again", n),
		"retry_after": n,
	})
}

// lanAccess is the first-boot answer to "may devices on the LAN connect
// without a username, and through which listeners?".
type lanAccess struct {
	// Anonymous allows anonymous clients (broker.auth.allow_anonymous).
	Anonymous bool `json:"anonymous"`
	// Listeners limits them to these (broker.auth.anonymous_listeners);
	// empty with Anonymous: every listener.
	Listeners []string `json:"listeners"`
}

// apply writes the answer into c; an unknown listener name is an error.
func (a lanAccess) apply(c *config.Config) error {
	for _, l := range a.Listeners {
		if !slices.Contains(mqtt.AnonymousListenerNames, l) {
			return fmt.Errorf("unknown listener %q: one of %s", l, strings.Join(mqtt.AnonymousListenerNames, ", "))
		}
	}
	c.Broker.Auth.AllowAnonymous = a.Anonymous
	c.Broker.Auth.AnonymousListeners = nil
	if a.Anonymous {
		c.Broker.Auth.AnonymousListeners = slices.Clone(a.Listeners)
	}
	return nil
}

// Exposure is one listener as the first-boot page shows it: where it
// listens and whether a client without a username is let in.
type Exposure struct {
	// Listener is the name used in broker.auth.anonymous_listeners.
	Listener string `json:"listener"`
	// What it is, in plain words.
	Kind    string `json:"kind"`
	Enabled bool   `json:"enabled"`
	Address string `json:"address,omitempty"`
	// Everywhere is true when Address has no host: every interface.
	Everywhere bool `json:"everywhere"`
	// Anonymous is true when anonymous clients are accepted there.
	Anonymous bool `json:"anonymous"`
	// AnonymousWrites lists the topics anonymous clients may never publish
	// to (broker.auth.anonymous_deny_publish), when Anonymous.
	DeniedToAnonymous []string `json:"denied_to_anonymous,omitempty"`
}

// exposure lists every listener of c, enabled or not, with who may use it.
func exposure(c config.Config) []Exposure {
	a := c.Broker.Auth
	anon := func(name string) bool {
		return a.AllowAnonymous && (len(a.AnonymousListeners) == 0 || slices.Contains(a.AnonymousListeners, name))
	}
	l := c.Broker.Listeners
	rows := []Exposure{
		{Listener: "tcp", Kind: "MQTT over TCP", Enabled: l.TCP.Enabled, Address: l.TCP.Address},
		{Listener: "tls", Kind: "MQTT over TLS", Enabled: l.TLS.Enabled, Address: l.TLS.Address},
		{Listener: "websocket", Kind: "MQTT over WebSocket", Enabled: l.WebSocket.Enabled, Address: l.WebSocket.Address},
		{Listener: "quic", Kind: "MQTT over QUIC (UDP)", Enabled: l.QUIC.Enabled, Address: l.QUIC.Address},
		{Listener: "mqttsn", Kind: "MQTT-SN (UDP)", Enabled: c.MQTTSN.Enabled, Address: c.MQTTSN.Address},
		{Listener: "coap", Kind: "CoAP (UDP)", Enabled: c.CoAP.Enabled, Address: c.CoAP.Address},
	}
	for i := range rows {
		r := &rows[i]
		if r.Listener == "tls" && l.TLS.RequireClientCert || r.Listener == "quic" && l.QUIC.RequireClientCert {
			r.Anonymous = false // a certificate is required there
		} else {
			r.Anonymous = r.Enabled && anon(r.Listener)
		}
		r.Everywhere = strings.HasPrefix(r.Address, ":") || strings.HasPrefix(r.Address, "0.0.0.0:") || strings.HasPrefix(r.Address, "[::]:")
		if r.Anonymous {
			r.DeniedToAnonymous = slices.Clone(a.AnonymousDenyPublish)
		}
	}
	return rows
}

// getExposure is GET /api/v1/exposure: open while the first-boot setup is
// pending (the wizard shows it), then for logged-in users only.
func (s *Server) getExposure(w http.ResponseWriter, r *http.Request) {
	if s.auth.hasPassword() {
		if id, ok := s.authenticate(r); !ok || !scopeAllows(id.scope, scopeRead) {
			writeError(w, http.StatusUnauthorized, "login required")
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"listeners": exposure(s.b.Config())})
}

// resetRequest confirms a factory reset by repeating the gateway id (the
// site name the page shows).
type resetRequest struct {
	Confirm string `json:"confirm"`
}

// factoryReset is POST /api/v1/factory-reset: it leaves the reset marker
// in the data directory and asks the process to stop; the process wipes
// the saved config, the web login and the data once every part has
// stopped, and starts again as on first boot.
func (s *Server) factoryReset(w http.ResponseWriter, r *http.Request) {
	var req resetRequest
	if !readJSON(w, r, &req) {
		return
	}
	site := "fieldgate"
	if s.opts.GatewayID != nil {
		site = s.opts.GatewayID()
	}
	if req.Confirm != site {
		writeFields(w, "not confirmed", FieldError{Field: "confirm", Error: fmt.Sprintf("type the gateway name %q to confirm", site)})
		return
	}
	if s.opts.RequestStop == nil {
		writeError(w, http.StatusNotImplemented, "this gateway cannot restart itself: run `fieldgate reset --factory` with the gateway stopped")
		return
	}
	if err := appliance.RequestReset(s.opts.DataDir, s.now()); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Warn("web: factory reset requested: the gateway stops, wipes its config, login and data, and starts again", "address", clientAddr(r))
	writeJSON(w, http.StatusAccepted, map[string]any{"resetting": true})
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	s.opts.RequestStop()
}
