package web

import (
	"github.com/fieldgate/fieldgate/internal/atomicfile"

	"archive/zip"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/internal/secret"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
	"github.com/fieldgate/fieldgate/uplink"
)

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st := s.b.Status()
	st.Devices = slices.Clone(st.Devices)
	for i, d := range st.Devices {
		st.Devices[i].LastError = plainOr(d.LastError)
	}
	st.Uplink.LastError = plainNetwork(st.Uplink.LastError)
	writeJSON(w, http.StatusOK, st)
}

// getConfig returns the running config, redacted, as the JSON form of its
// YAML file.
func (s *Server) getConfig(w http.ResponseWriter, r *http.Request) {
	m, err := configMap(s.b.Config())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// downloadConfig returns the running config, redacted, as a YAML file.
func (s *Server) downloadConfig(w http.ResponseWriter, r *http.Request) {
	data, err := configYAML(s.b.Config())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("Content-Disposition", `attachment; filename="fieldgate.yaml"`)
	w.Write(data)
}

// putConfig replaces the whole config with the body (YAML or JSON).
func (s *Server) putConfig(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "config too large (at most 1 MiB)")
		return
	}
	c, err := parseConfig(data, s.b.Config())
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid config", Fields: fieldErrors(err)})
		return
	}
	s.applyConfig(w, r, c)
}

