package web

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/southbound/opcua"
)

// The OPC UA API: the servers' state and statistics, the trust action for
// a server certificate, browsing a server's address space, adding a
// browsed variable as a point, writing a point, and a server's points as
// CSV (export, a template, an import with a dry run), in the format of
// the Modbus tag import. Config changes go through Backend.Config and
// ApplyConfig like every other change; what needs the running servers
// goes through OPCUABackend.

// OPCUABackend is what the OPC UA routes need from the running gateway
// beyond Backend. A Backend that does not implement it answers 404 on
// those routes. Every method must be safe for concurrent use.
type OPCUABackend interface {
	// OPCUAServers is the state of every configured server.
	OPCUAServers() []OPCUAServerStatus
	// OPCUABrowse lists the children of node ("" for the Objects folder)
	// on the named server.
	OPCUABrowse(ctx context.Context, server, node string) ([]OPCUANode, error)
	// OPCUATrust adds the certificate the named server presented, whose
	// SHA-1 thumbprint (hex) is thumbprint, to the trust list. It fails
	// when the server's current certificate has another thumbprint.
	OPCUATrust(ctx context.Context, server, thumbprint string) error
	// OPCUAClientCertificate is the gateway's own application certificate
	// and its DER bytes, which a server's administrator trusts on the
	// server.
	OPCUAClientCertificate() (OPCUACertificate, []byte, error)
	// OPCUAWrite writes value to a writable point through the set command
	// topic, as an MQTT client would, and waits for the result.
	OPCUAWrite(ctx context.Context, server, point string, value any) error
}

// OPCUAServerStatus is one OPC UA server as the page shows it.
type OPCUAServerStatus struct {
	Name     string `json:"name"`
	Endpoint string `json:"endpoint"`
	// State is online, offline, connecting or untrusted (the server's
	// certificate is not in the trust list: Certificate says which).
	State     string    `json:"state"`
	LastError string    `json:"last_error,omitempty"`
	Since     time.Time `json:"since,omitzero"`
	// Certificate is the certificate the server presented, when known.
	Certificate *OPCUACertificate `json:"certificate,omitempty"`
	// Stats are the server's counters.
	Stats OPCUAStats `json:"stats"`
}

// OPCUACertificate is a server's application certificate.
type OPCUACertificate struct {
	// Thumbprint is the SHA-1 of the DER certificate in hex, as OPC UA
	// tools show it.
	Thumbprint string    `json:"thumbprint"`
	Subject    string    `json:"subject,omitempty"`
	NotAfter   time.Time `json:"not_after,omitzero"`
	Trusted    bool      `json:"trusted"`
}

// OPCUAStats are one server's counters since the gateway started.
type OPCUAStats struct {
	Connects       uint64            `json:"connects"`
	Reconnects     uint64            `json:"reconnects"`
	Resumed        uint64            `json:"resumed"`   // reconnects that kept the session and its subscription
	Recreated      uint64            `json:"recreated"` // reconnects that made a new session
	MonitoredItems int               `json:"monitored_items"`
	PolledPoints   int               `json:"polled_points"`
	Notifications  uint64            `json:"notifications"`
	Reads          uint64            `json:"reads"`
	Writes         uint64            `json:"writes"`
	WriteErrors    uint64            `json:"write_errors"`
	Errors         map[string]uint64 `json:"errors,omitempty"`
	RoundTripP50Ms float64           `json:"round_trip_p50_ms"`
	RoundTripP99Ms float64           `json:"round_trip_p99_ms"`
}

// OPCUANode is one node of a server's address space.
type OPCUANode struct {
	NodeID     string `json:"node_id"`
	BrowseName string `json:"browse_name"`
	// BrowsePath is the path from Objects ("2:Boiler/2:Temp"), when the
	// browse started there.
	BrowsePath  string `json:"browse_path,omitempty"`
	DisplayName string `json:"display_name,omitempty"`
	// Class is Object, Variable, Method, ObjectType, ...
	Class string `json:"class"`
	// HasChildren says whether browsing the node may find more.
	HasChildren bool `json:"has_children"`
	// Type is a variable's built-in data type (Double, String, ...).
	Type  string `json:"type,omitempty"`
	Array bool   `json:"array,omitempty"`
	// Value is a variable's value as it would be published.
	Value any `json:"value,omitempty"`
	// Access is RO, RW or WO for a variable.
	Access string `json:"access,omitempty"`
	// Status is the value's OPC UA status when it is not Good.
	Status string `json:"status,omitempty"`
}

