package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/fieldgate/fieldgate/southbound/opcua"
)

// uaFake is the fake backend with an OPC UA side: one server whose
// certificate waits to be trusted, a small address space, and the writes
// and trusts it was asked for.
type uaFake struct {
	*fakeBackend
	mu      sync.Mutex
	thumb   string
	trusted []string
	writes  []string
}

const uaThumb = "0123456789ABCDEF0123456789ABCDEF01234567"

func newUAFake() *uaFake {
	b := newFakeBackend()
	b.cfg.Southbound.OPCUA.Servers = []opcua.Server{{Name: "press-4", Endpoint: "opc.tcp://127.0.0.1:4840",
		Security: opcua.Security{Policy: "Basic256Sha256", Mode: "SignAndEncrypt"},
		Points:   []opcua.Point{{Name: "temp", Node: "ns=2;s=Press4.Temp", Unit: "°C"}}}}
	return &uaFake{fakeBackend: b, thumb: uaThumb}
}

func (f *uaFake) OPCUAServers() []OPCUAServerStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := OPCUAServerStatus{Name: "press-4", Endpoint: "opc.tcp://127.0.0.1:4840", State: "untrusted", LastError: "certificate not trusted",
		Certificate: &OPCUACertificate{Thumbprint: f.thumb, Subject: "CN=node-opcua"}, Stats: OPCUAStats{Errors: map[string]uint64{"security": 1}}}
	if len(f.trusted) > 0 {
		st.State, st.LastError, st.Certificate.Trusted = "online", "", true
	}
	return []OPCUAServerStatus{st}
}

func (f *uaFake) OPCUABrowse(_ context.Context, server, node string) ([]OPCUANode, error) {
	switch node {
	case "":
		return []OPCUANode{{NodeID: "ns=2;s=Press4", BrowseName: "2:Press4", Class: "Object", HasChildren: true}}, nil
	case "ns=2;s=Press4":
		return []OPCUANode{
			{NodeID: "ns=2;s=Press4.Temp", BrowseName: "2:Temp", Class: "Variable", Type: "Double", Value: 21.5, Access: "RO"},
			{NodeID: "ns=2;s=Press4.Setpoint", BrowseName: "2:Set point", Class: "Variable", Type: "Double", Value: 70.0, Access: "RW"},
		}, nil
	}
	return nil, fmt.Errorf("browse %s: BadNodeIdUnknown", node)
}

func (f *uaFake) OPCUATrust(_ context.Context, server, thumbprint string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !strings.EqualFold(thumbprint, f.thumb) {
		return errors.New("the server now presents another certificate")
	}
	f.trusted = append(f.trusted, server+" "+thumbprint)
	return nil
}

func (f *uaFake) OPCUAClientCertificate() (OPCUACertificate, []byte, error) {
	return OPCUACertificate{Thumbprint: strings.Repeat("CD", 20), Subject: "CN=fieldgate", Trusted: true}, []byte{0x30, 0x82, 0x01}, nil
}

func (f *uaFake) OPCUAWrite(_ context.Context, server, point string, value any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes = append(f.writes, fmt.Sprintf("%s/%s=%v", server, point, value))
	return nil
}

// startUA runs the server on b (which may lack the OPC UA side).
func startUA(t *testing.T, b Backend, fb *fakeBackend) *harness {
	t.Helper()
	return startOn(t, testConfig(), b, fb, t.TempDir(), Options{})
}

