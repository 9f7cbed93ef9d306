package web

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/southbound/modbus"
)

// The tag table API: a Modbus device's points as CSV (export, a template
// to fill in, an import with a dry run that reports every bad row by line
// and column), and device templates (built-in and saved). It works on the
// running config through Backend.Config and ApplyConfig like every other
// change, so the import is validated and saved the same way.

// maxTagUpload bounds an uploaded tag file (modbus.ImportTags refuses more
// than 1 MiB itself; this leaves room for a multipart envelope).
const maxTagUpload = 2 << 20

// tagRoutes are the tag table's routes, added to the API's.
func (s *Server) tagRoutes() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"GET /api/v1/southbound/tags-template.csv":             s.tagTemplate,
		"GET /api/v1/southbound/devices/{device}/tags.csv":     s.exportTags,
		"POST /api/v1/southbound/devices/{device}/tags":        s.importTags,
		"GET /api/v1/southbound/templates":                     s.listTemplates,
		"POST /api/v1/southbound/templates":                    s.saveTemplate,
		"POST /api/v1/southbound/templates/{template}/devices": s.deviceFromTemplate,
		"DELETE /api/v1/southbound/templates/{template}":       s.deleteTemplate,
	}
}

func (s *Server) tagTemplate(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="tags-template.csv"`)
	fmt.Fprint(w, modbus.TagTemplateCSV)
}

// modbusDevice returns the index of the named device in c, or -1.
func modbusDevice(c config.Config, name string) int {
	return slices.IndexFunc(c.Southbound.Modbus.Devices, func(d modbus.Device) bool { return d.Name == name })
}

func (s *Server) exportTags(w http.ResponseWriter, r *http.Request) {
	c := s.b.Config()
	i := modbusDevice(c, r.PathValue("device"))
	if i < 0 {
		writeError(w, http.StatusNotFound, "no such Modbus device")
		return
	}
	d := c.Southbound.Modbus.Devices[i]
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-tags.csv"`, d.Name))
	if err := modbus.ExportTags(w, modbus.WithDefaults(d)); err != nil {
		s.log.Warn("web: export tags", "device", d.Name, "err", err)
	}
}

// importTags reads a tag CSV (the request body, text/csv) for a device.
// ?mode=replace (default) replaces the device's points with the file's,
// ?mode=merge replaces points of the same name and adds the others;
// ?dry_run=1 only reports. The answer lists every bad row by line and
// column; the good rows are applied (unless dry_run), the bad ones are not.
func (s *Server) importTags(w http.ResponseWriter, r *http.Request) {
	mode, ok := importMode(w, r)
	if !ok {
		return
	}
	c := s.b.Config()
	i := modbusDevice(c, r.PathValue("device"))
	if i < 0 {
		writeError(w, http.StatusNotFound, "no such Modbus device")
		return
	}
	res, err := modbus.ImportTags(http.MaxBytesReader(w, r.Body, maxTagUpload))
	if err != nil {
		writeFields(w, "the file was not imported", FieldError{Field: "file", Error: err.Error()})
		return
	}
	dev := c.Southbound.Modbus.Devices[i]
	good, rowErrs := modbus.CheckTags(c.Southbound.Modbus, dev, res)
	points := good
	if mode == "merge" {
		points = mergePoints(dev.Points, good, func(p modbus.Point) string { return p.Name })
	}
	if rowErrs == nil {
		rowErrs = []modbus.RowError{}
	}
	answer := map[string]any{"rows": len(res.Points) + countLines(rowErrs, res), "points": len(good), "errors": rowErrs, "mode": mode}
	if r.URL.Query().Get("dry_run") != "" || len(good) == 0 {
		answer["applied"] = false
		writeJSON(w, http.StatusOK, answer)
		return
	}
	devs := slices.Clone(c.Southbound.Modbus.Devices)
	dev.Points = points
	devs[i] = dev
	c.Southbound.Modbus.Devices = devs
	if err := c.Validate(); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "the imported points do not fit the device", Fields: configFieldErrors(c, err)})
		return
	}
	restart, err := s.b.ApplyConfig(r.Context(), c)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "config refused", Fields: configFieldErrors(c, err)})
		return
	}
	s.log.Info("web: tags imported", "device", dev.Name, "points", len(good), "bad_rows", len(rowErrs), "address", clientAddr(r))
	answer["applied"] = true
	answer["restart"] = nonNil(restart)
	writeJSON(w, http.StatusOK, answer)
}

