package web

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/fieldgate/fieldgate/southbound/modbus"
)

// postCSV sends a tag file as the browser's upload does.
func (c *client) postCSV(path, body string) (int, map[string]any) {
	c.h.t.Helper()
	req, _ := http.NewRequest("POST", c.h.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "text/csv")
	req.Header.Set("X-CSRF-Token", c.csrf)
	resp, err := c.c.Do(req)
	if err != nil {
		c.h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &m); err != nil {
		c.h.t.Fatalf("POST %s: %d %q", path, resp.StatusCode, raw)
	}
	return resp.StatusCode, m
}

// TestTagImportExport: the import (200 points, two bad rows named
// by line, the rest applied), a dry run that applies nothing, the export
// that imports back, and the template to fill in.
func TestTagImportExport(t *testing.T) {
	b := newFakeBackend()
	b.cfg.Southbound.Modbus.Devices = []modbus.Device{{Name: "plc", TCP: &modbus.TCP{Address: "10.0.0.5:502"},
		Points: []modbus.Point{{Name: "old", Register: modbus.RegHolding, Type: modbus.TypeInt16}}}}
	h := start(t, testConfig(), b)
	c := h.setUp()

	var csv strings.Builder
	csv.WriteString("name,address,data_type,scale,unit\n")
	for i := 0; i < 200; i++ {
		switch i {
		case 10:
			csv.WriteString("bad,00011,FLOAT32,,\n") // line 12: a float on a coil
		case 150:
			csv.WriteString(",40999,INT16,,\n") // line 152: no name
		default:
			fmt.Fprintf(&csv, "p%d,%d,INT16,\"0,1\",°C\n", i, 40001+i)
		}
	}
	code, body := c.postCSV("/api/v1/southbound/devices/plc/tags?dry_run=1", csv.String())
	if code != 200 || body["applied"] != false || body["points"] != 198.0 {
		t.Fatalf("dry run: %d %v", code, body)
	}
	if n := len(b.Config().Southbound.Modbus.Devices[0].Points); n != 1 {
		t.Fatalf("the dry run applied: %d points", n)
	}
	errs := body["errors"].([]any)
	if len(errs) != 2 || errs[0].(map[string]any)["line"] != 12.0 || errs[1].(map[string]any)["line"] != 152.0 {
		t.Fatalf("row errors: %v", errs)
	}

	code, body = c.postCSV("/api/v1/southbound/devices/plc/tags", csv.String())
	if code != 200 || body["applied"] != true {
		t.Fatalf("import: %d %v", code, body)
	}
	pts := b.Config().Southbound.Modbus.Devices[0].Points
	if len(pts) != 198 || pts[0].Name != "p0" || pts[0].Scale != 0.1 {
		t.Fatalf("applied %d points, first %+v", len(pts), pts[0])
	}

	code, body = c.postCSV("/api/v1/southbound/devices/plc/tags?mode=merge", "name,address,data_type\nextra,30001,UINT16\np0,40001,UINT16\n")
	if code != 200 || body["applied"] != true || len(b.Config().Southbound.Modbus.Devices[0].Points) != 199 {
		t.Fatalf("merge: %d %v", code, body)
	}

	code, got, hdr := c.do("GET", "/api/v1/southbound/devices/plc/tags.csv", nil)
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/csv") {
		t.Fatalf("export: %d %v", code, hdr)
	}
	res, err := modbus.ImportTags(strings.NewReader(got["raw"].(string)))
	if err != nil || len(res.Points) != 199 || len(res.Errors) != 0 {
		t.Fatalf("export does not import back: %v, %d points, %v", err, len(res.Points), res.Errors)
	}

	code, got, _ = c.do("GET", "/api/v1/southbound/tags-template.csv", nil)
	if code != 200 || !strings.HasPrefix(got["raw"].(string), "name,address,data_type") {
		t.Fatalf("template: %d %v", code, got)
	}

	code, body = c.postCSV("/api/v1/southbound/devices/plc/tags", "colour\nred\n")
	if code != 400 || !strings.Contains(fmt.Sprint(body), `unknown column`) {
		t.Fatalf("a file that is not a tag list: %d %v", code, body)
	}
	if n := len(b.Config().Southbound.Modbus.Devices[0].Points); n != 199 {
		t.Fatalf("a refused file changed the points: %d", n)
	}
	if code, _ := c.postCSV("/api/v1/southbound/devices/ghost/tags", csv.String()); code != 404 {
		t.Fatalf("unknown device: %d", code)
	}
}

// TestDeviceTemplates: list the built-in templates, create a device from
// one, save a device as a template and create another from it.
func TestDeviceTemplates(t *testing.T) {
	b := newFakeBackend()
	h := start(t, testConfig(), b)
	c := h.setUp()
	code, body, _ := c.do("GET", "/api/v1/southbound/templates", nil)
	if code != 200 || len(body["templates"].([]any)) < 2 {
		t.Fatalf("templates: %d %v", code, body)
	}
	code, body, _ = c.do("POST", "/api/v1/southbound/templates/eastron-sdm120/devices", map[string]any{"name": "meter-1", "port": "/dev/ttyUSB0", "unit_id": 3})
	if code != 200 {
		t.Fatalf("device from template: %d %v", code, body)
	}
	d := b.Config().Southbound.Modbus.Devices[0]
	if d.Name != "meter-1" || d.RTU == nil || d.RTU.Baud != 2400 || d.UnitID != 3 || len(d.Points) != 10 {
		t.Fatalf("device = %+v", d)
	}
	code, body, _ = c.do("POST", "/api/v1/southbound/templates", map[string]any{"name": "my-meter", "description": "SDM120 at our sites", "device": "meter-1"})
	if code != 200 {
		t.Fatalf("save template: %d %v", code, body)
	}
	code, body, _ = c.do("POST", "/api/v1/southbound/templates/my-meter/devices", map[string]any{"name": "meter-2", "port": "/dev/ttyUSB0", "unit_id": 4})
	if code != 200 || len(b.Config().Southbound.Modbus.Devices) != 2 {
		t.Fatalf("device from a saved template: %d %v", code, body)
	}
	code, body, _ = c.do("POST", "/api/v1/southbound/templates/my-meter/devices", map[string]any{"name": "meter-2", "port": "/dev/ttyUSB0", "unit_id": 5})
	if code != 400 || !strings.Contains(fmt.Sprint(body), "already the name") {
		t.Fatalf("a duplicate device name: %d %v", code, body)
	}
	if code, _, _ := c.do("DELETE", "/api/v1/southbound/templates/eastron-sdm120", nil); code != 404 {
		t.Fatalf("deleting a built-in template: %d", code)
	}
	if code, _, _ := c.do("DELETE", "/api/v1/southbound/templates/my-meter", nil); code != 200 || len(b.Config().Southbound.Modbus.Templates) != 0 {
		t.Fatalf("delete: %d", code)
	}
}