// TestOPCUAServersAndTrust: the servers' state with an untrusted
// certificate; trusting it needs the thumbprint shown (any case, with or
// without colons), a session's CSRF token or an admin token; a read token
// sees the servers but trusts nothing.
func TestOPCUAServersAndTrust(t *testing.T) {
	f := newUAFake()
	h := startUA(t, f, f.fakeBackend)
	c := h.setUp()

	code, body, _ := c.do("GET", "/api/v1/opcua/servers", nil)
	srv := body["servers"].([]any)[0].(map[string]any)
	if code != 200 || srv["state"] != "untrusted" || srv["certificate"].(map[string]any)["thumbprint"] != uaThumb {
		t.Fatalf("servers: %d %v", code, body)
	}

	code, body, _ = c.do("POST", "/api/v1/opcua/servers/press-4/trust", map[string]string{"thumbprint": "not hex"})
	if code != 400 || body["fields"].([]any)[0].(map[string]any)["field"] != "thumbprint" {
		t.Fatalf("bad thumbprint: %d %v", code, body)
	}
	if code, _, _ := c.do("POST", "/api/v1/opcua/servers/nope/trust", map[string]string{"thumbprint": uaThumb}); code != 404 {
		t.Fatalf("unknown server: %d", code)
	}
	other := strings.Repeat("ab", 20)
	if code, body, _ := c.do("POST", "/api/v1/opcua/servers/press-4/trust", map[string]string{"thumbprint": other}); code != 409 {
		t.Fatalf("another certificate: %d %v", code, body)
	}
	noCSRF := *c
	noCSRF.csrf = ""
	if code, _, _ := noCSRF.do("POST", "/api/v1/opcua/servers/press-4/trust", map[string]string{"thumbprint": uaThumb}); code != 403 {
		t.Fatalf("trust without CSRF: %d", code)
	}

	_, tok, _ := c.do("POST", "/api/v1/tokens", map[string]string{"name": "dashboard", "scope": "read"})
	reader := h.client()
	reader.bearer = tok["token"].(string)
	if code, _, _ := reader.do("GET", "/api/v1/opcua/servers", nil); code != 200 {
		t.Fatalf("read token, servers: %d", code)
	}
	if code, _, _ := reader.do("POST", "/api/v1/opcua/servers/press-4/trust", map[string]string{"thumbprint": uaThumb}); code != 403 {
		t.Fatalf("read token, trust: %d", code)
	}
	if code, _, _ := h.client().do("GET", "/api/v1/opcua/servers", nil); code != 401 {
		t.Fatalf("anonymous: %d", code)
	}

	code, body, _ = reader.do("GET", "/api/v1/opcua/certificate", nil)
	if code != 200 || body["thumbprint"] != strings.Repeat("CD", 20) {
		t.Fatalf("the gateway's certificate: %d %v", code, body)
	}
	code, body, hdr := reader.do("GET", "/api/v1/opcua/certificate.der", nil)
	if code != 200 || body["raw"] != "\x30\x82\x01" || hdr.Get("Content-Type") != "application/pkix-cert" {
		t.Fatalf("the gateway's certificate file: %d %q %v", code, body, hdr)
	}

	colons := strings.ToLower(uaThumb[:2] + ":" + uaThumb[2:])
	code, body, _ = c.do("POST", "/api/v1/opcua/servers/press-4/trust", map[string]string{"thumbprint": colons})
	if code != 200 || body["trusted"] != true {
		t.Fatalf("trust: %d %v", code, body)
	}
	f.mu.Lock()
	trusted := f.trusted
	f.mu.Unlock()
	if len(trusted) != 1 || !strings.EqualFold(trusted[0], "press-4 "+uaThumb) {
		t.Fatalf("trusted %v", trusted)
	}
	_, body, _ = c.do("GET", "/api/v1/opcua/servers", nil)
	if s := body["servers"].([]any)[0].(map[string]any); s["state"] != "online" {
		t.Fatalf("after trust: %v", s)
	}
}

