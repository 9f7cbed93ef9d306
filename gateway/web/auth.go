package web

import (
	"errors"
	"math"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/board/appliance"
	"github.com/fieldgate/fieldgate/gateway/config"
)

// sessionInfo is GET /api/v1/session: what the page shows first.
type sessionInfo struct {
	SetupRequired bool `json:"setup_required"`
	// SetupCodeFile is where the setup code is kept, while setup is
	// required (the page tells the technician where to look).
	SetupCodeFile string `json:"setup_code_file,omitempty"`
	LoggedIn      bool   `json:"logged_in"`
	CSRF          string `json:"csrf,omitempty"`
	Version       string `json:"version"`
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request) {
	info := sessionInfo{SetupRequired: !s.auth.hasPassword(), Version: s.opts.Version}
	if info.SetupRequired {
		info.SetupCodeFile = filepath.Join(s.opts.DataDir, appliance.SetupCodeFile)
	}
	if id, ok := s.authenticate(r); ok && id.session != "" {
		info.LoggedIn, info.CSRF = true, id.csrf
	}
	writeJSON(w, http.StatusOK, info)
}

// setupRequest is the first boot form.
type setupRequest struct {
	// SetupCode is the one-time code printed on the serial console and in
	// the journal: only someone with the device can read it.
	SetupCode string `json:"setup_code"`
	Password  string `json:"password"`
	GatewayID string `json:"gateway_id"`
	// LAN, if given, answers whether anonymous LAN devices may connect and
	// through which listeners; nil keeps the config's answer.
	LAN *lanAccess `json:"lan,omitempty"`
}

// setup sets the first admin password (only while none is set, and only
// with the right setup code), optionally the gateway id and the LAN access
// answer, and logs the caller in. The password state is checked before
// anything else, then the setup code (under the login limiter), and the
// password is set (atomically, only if none is) before the config is
// applied: of concurrent setup requests one wins, and every other gets 409
// having changed nothing.
func (s *Server) setup(w http.ResponseWriter, r *http.Request) {
	if s.auth.hasPassword() {
		writeError(w, http.StatusConflict, errAlreadySetUp.Error())
		return
	}
	var req setupRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !s.checkSetupCode(w, r, req.SetupCode) {
		return
	}
	change := req.GatewayID != "" || req.LAN != nil
	next := s.b.Config()
	if req.GatewayID != "" {
		next.Gateway.ID = req.GatewayID
		if err := next.Validate(); err != nil {
			writeFields(w, "invalid setup", FieldError{Field: "gateway_id", Error: "at most 64 letters, digits, '-', '_' or '.'"})
			return
		}
	}
	if req.LAN != nil {
		if err := req.LAN.apply(&next); err != nil {
			writeFields(w, "invalid setup", FieldError{Field: "lan.listeners", Error: err.Error()})
			return
		}
	}
	release, free := s.passwordSlot() // bcrypt, open to anyone until set
	if !free {
		busy(w)
		return
	}
	defer release()
	if err := s.auth.setPassword(req.Password, true); err != nil {
		if errors.Is(err, errAlreadySetUp) {
			writeError(w, http.StatusConflict, err.Error())
			return
		}
		writeFields(w, "invalid setup", FieldError{Field: "password", Error: err.Error()})
		return
	}
	s.log.Info("web: admin password set (first boot)", "address", clientAddr(r))
	if err := s.gate.done(); err != nil {
		s.log.Warn("web: setup code not removed", "err", err)
	}
	if change {
		c := s.b.Config()
		if req.GatewayID != "" {
			c.Gateway.ID = req.GatewayID
		}
		if req.LAN != nil {
			req.LAN.apply(&c) // checked above
		}
		if _, err := s.b.ApplyConfig(r.Context(), c); err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{
				Error:  "the admin password is set, but the gateway id and LAN access were not saved: log in and set them in the settings",
				Fields: fieldErrors(err)})
			return
		}
	}
	s.startSession(w, r)
}

type loginRequest struct {
	Password string `json:"password"`
}

// login checks the admin password under the per-address limiter and the
// global bound on password checks.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !s.auth.hasPassword() {
		writeError(w, http.StatusConflict, "no admin password yet: finish the setup first")
		return
	}
	addr := clientAddr(r)
	ok, penalty := s.checkAdminPassword(w, addr, req.Password)
	if penalty < 0 {
		return // refused before the check: answered
	}
	if !ok {
		if penalty > 0 {
			tooMany(w, penalty)
			return
		}
		writeError(w, http.StatusUnauthorized, "wrong password")
		return
	}
	s.log.Info("web: login", "address", addr)
	s.startSession(w, r)
}

// checkAdminPassword checks password for addr: first it takes a slot
// among the web.login_concurrency password checks (else 429 "busy"), then
// reserves the attempt with the limiter (else 429 with the wait left), and
// only then runs bcrypt. A success clears addr. penalty < 0 means the
// request was refused before the check and the answer is written;
// otherwise penalty is the wait a failure cost (0: a free attempt).
func (s *Server) checkAdminPassword(w http.ResponseWriter, addr, password string) (ok bool, penalty time.Duration) {
	release, free := s.passwordSlot()
	if !free {
		s.metrics.loginRefused.WithLabelValues("busy").Inc()
		s.logSome.Warn("", "web: login refused: too many password checks at once", "address", addr)
		busy(w)
		return false, -1
	}
	defer release()
	wait, penalty := s.lim.reserve(addr, s.now())
	if wait > 0 {
		s.metrics.loginRefused.WithLabelValues("wait").Inc()
		tooMany(w, wait)
		return false, -1
	}
	s.metrics.passwordChecks.Inc()
	if !s.auth.checkPassword(password) {
		s.metrics.loginFailures.Inc()
		s.logSome.Warn("", "web: wrong admin password", "address", addr, "wait", penalty)
		return false, penalty
	}
	s.lim.success(addr)
	return true, 0
}