// opcuaRoutes are the OPC UA routes, added to the API's.
func (s *Server) opcuaRoutes() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"GET /api/v1/opcua/servers":                                s.opcuaServers,
		"GET /api/v1/opcua/servers/{server}/browse":                s.opcuaBrowse,
		"POST /api/v1/opcua/servers/{server}/trust":                s.opcuaTrust,
		"POST /api/v1/opcua/servers/{server}/points":               s.opcuaAddPoint,
		"POST /api/v1/opcua/servers/{server}/points/{point}/write": s.opcuaWrite,
		"GET /api/v1/opcua/servers/{server}/points.csv":            s.opcuaExport,
		"POST /api/v1/opcua/servers/{server}/points.csv":           s.opcuaImport,
		"GET /api/v1/opcua/points-template.csv":                    s.opcuaTemplate,
		"GET /api/v1/opcua/certificate":                            s.opcuaCertificate,
		"GET /api/v1/opcua/certificate.der":                        s.opcuaCertificateDER,
	}
}

// opcuaBackend is the backend's OPC UA side; without one it has written
// the 404.
func (s *Server) opcuaBackend(w http.ResponseWriter) (OPCUABackend, bool) {
	ob, ok := s.b.(OPCUABackend)
	if !ok {
		writeError(w, http.StatusNotFound, "this gateway has no OPC UA support")
	}
	return ob, ok
}

// opcuaServer returns the index of the named server in c, or -1.
func opcuaServer(c config.Config, name string) int {
	return slices.IndexFunc(c.Southbound.OPCUA.Servers, func(s opcua.Server) bool { return s.Name == name })
}

// knownServer writes the 404 for a server that is not configured.
func knownServer(w http.ResponseWriter, c config.Config, name string) (int, bool) {
	i := opcuaServer(c, name)
	if i < 0 {
		writeError(w, http.StatusNotFound, "no such OPC UA server")
	}
	return i, i >= 0
}

func (s *Server) opcuaServers(w http.ResponseWriter, r *http.Request) {
	ob, ok := s.opcuaBackend(w)
	if !ok {
		return
	}
	out := ob.OPCUAServers()
	if out == nil {
		out = []OPCUAServerStatus{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"servers": out})
}

// opcuaTimeout bounds a browse, read or trust of one server.
const opcuaTimeout = 15 * time.Second