// countLines is how many rows had errors but no point.
func countLines(errs []modbus.RowError, res modbus.ImportResult) int {
	seen := map[int]bool{}
	for _, l := range res.Lines {
		seen[l] = true
	}
	n := 0
	for _, e := range errs {
		if !seen[e.Line] {
			seen[e.Line] = true
			n++
		}
	}
	return n
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// templateInfo is a template as listed: its points are counted, not sent.
type templateInfo struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Source      string `json:"source,omitempty"`
	BuiltIn     bool   `json:"built_in"`
	Serial      bool   `json:"serial"`
	TCPPort     int    `json:"tcp_port,omitempty"`
	UnitID      int    `json:"unit_id"`
	Points      int    `json:"points"`
}

// templates returns the built-in templates, then the saved ones.
func (s *Server) templates(c config.Config) ([]modbus.Template, int, error) {
	builtin, err := modbus.BuiltinTemplates()
	if err != nil {
		return nil, 0, err
	}
	return append(builtin, c.Southbound.Modbus.Templates...), len(builtin), nil
}

func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) {
	all, nb, err := s.templates(s.b.Config())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := make([]templateInfo, len(all))
	for i, t := range all {
		out[i] = templateInfo{Name: t.Name, Description: t.Description, Source: t.Source, BuiltIn: i < nb,
			Serial: t.RTU != nil, TCPPort: t.TCPPort, UnitID: t.UnitID, Points: len(t.Points)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"templates": out})
}

type saveTemplateRequest struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Device      string `json:"device"`
}

// saveTemplate saves a device's point list as a named template.
func (s *Server) saveTemplate(w http.ResponseWriter, r *http.Request) {
	var req saveTemplateRequest
	if !readJSON(w, r, &req) {
		return
	}
	c := s.b.Config()
	i := modbusDevice(c, req.Device)
	if i < 0 {
		writeFields(w, "invalid template", FieldError{Field: "device", Error: "no such Modbus device"})
		return
	}
	t := modbus.TemplateFrom(req.Name, c.Southbound.Modbus.Devices[i])
	t.Description = req.Description
	c.Southbound.Modbus.Templates = append(slices.Clone(c.Southbound.Modbus.Templates), t)
	s.applyConfig(w, r, c)
}

func (s *Server) deleteTemplate(w http.ResponseWriter, r *http.Request) {
	c := s.b.Config()
	ts := slices.Clone(c.Southbound.Modbus.Templates)
	i := slices.IndexFunc(ts, func(t modbus.Template) bool { return t.Name == r.PathValue("template") })
	if i < 0 {
		writeError(w, http.StatusNotFound, "no such saved template (built-in templates cannot be deleted)")
		return
	}
	c.Southbound.Modbus.Templates = slices.Delete(ts, i, i+1)
	s.applyConfig(w, r, c)
}

type fromTemplateRequest struct {
	Name string `json:"name"`
	// Address is the TCP device's host or host:port; Port the serial port
	// of an RTU device. UnitID is optional (the template's otherwise).
	Address string `json:"address"`
	Port    string `json:"port"`
	UnitID  *int   `json:"unit_id"`
}

// deviceFromTemplate adds a device made from a template.
func (s *Server) deviceFromTemplate(w http.ResponseWriter, r *http.Request) {
	var req fromTemplateRequest
	if !readJSON(w, r, &req) {
		return
	}
	c := s.b.Config()
	all, _, err := s.templates(c)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	j := slices.IndexFunc(all, func(t modbus.Template) bool { return t.Name == r.PathValue("template") })
	if j < 0 {
		writeError(w, http.StatusNotFound, "no such template")
		return
	}
	at := modbus.Endpoint{Host: strings.TrimSpace(req.Address), Port: strings.TrimSpace(req.Port), UnitID: -1}
	if req.UnitID != nil {
		at.UnitID = *req.UnitID
	}
	d, err := all[j].NewDevice(req.Name, at)
	if err != nil {
		writeFields(w, "invalid device", FieldError{Field: "address", Error: err.Error()})
		return
	}
	c.Southbound.Modbus.Devices = append(slices.Clone(c.Southbound.Modbus.Devices), d)
	s.applyConfig(w, r, c)
}

// importMode reads an import's ?mode=replace|merge (default replace); a
// wrong one is answered 400 and ok is false.
func importMode(w http.ResponseWriter, r *http.Request) (mode string, ok bool) {
	mode = r.URL.Query().Get("mode")
	if mode == "" {
		mode = "replace"
	}
	if mode != "replace" && mode != "merge" {
		writeFields(w, "invalid import", FieldError{Field: "mode", Error: "must be replace or merge"})
		return "", false
	}
	return mode, true
}

// mergePoints is have with every point of add replacing the one of the
// same name, or appended after them in add's order.
func mergePoints[P any](have, add []P, name func(P) string) []P {
	out := slices.Clone(have)
	for _, p := range add {
		if j := slices.IndexFunc(out, func(q P) bool { return name(q) == name(p) }); j >= 0 {
			out[j] = p
		} else {
			out = append(out, p)
		}
	}
	return out
}