// TestOPCUABrowseAddWrite: browsing from Objects and into an object,
// adding a variable as a point in one click (named from its browse name,
// unique, writable as the variable is), and a write.
func TestOPCUABrowseAddWrite(t *testing.T) {
	f := newUAFake()
	h := startUA(t, f, f.fakeBackend)
	c := h.setUp()

	code, body, _ := c.do("GET", "/api/v1/opcua/servers/press-4/browse", nil)
	if code != 200 || body["children"].([]any)[0].(map[string]any)["node_id"] != "ns=2;s=Press4" {
		t.Fatalf("browse Objects: %d %v", code, body)
	}
	code, body, _ = c.do("GET", "/api/v1/opcua/servers/press-4/browse?node=ns%3D2%3Bs%3DPress4", nil)
	kids := body["children"].([]any)
	if code != 200 || len(kids) != 2 || kids[1].(map[string]any)["access"] != "RW" {
		t.Fatalf("browse Press4: %d %v", code, body)
	}
	if code, _, _ := c.do("GET", "/api/v1/opcua/servers/press-4/browse?node=ns%3D9%3Bi%3D1", nil); code != 502 {
		t.Fatalf("browse an unknown node: %d", code)
	}

	add := func(node, browse string, writable bool) map[string]any {
		t.Helper()
		code, body, _ := c.do("POST", "/api/v1/opcua/servers/press-4/points", map[string]any{"node": node, "browse_name": browse, "writable": writable})
		if code != 200 || body["applied"] != true {
			t.Fatalf("add %s: %d %v", node, code, body)
		}
		return body["point"].(map[string]any)
	}
	p := add("ns=2;s=Press4.Setpoint", "2:Set point", true)
	if p["name"] != "Set_point" || p["writable"] != true {
		t.Fatalf("added %v", p)
	}
	if p := add("ns=2;s=Press4.Temp", "2:Temp", false); p["name"] != "Temp" {
		t.Fatalf("added %v", p)
	}
	if p := add("ns=2;s=Press4.Temp", "2:Temp", false); p["name"] != "Temp-2" {
		t.Fatalf("added again: %v", p)
	}
	pts := f.Config().Southbound.OPCUA.Servers[0].Points
	if len(pts) != 4 || pts[1].Node != "ns=2;s=Press4.Setpoint" || !pts[1].Writable {
		t.Fatalf("points %+v", pts)
	}
	code, body, _ = c.do("POST", "/api/v1/opcua/servers/press-4/points", map[string]any{"node": "ns=2;x=bad", "browse_name": "x"})
	if code != 400 || !strings.Contains(fmt.Sprint(body["fields"]), "southbound.opcua.servers[0].points[4].node") {
		t.Fatalf("a bad node: %d %v", code, body)
	}

	if code, body, _ := c.do("POST", "/api/v1/opcua/servers/press-4/points/Set_point/write", map[string]any{"value": 72.5}); code != 200 {
		t.Fatalf("write: %d %v", code, body)
	}
	if f.writes[0] != "press-4/Set_point=72.5" {
		t.Fatalf("writes %v", f.writes)
	}
}