func (s *Server) opcuaBrowse(w http.ResponseWriter, r *http.Request) {
	ob, ok := s.opcuaBackend(w)
	if !ok {
		return
	}
	name := r.PathValue("server")
	if _, ok := knownServer(w, s.b.Config(), name); !ok {
		return
	}
	node := r.URL.Query().Get("node")
	if len(node) > 4096 {
		writeFields(w, "invalid browse", FieldError{Field: "node", Error: "longer than 4096 bytes"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), opcuaTimeout)
	defer cancel()
	kids, err := ob.OPCUABrowse(ctx, name, node)
	if err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	if kids == nil {
		kids = []OPCUANode{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"node": node, "children": kids})
}

type trustRequest struct {
	Thumbprint string `json:"thumbprint"`
}

// opcuaTrust trusts the certificate a server presented: the page sends
// the thumbprint it showed, so that a certificate changed meanwhile is not
// trusted unseen.
func (s *Server) opcuaTrust(w http.ResponseWriter, r *http.Request) {
	ob, ok := s.opcuaBackend(w)
	if !ok {
		return
	}
	var req trustRequest
	if !readJSON(w, r, &req) {
		return
	}
	name := r.PathValue("server")
	if _, ok := knownServer(w, s.b.Config(), name); !ok {
		return
	}
	tp := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(req.Thumbprint), ":", ""))
	if !thumbprint.MatchString(tp) {
		writeFields(w, "invalid trust", FieldError{Field: "thumbprint", Error: "must be the 40 hex digits of the certificate's SHA-1 thumbprint"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), opcuaTimeout)
	defer cancel()
	if err := ob.OPCUATrust(ctx, name, tp); err != nil {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	s.log.Info("web: OPC UA server certificate trusted", "server", name, "thumbprint", tp, "address", clientAddr(r))
	writeJSON(w, http.StatusOK, map[string]any{"trusted": true, "thumbprint": tp})
}

var thumbprint = regexp.MustCompile(`^[0-9a-f]{40}$`)

type addPointRequest struct {
	// Node is the variable's NodeId, as Browse gave it.
	Node string `json:"node"`
	// Name is the point's name; empty: made from BrowseName.
	Name       string `json:"name"`
	BrowseName string `json:"browse_name"`
	Writable   bool   `json:"writable"`
	Unit       string `json:"unit"`
}

// opcuaAddPoint adds a browsed variable as a point in one click: its name
// is the variable's browse name made fit for a topic (and unique among the
// server's points).
func (s *Server) opcuaAddPoint(w http.ResponseWriter, r *http.Request) {
	var req addPointRequest
	if !readJSON(w, r, &req) {
		return
	}
	name := r.PathValue("server")
	c := s.b.Config()
	i, ok := knownServer(w, c, name)
	if !ok {
		return
	}
	if strings.TrimSpace(req.Node) == "" {
		writeFields(w, "invalid point", FieldError{Field: "node", Error: "required"})
		return
	}
	srv := c.Southbound.OPCUA.Servers[i]
	pname := strings.TrimSpace(req.Name)
	if pname == "" {
		pname = uniquePointName(pointName(cmp.Or(req.BrowseName, req.Node)), srv.Points)
	}
	p := opcua.Point{Name: pname, Node: strings.TrimSpace(req.Node), Unit: req.Unit, Writable: req.Writable}
	srv.Points = append(slices.Clone(srv.Points), p)
	servers := slices.Clone(c.Southbound.OPCUA.Servers)
	servers[i] = srv
	c.Southbound.OPCUA.Servers = servers
	if err := c.Validate(); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "the point does not fit the server", Fields: fieldErrors(err)})
		return
	}
	restart, err := s.b.ApplyConfig(r.Context(), c)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "config refused", Fields: fieldErrors(err)})
		return
	}
	s.log.Info("web: OPC UA point added", "server", name, "point", p.Name, "address", clientAddr(r))
	writeJSON(w, http.StatusOK, map[string]any{"applied": true, "point": map[string]any{"name": p.Name, "node": p.Node, "writable": p.Writable}, "restart": nonNil(restart)})
}

// pointName makes a browse name ("2:Boiler Temp") a point name, which is a
// topic level: letters, digits, '.', '_' and '-'.
func pointName(browse string) string {
	if _, rest, ok := strings.Cut(browse, ":"); ok && isDigits(browse[:strings.IndexByte(browse, ':')]) {
		browse = rest
	}
	var b strings.Builder
	for _, r := range browse {
		switch {
		case r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-", r)):
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "_"):
			b.WriteByte('_') // one for a run of spaces and symbols
		}
		if b.Len() >= 60 {
			break
		}
	}
	out := strings.Trim(b.String(), "_")
	if out == "" {
		return "point"
	}
	return out
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// uniquePointName is name, or name-2, name-3... when taken.
func uniquePointName(name string, points []opcua.Point) string {
	taken := func(n string) bool {
		return slices.ContainsFunc(points, func(p opcua.Point) bool { return p.Name == n })
	}
	if !taken(name) {
		return name
	}
	for i := 2; ; i++ {
		if n := name + "-" + strconv.Itoa(i); !taken(n) {
			return n
		}
	}
}