// sectionName is a dotted path of YAML keys.
var sectionName = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`)

// putSection replaces one section (body: its JSON) and applies the result.
func (s *Server) putSection(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("section")
	if !sectionName.MatchString(name) || name == "version" {
		writeError(w, http.StatusNotFound, "no such section")
		return
	}
	var section any
	if !readJSON(w, r, &section) {
		return
	}
	c, err := withSection(s.b.Config(), name, section)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid config", Fields: sectionFieldErrors(s.b.Config(), name, section, err)})
		return
	}
	s.applyConfig(w, r, c)
}

func (s *Server) clients(w http.ResponseWriter, r *http.Request) {
	cl := s.b.Clients()
	if cl == nil {
		cl = []Client{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"clients": cl})
}

func (s *Server) disconnect(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.b.DisconnectClient(id); err != nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("disconnect %q: %v", id, err))
		return
	}
	s.log.Info("web: client disconnected", "client", id, "address", clientAddr(r))
	writeJSON(w, http.StatusOK, map[string]bool{"disconnected": true})
}

type userRequest struct {
	Password string `json:"password"`
}

// setUser creates a broker user or sets its password; the hash is made
// here and never shown back.
func (s *Server) setUser(w http.ResponseWriter, r *http.Request) {
	var req userRequest
	if !readJSON(w, r, &req) {
		return
	}
	name := r.PathValue("username")
	if len(req.Password) < 1 || len(req.Password) > 72 {
		writeFields(w, "invalid user", FieldError{Field: "password", Error: "must be 1 to 72 bytes"})
		return
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(req.Password), s.opts.BcryptCost)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	c := s.b.Config()
	users := slices.Clone(c.Broker.Auth.Users)
	i := slices.IndexFunc(users, func(u mqtt.User) bool { return u.Username == name })
	if i < 0 {
		users = append(users, mqtt.User{Username: name})
		i = len(users) - 1
	}
	users[i].PasswordHash = secret.New(string(hash))
	c.Broker.Auth.Users = users
	s.applyConfig(w, r, c)
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("username")
	c := s.b.Config()
	users := slices.DeleteFunc(slices.Clone(c.Broker.Auth.Users), func(u mqtt.User) bool { return u.Username == name })
	if len(users) == len(c.Broker.Auth.Users) {
		writeError(w, http.StatusNotFound, "no such user")
		return
	}
	c.Broker.Auth.Users = users
	s.applyConfig(w, r, c)
}

// testUplink tries the uplink section in the body without applying it.
//
// A stored secret (sent back as Redacted, or left out so that the running
// one applies) is only ever sent where the running config sends it: the
// same servers, ports and transports, the same CA and server name, and
// no certificate check turned off. To try other servers the caller types
// the secret; otherwise the answer is 400 naming the secret's field, and
// nothing is sent anywhere.
func (s *Server) testUplink(w http.ResponseWriter, r *http.Request) {
	var section any
	if !readJSON(w, r, &section) {
		return
	}
	running := s.b.Config()
	c, err := withSection(running, "uplink", section)
	if err == nil {
		if verr := c.Uplink.Validate(); verr != nil {
			err = prefixLines("uplink.", verr)
		}
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid uplink settings", Fields: sectionFieldErrors(running, "uplink", section, err)})
		return
	}
	if stored := storedUplinkSecrets(running, c, section); len(stored) > 0 {
		if why := sameUplinkDestination(running.Uplink, c.Uplink); why != "" {
			s.log.Warn("web: uplink test refused: a stored secret would go to other servers", "address", clientAddr(r), "reason", why)
			var fields []FieldError
			for _, path := range stored {
				fields = append(fields, FieldError{Field: path, Error: "the stored secret is only sent to the stored uplink servers (" + why + "): type it to test these settings"})
			}
			writeJSON(w, http.StatusBadRequest, apiError{Error: "stored secrets are only sent to the stored uplink servers", Fields: fields})
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	if err := s.b.TestUplink(ctx, c.Uplink); err != nil {
		writeJSON(w, http.StatusOK, map[string]any{"ok": false, "error": plainNetwork(err.Error())})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
}

// storedUplinkSecrets returns the paths of the uplink secrets of c that
// the caller did not type: sent as Redacted (restored from running), or
// equal to the running value without appearing in the body.
func storedUplinkSecrets(running, c config.Config, body any) []string {
	old := map[string]string{}
	for _, f := range running.SecretFields() {
		old[f.Path] = f.Value.Reveal()
	}
	var out []string
	for _, f := range c.SecretFields() {
		if !strings.HasPrefix(f.Path, "uplink.") {
			continue
		}
		v := f.Value.Reveal()
		switch {
		case f.Value.Kept():
			out = append(out, f.Path)
		case v == "":
		case v == old[f.Path] && !containsString(body, v):
			out = append(out, f.Path)
		}
	}
	return out
}

// containsString reports whether the JSON tree v holds the string s as a
// value anywhere.
func containsString(v any, s string) bool {
	switch t := v.(type) {
	case string:
		return t == s
	case map[string]any:
		for _, x := range t {
			if containsString(x, s) {
				return true
			}
		}
	case []any:
		for _, x := range t {
			if containsString(x, s) {
				return true
			}
		}
	}
	return false
}

// sameUplinkDestination returns "" when every connection test would make
// with next goes where running already sends its secrets, protected the
// same way; otherwise what differs, in plain words.
func sameUplinkDestination(running, next uplink.Config) string {
	for _, s := range next.Servers {
		if !slices.ContainsFunc(running.Servers, func(r uplink.Server) bool {
			return strings.EqualFold(r.Host, s.Host) && r.QUICPort == s.QUICPort && r.TLSPort == s.TLSPort && r.TCPPort == s.TCPPort
		}) {
			return fmt.Sprintf("server %s with ports quic %d, tls %d, tcp %d is not one of them", s.Host, s.QUICPort, s.TLSPort, s.TCPPort)
		}
	}
	for _, tr := range uplinkTransports(next.Transport) {
		if !slices.Contains(uplinkTransports(running.Transport), tr) {
			return "transport " + tr + " is not what the stored settings use"
		}
	}
	switch {
	case next.TLS.CA != running.TLS.CA:
		return "the TLS CA differs"
	case next.TLS.ServerName != running.TLS.ServerName:
		return "the TLS server name differs"
	case next.TLS.InsecureSkipVerify && !running.TLS.InsecureSkipVerify:
		return "certificate verification is turned off"
	}
	return ""
}

// uplinkTransports are the transports a setting may use.
func uplinkTransports(setting string) []string {
	if setting == "auto" {
		return []string{"quic", "tls"}
	}
	return []string{setting}
}

func prefixLines(prefix string, err error) error {
	var out []error
	for _, l := range strings.Split(err.Error(), "\n") {
		out = append(out, errors.New(prefix+l))
	}
	return errors.Join(out...)
}

// fileName is what an uploaded file may be called.
var fileName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// uploadFile stores a PEM file (CA bundle, certificate or key) under
// data_dir/certs/ and returns its path for the config. Keys are written
// readable by the gateway only, and their content is never returned.
func (s *Server) uploadFile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !fileName.MatchString(name) {
		writeFields(w, "invalid file name", FieldError{Field: "name", Error: "letters, digits, '.', '_' and '-' only, at most 64"})
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 256<<10))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "file too large (at most 256 KiB)")
		return
	}
	kind, err := pemKind(data)
	if err != nil {
		writeFields(w, "invalid file", FieldError{Field: "file", Error: err.Error()})
		return
	}
	path := filepath.Join(s.opts.DataDir, "certs", name)
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("store %s: %v", name, err))
		return
	}
	s.log.Info("web: file uploaded", "file", path, "kind", kind)
	writeJSON(w, http.StatusOK, map[string]string{"path": path, "kind": kind})
}

// pemKind checks that data is PEM holding certificates or one private key.
func pemKind(data []byte) (string, error) {
	kind := ""
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch {
		case b.Type == "CERTIFICATE":
			if _, err := x509.ParseCertificate(b.Bytes); err != nil {
				return "", fmt.Errorf("bad certificate: %v", err)
			}
			if kind == "" {
				kind = "certificate"
			}
		case strings.HasSuffix(b.Type, "PRIVATE KEY"):
			kind = "key"
		default:
			return "", fmt.Errorf("unexpected PEM block %q", b.Type)
		}
	}
	if kind == "" {
		return "", errors.New("no PEM certificate or key found")
	}
	return kind, nil
}

func (s *Server) serialPorts(w http.ResponseWriter, r *http.Request) {
	ports, err := s.b.SerialPorts()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "list serial ports: "+err.Error())
		return
	}
	if ports == nil {
		ports = []SerialPort{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"ports": ports})
}

func (s *Server) readNow(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	rd, err := s.b.ReadNow(ctx, r.PathValue("device"))
	if err != nil {
		writeError(w, http.StatusBadGateway, plainOr(err.Error()))
		return
	}
	for i, p := range rd.Points {
		rd.Points[i].Error = plainOr(p.Error)
	}
	writeJSON(w, http.StatusOK, rd)
}

type writeRequest struct {
	Value any `json:"value"`
}

func (s *Server) writePoint(w http.ResponseWriter, r *http.Request) {
	var req writeRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.Value == nil {
		writeFields(w, "invalid write", FieldError{Field: "value", Error: "required"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	dev, pt := r.PathValue("device"), r.PathValue("point")
	if err := s.b.WritePoint(ctx, dev, pt, req.Value); err != nil {
		words, field := plainError(err.Error())
		if field == "value" {
			writeFields(w, words, FieldError{Field: "value", Error: words, Words: words})
			return
		}
		writeError(w, http.StatusBadGateway, plainOr(err.Error()))
		return
	}
	s.log.Info("web: point written", "device", dev, "point", pt, "address", clientAddr(r))
	writeJSON(w, http.StatusOK, map[string]bool{"written": true})
}

// logs returns recent log entries: ?level=info&part=broker&max=200.
func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var level slog.Level
	if v := q.Get("level"); v != "" {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			writeFields(w, "invalid query", FieldError{Field: "level", Error: "must be debug, info, warn or error"})
			return
		}
	}
	limit := 200
	if v := q.Get("max"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			writeFields(w, "invalid query", FieldError{Field: "max", Error: "must be between 1 and 10000"})
			return
		}
		limit = n
	}
	entries := s.b.Logs(level, q.Get("part"), limit)
	if entries == nil {
		entries = []LogEntry{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"logs": entries})
}

// diagnostics returns a zip: config.yaml (redacted), status.json,
// logs.json and versions.json.
func (s *Server) diagnostics(w http.ResponseWriter, r *http.Request) {
	cfg, err := configYAML(s.b.Config())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	versions := map[string]any{"fieldgate": s.opts.Version, "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		deps := map[string]string{}
		for _, d := range bi.Deps {
			deps[d.Path] = d.Version
		}
		versions["modules"] = deps
	}
	files := []struct {
		name string
		v    any
	}{
		{"status.json", s.b.Status()},
		{"logs.json", s.b.Logs(slog.LevelDebug, "", 10000)},
		{"versions.json", versions},
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	add := func(name string, data []byte) error {
		f, err := zw.Create(name)
		if err != nil {
			return err
		}
		_, err = f.Write(data)
		return err
	}
	err = add("config.yaml", cfg)
	for _, f := range files {
		if err != nil {
			break
		}
		var data []byte
		if data, err = json.MarshalIndent(f.v, "", "  "); err == nil {
			err = add(f.name, data)
		}
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "build diagnostics: "+err.Error())
		return
	}
	name := fmt.Sprintf("fieldgate-diagnostics-%s.zip", s.now().UTC().Format("20060102-150405"))
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Write(buf.Bytes())
}
