package web

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/fieldgate/fieldgate/gateway/config"
)

// sessionInfo is GET /api/v1/session: what the page shows first.
type sessionInfo struct {
	SetupRequired bool   `json:"setup_required"`
	LoggedIn      bool   `json:"logged_in"`
	CSRF          string `json:"csrf,omitempty"`
	Version       string `json:"version"`
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request) {
	info := sessionInfo{SetupRequired: !s.auth.hasPassword(), Version: s.opts.Version}
	if id, ok := s.authenticate(r); ok && id.session != "" {
		info.LoggedIn, info.CSRF = true, id.csrf
	}
	writeJSON(w, http.StatusOK, info)
}

// setupRequest is the first boot form.
type setupRequest struct {
	Password  string `json:"password"`
	GatewayID string `json:"gateway_id"`
}

// setup sets the first admin password (only while none is set), optionally
// the gateway id, and logs the caller in.
func (s *Server) setup(w http.ResponseWriter, r *http.Request) {
	var req setupRequest
	if !readJSON(w, r, &req) {
		return
	}
	if s.auth.hasPassword() {
		writeError(w, http.StatusConflict, errAlreadySetUp.Error())
		return
	}
	if req.GatewayID != "" {
		c := s.b.Config()
		c.Gateway.ID = req.GatewayID
		if err := c.Validate(); err != nil {
			writeFields(w, "invalid setup", FieldError{Field: "gateway_id", Error: "at most 64 letters, digits, '-', '_' or '.'"})
			return
		}
		if len(req.Password) < minPasswordLen {
			writeFields(w, "invalid setup", FieldError{Field: "password", Error: "must be at least 8 characters"})
			return
		}
		if _, err := s.b.ApplyConfig(r.Context(), c); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "gateway id refused", Fields: fieldErrors(err)})
			return
		}
	}
	if err := s.auth.setPassword(req.Password, true); err != nil {
		if errors.Is(err, errAlreadySetUp) {
			writeError(w, http.StatusConflict, err.Error())
			return
		}
		writeFields(w, "invalid setup", FieldError{Field: "password", Error: err.Error()})
		return
	}
	s.log.Info("web: admin password set (first boot)", "address", clientAddr(r))
	s.startSession(w, r)
}

type loginRequest struct {
	Password string `json:"password"`
}

// login checks the admin password under the per-address limiter.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if !readJSON(w, r, &req) {
		return
	}
	addr := clientAddr(r)
	if d := s.lim.wait(addr, s.now()); d > 0 {
		tooMany(w, d)
		return
	}
	if !s.auth.hasPassword() {
		writeError(w, http.StatusConflict, "no admin password yet: finish the setup first")
		return
	}
	if !s.auth.checkPassword(req.Password) {
		d := s.lim.fail(addr, s.now())
		s.metrics.loginFailures.Inc()
		s.logSome.Do(func() { s.log.Warn("web: wrong admin password", "address", addr, "wait", d) })
		if d > 0 {
			tooMany(w, d)
			return
		}
		writeError(w, http.StatusUnauthorized, "wrong password")
		return
	}
	s.lim.success(addr)
	s.log.Info("web: login", "address", addr)
	s.startSession(w, r)
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
	if d := s.lim.wait(addr, s.now()); d > 0 {
		tooMany(w, d)
		return
	}
	if !s.auth.checkPassword(req.Current) {
		s.lim.fail(addr, s.now())
		writeFields(w, "wrong password", FieldError{Field: "current", Error: "wrong password"})
		return
	}
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
	if req.Name == "" || len(req.Name) > 64 {
		writeFields(w, "invalid token", FieldError{Field: "name", Error: "must be 1 to 64 characters"})
		return
	}
	tok, info, err := s.auth.newToken(req.Name, s.now())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info("web: bearer token created", "token_id", info.ID, "name", info.Name)
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
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid config", Fields: fieldErrors(err)})
		return
	}
	if r.URL.Query().Get("dry_run") != "" {
		writeJSON(w, http.StatusOK, map[string]any{"valid": true})
		return
	}
	restart, err := s.b.ApplyConfig(r.Context(), c)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "config refused", Fields: fieldErrors(err)})
		return
	}
	s.log.Info("web: config applied", "address", clientAddr(r), "restart", restart)
	if restart == nil {
		restart = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"applied": true, "restart": restart})
}