func (s *Server) opcuaWrite(w http.ResponseWriter, r *http.Request) {
	ob, ok := s.opcuaBackend(w)
	if !ok {
		return
	}
	var req writeRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.Value == nil {
		writeFields(w, "invalid write", FieldError{Field: "value", Error: "required"})
		return
	}
	name, pt := r.PathValue("server"), r.PathValue("point")
	if _, ok := knownServer(w, s.b.Config(), name); !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), opcuaTimeout)
	defer cancel()
	if err := ob.OPCUAWrite(ctx, name, pt, req.Value); err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	s.log.Info("web: OPC UA point written", "server", name, "point", pt, "address", clientAddr(r))
	writeJSON(w, http.StatusOK, map[string]bool{"written": true})
}

func (s *Server) opcuaTemplate(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="opcua-points-template.csv"`)
	fmt.Fprint(w, opcua.TagTemplateCSV)
}

func (s *Server) opcuaExport(w http.ResponseWriter, r *http.Request) {
	c := s.b.Config()
	i, ok := knownServer(w, c, r.PathValue("server"))
	if !ok {
		return
	}
	srv := c.Southbound.OPCUA.Servers[i]
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-points.csv"`, srv.Name))
	if err := opcua.ExportTags(w, srv); err != nil {
		s.log.Warn("web: export OPC UA points", "server", srv.Name, "err", err)
	}
}

// opcuaImport reads a point CSV (the request body, text/csv) for a server,
// as importTags does for a Modbus device: ?mode=replace (default) or
// merge, ?dry_run=1 only reports; every bad row is listed by line and
// column, the good rows are applied (unless dry_run).
func (s *Server) opcuaImport(w http.ResponseWriter, r *http.Request) {
	mode, ok := importMode(w, r)
	if !ok {
		return
	}
	c := s.b.Config()
	i, ok := knownServer(w, c, r.PathValue("server"))
	if !ok {
		return
	}
	res, err := opcua.ImportTags(http.MaxBytesReader(w, r.Body, maxTagUpload))
	if err != nil {
		writeFields(w, "the file was not imported", FieldError{Field: "file", Error: err.Error()})
		return
	}
	srv := c.Southbound.OPCUA.Servers[i]
	good, rowErrs := opcua.CheckTags(c.Southbound.OPCUA, srv, res)
	points := good
	if mode == "merge" {
		points = mergePoints(srv.Points, good, func(p opcua.Point) string { return p.Name })
	}
	if rowErrs == nil {
		rowErrs = []opcua.RowError{}
	}
	bad := map[int]bool{}
	for _, e := range rowErrs {
		bad[e.Line] = true
	}
	answer := map[string]any{"rows": len(good) + len(bad), "points": len(good), "errors": rowErrs, "mode": mode}
	if r.URL.Query().Get("dry_run") != "" || len(good) == 0 {
		answer["applied"] = false
		writeJSON(w, http.StatusOK, answer)
		return
	}
	srv.Points = points
	servers := slices.Clone(c.Southbound.OPCUA.Servers)
	servers[i] = srv
	c.Southbound.OPCUA.Servers = servers
	if err := c.Validate(); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "the imported points do not fit the server", Fields: fieldErrors(err)})
		return
	}
	restart, err := s.b.ApplyConfig(r.Context(), c)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "config refused", Fields: fieldErrors(err)})
		return
	}
	s.log.Info("web: OPC UA points imported", "server", srv.Name, "points", len(good), "bad_rows", len(bad), "address", clientAddr(r))
	answer["applied"] = true
	answer["restart"] = nonNil(restart)
	writeJSON(w, http.StatusOK, answer)
}

// opcuaCertificate describes the gateway's application certificate.
func (s *Server) opcuaCertificate(w http.ResponseWriter, r *http.Request) {
	ob, ok := s.opcuaBackend(w)
	if !ok {
		return
	}
	c, _, err := ob.OPCUAClientCertificate()
	if err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// opcuaCertificateDER downloads the gateway's application certificate, to
// put in a server's trust list.
func (s *Server) opcuaCertificateDER(w http.ResponseWriter, r *http.Request) {
	ob, ok := s.opcuaBackend(w)
	if !ok {
		return
	}
	_, der, err := ob.OPCUAClientCertificate()
	if err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/pkix-cert")
	w.Header().Set("Content-Disposition", `attachment; filename="fieldgate-opcua.der"`)
	w.Write(der)
}