// passwordSlot takes one of the web.login_concurrency slots for a bcrypt
// computation, without waiting; ok is false when all are taken.
func (s *Server) passwordSlot() (release func(), ok bool) {
	select {
	case s.logins <- struct{}{}:
		return func() { <-s.logins }, true
	default:
		return nil, false
	}
}

// busy answers 429 when every password check slot is taken.
func busy(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusTooManyRequests, map[string]any{
		"error":       "too many logins at once: try again in 1s",
		"retry_after": 1,
	})
}

// tooMany answers 429 with the wait in Retry-After and in the body.
func tooMany(w http.ResponseWriter, d time.Duration) {
	secs := int(math.Ceil(d.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeJSON(w, http.StatusTooManyRequests, map[string]any{
		"error":       "too many wrong passwords: wait " + (time.Duration(secs) * time.Second).String() + " before trying again",
		"retry_after": secs,
	})
}

// startSession sets the session cookie and returns the CSRF token.
func (s *Server) startSession(w http.ResponseWriter, r *http.Request) {
	id, csrf := s.sess.create(s.now())
	http.SetCookie(w, &http.Cookie{
		Name: Cookie, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil, MaxAge: int(s.cfg.SessionMax.Seconds()),
	})
	writeJSON(w, http.StatusOK, sessionInfo{LoggedIn: true, CSRF: csrf, Version: s.opts.Version})
}

// logout ends the session; it needs the CSRF token so that another site
// cannot log the user out.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	id, ok := s.authenticate(r)
	if ok && id.session != "" {
		if r.Header.Get("X-CSRF-Token") != id.csrf {
			writeError(w, http.StatusForbidden, "missing or wrong X-CSRF-Token header")
			return
		}
		s.sess.remove(id.session)
	}
	http.SetCookie(w, &http.Cookie{Name: Cookie, Value: "", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	writeJSON(w, http.StatusOK, map[string]bool{"logged_in": false})
}

type passwordRequest struct {
	Current string `json:"current"`
	New     string `json:"new"`
}

// changePassword replaces the admin password and ends every session.
func (s *Server) changePassword(w http.ResponseWriter, r *http.Request) {
	var req passwordRequest
	if !readJSON(w, r, &req) {
		return
	}
	addr := clientAddr(r)
	ok, penalty := s.checkAdminPassword(w, addr, req.Current)
	if penalty < 0 {
		return
	}
	if !ok {
		writeFields(w, "wrong password", FieldError{Field: "current", Error: "wrong password"})
		return
	}
	release, free := s.passwordSlot()
	if !free {
		busy(w)
		return
	}
	defer release()
	if err := s.auth.setPassword(req.New, false); err != nil {
		writeFields(w, "invalid password", FieldError{Field: "new", Error: err.Error()})
		return
	}
	s.sess.removeAll()
	s.log.Info("web: admin password changed", "address", addr)
	s.startSession(w, r)
}

type tokenRequest struct {
	Name string `json:"name"`
	// Scope is metrics, read or admin. There is no default: whoever makes
	// a token chooses the rights it carries.
	Scope string `json:"scope"`
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"tokens": s.auth.tokens()})
}

// createToken makes a bearer token; the response is the only place the
// token ever appears.
func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	var req tokenRequest
	if !readJSON(w, r, &req) {
		return
	}
	var bad []FieldError
	if req.Name == "" || len(req.Name) > 64 {
		bad = append(bad, FieldError{Field: "name", Error: "must be 1 to 64 characters"})
	}
	if !slices.Contains(scopes, req.Scope) {
		bad = append(bad, FieldError{Field: "scope", Error: "must be one of " + strings.Join(scopes, ", ")})
	}
	if len(bad) > 0 {
		writeFields(w, "invalid token", bad...)
		return
	}
	tok, info, err := s.auth.newToken(req.Name, req.Scope, s.now())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info("web: bearer token created", "token_id", info.ID, "name", info.Name, "scope", info.Scope)
	writeJSON(w, http.StatusCreated, map[string]any{"token": tok, "info": info})
}

func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request) {
	found, err := s.auth.deleteToken(r.PathValue("id"))
	switch {
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
	case !found:
		writeError(w, http.StatusNotFound, "no such token")
	default:
		writeJSON(w, http.StatusOK, map[string]bool{"deleted": true})
	}
}

// applyConfig applies c, answering 400 with per-field errors when it is
// refused; dry runs only validate.
func (s *Server) applyConfig(w http.ResponseWriter, r *http.Request, c config.Config) {
	if err := c.Validate(); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid config", Fields: configFieldErrors(c, err)})
		return
	}
	if r.URL.Query().Get("dry_run") != "" {
		writeJSON(w, http.StatusOK, map[string]any{"valid": true})
		return
	}
	restart, err := s.b.ApplyConfig(r.Context(), c)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "config refused", Fields: configFieldErrors(c, err)})
		return
	}
	s.log.Info("web: config applied", "address", clientAddr(r), "restart", restart)
	if restart == nil {
		restart = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"applied": true, "restart": restart})
}