// TestOPCUAPointCSV: the export imports back to the same points; a dry run
// lists the bad rows by line and column and applies nothing; the import
// applies the good rows; merge keeps the others.
func TestOPCUAPointCSV(t *testing.T) {
	f := newUAFake()
	h := startUA(t, f, f.fakeBackend)
	c := h.setUp()

	csv := "name,address,data_type,scale,offset,unit,access,description,deadband,deadband_type,mode,sampling_interval\n" +
		"temp,ns=2;s=Press4.Temp,Double,\"0,1\",,°C,RO,Temperature,0.2,,,\n" +
		"sp,ns=2;s=Press4.Setpoint,,,,,RW,,,,poll,\n" +
		"bad,ns=2;x=oops,,,,,RO,,,,,\n" + // line 4: not a NodeId
		"speed,2:Press4/2:Speed,,,,,maybe,,,,,2s\n" + // line 5: access
		"temp,ns=2;s=Other,,,,,,,,,,\n" + // line 6: a second temp
		"\n" +
		"odd,ns=3;i=1001,Float99,,,,,,,,,\n" // line 8: no such type
	code, body := c.postCSV("/api/v1/opcua/servers/press-4/points.csv?dry_run=1", csv)
	if code != 200 || body["applied"] != false || body["points"] != 2.0 {
		t.Fatalf("dry run: %d %v", code, body)
	}
	var lines []string
	for _, e := range body["errors"].([]any) {
		m := e.(map[string]any)
		lines = append(lines, fmt.Sprintf("%v %v", m["line"], m["column"]))
	}
	if want := []string{"4 address", "5 access", "6 name", "8 data_type"}; !reflect.DeepEqual(lines, want) {
		t.Fatalf("row errors %v, want %v (%v)", lines, want, body["errors"])
	}
	if n := len(f.Config().Southbound.OPCUA.Servers[0].Points); n != 1 {
		t.Fatalf("the dry run applied: %d points", n)
	}

	code, body = c.postCSV("/api/v1/opcua/servers/press-4/points.csv", csv)
	if code != 200 || body["applied"] != true {
		t.Fatalf("import: %d %v", code, body)
	}
	pts := f.Config().Southbound.OPCUA.Servers[0].Points
	if len(pts) != 2 || pts[0].Scale != 0.1 || pts[0].Unit != "°C" || !pts[1].Writable || pts[1].Mode != "poll" {
		t.Fatalf("imported %+v", pts)
	}

	code, body = c.postCSV("/api/v1/opcua/servers/press-4/points.csv?mode=merge", "name;address\nspeed;2:Press4/2:Speed\n")
	if code != 200 || len(f.Config().Southbound.OPCUA.Servers[0].Points) != 3 {
		t.Fatalf("merge: %d %v", code, body)
	}
	before := f.Config().Southbound.OPCUA.Servers[0].Points

	code, body, _ = c.do("GET", "/api/v1/opcua/servers/press-4/points.csv", nil)
	if code != 200 {
		t.Fatalf("export: %d", code)
	}
	if code, body := c.postCSV("/api/v1/opcua/servers/press-4/points.csv", body["raw"].(string)); code != 200 || body["applied"] != true {
		t.Fatalf("re-import: %d %v", code, body)
	}
	if after := f.Config().Southbound.OPCUA.Servers[0].Points; !reflect.DeepEqual(after, before) {
		t.Fatalf("export and import changed the points:\n%+v\n%+v", after, before)
	}

	code, body, _ = c.do("GET", "/api/v1/opcua/points-template.csv", nil)
	if code != 200 {
		t.Fatalf("template: %d", code)
	}
	if code, body := c.postCSV("/api/v1/opcua/servers/press-4/points.csv?dry_run=1", body["raw"].(string)); code != 200 || len(body["errors"].([]any)) != 0 {
		t.Fatalf("the template does not import cleanly: %d %v", code, body)
	}
	if code, body := c.postCSV("/api/v1/opcua/servers/press-4/points.csv", "name,register\n"); code != 400 {
		t.Fatalf("unknown column: %d %v", code, body)
	}
}

// TestOPCUAWithoutBackend: a backend without the OPC UA side answers 404
// on the routes that need it; a server missing from the config is 404.
func TestOPCUAWithoutBackend(t *testing.T) {
	h := start(t, testConfig(), nil)
	c := h.setUp()
	if code, _, _ := c.do("GET", "/api/v1/opcua/servers", nil); code != http.StatusNotFound {
		t.Fatalf("servers: %d", code)
	}
	if code, _, _ := c.do("GET", "/api/v1/opcua/servers/x/points.csv", nil); code != http.StatusNotFound {
		t.Fatalf("export of an unknown server: %d", code)
	}
}

// TestOPCUAPointName: browse names become topic levels.
func TestOPCUAPointName(t *testing.T) {
	for in, want := range map[string]string{
		"2:Temp": "Temp", "Temp": "Temp", "3:Set point (°C)": "Set_point_C", "0:": "point", "x:y": "x_y",
		"ns=2;s=A.B": "ns_2_s_A.B", strings.Repeat("a", 100): strings.Repeat("a", 60),
	} {
		if got := pointName(in); got != want {
			t.Errorf("pointName(%q) = %q, want %q", in, got, want)
		}
	}
}
