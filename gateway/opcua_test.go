package gateway

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
	"github.com/fieldgate/fieldgate/southbound/opcua"
)

// TestOPCUAReloadLive: the OPC UA part runs only while servers are
// configured; adding the first server on the page starts it live (no
// restart pending) with its certificate made under data_dir/opcua/, its
// server listed on /api/v1/opcua/servers and counted on /metrics with a
// server label; removing the last stops it.
func TestOPCUAReloadLive(t *testing.T) {
	base, cfgPath, _ := pageGateway(t)
	dataDir := filepath.Join(filepath.Dir(cfgPath), "data")
	admin := setUpPage(t, base, dataDir)

	if parts := partNames(t, admin); slices.Contains(parts, "opcua") {
		t.Fatalf("the opcua part runs with no server: %v", parts)
	}

	// A port where nothing listens: the server stays offline.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "opc.tcp://" + ln.Addr().String()
	ln.Close()
	section := map[string]any{"servers": []any{map[string]any{
		"name": "press", "endpoint": endpoint, "timeout": "1s",
		"security": map[string]any{"policy": "Basic256Sha256", "mode": "SignAndEncrypt"},
		"points":   []any{map[string]any{"name": "temp", "node": "ns=1;s=Temp"}},
	}}}
	code, body, err := admin.do("PUT", "/api/v1/config/southbound.opcua", section)
	if err != nil || code != 200 {
		t.Fatalf("add a server: %d %v %v", code, body, err)
	}
	if r, _ := body["restart"].([]any); len(r) != 0 {
		t.Fatalf("adding a server waits for a restart: %v", r)
	}
	if !testwait.Until(10*time.Second, func() bool { return slices.Contains(partNames(t, admin), "opcua") }) {
		t.Fatalf("the opcua part did not start: %v", partNames(t, admin))
	}
	if !testwait.Until(20*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(dataDir, "opcua", "cert.der"))
		return err == nil
	}) {
		t.Error("no application certificate in data_dir/opcua/")
	}
	code, body, err = admin.do("GET", "/api/v1/opcua/servers", nil)
	if err != nil || code != 200 {
		t.Fatalf("servers: %d %v %v", code, body, err)
	}
	srv := body["servers"].([]any)[0].(map[string]any)
	if srv["name"] != "press" || srv["state"] == "online" {
		t.Fatalf("server %v: want press, not online", srv)
	}
	code, metrics := pageGet(t, admin, "/metrics")
	if code != 200 || !strings.Contains(metrics, `fieldgate_opcua_connects{server="press"}`) || !strings.Contains(metrics, `fieldgate_part_up{part="opcua"} 1`) {
		t.Errorf("metrics lack the server's counters or the part:\n%s", grepLines(metrics, "opcua"))
	}

	code, body, err = admin.do("PUT", "/api/v1/config/southbound.opcua", map[string]any{"servers": []any{}})
	if err != nil || code != 200 {
		t.Fatalf("remove the server: %d %v %v", code, body, err)
	}
	code, body, _ = admin.do("GET", "/api/v1/opcua/servers", nil)
	if code != 200 || len(body["servers"].([]any)) != 0 {
		t.Fatalf("servers after removal: %d %v", code, body)
	}
	if _, metrics := pageGet(t, admin, "/metrics"); strings.Contains(metrics, `fieldgate_part_up{part="opcua"} 1`) {
		t.Errorf("the opcua part still runs:\n%s", grepLines(metrics, "opcua"))
	}
}

// setUpPage does the first-boot setup and returns the admin's session.
func setUpPage(t *testing.T, base, dataDir string) *pageClient {
	t.Helper()
	code, err := os.ReadFile(filepath.Join(dataDir, "setup-code"))
	if err != nil {
		t.Fatal(err)
	}
	c := newPageClient(base)
	status, body, err := c.do("POST", "/api/v1/setup", map[string]string{"password": "correct horse battery", "gateway_id": "ua-test", "setup_code": strings.TrimSpace(string(code))})
	if err != nil || status != 200 {
		t.Fatalf("setup: %d %v %v", status, body, err)
	}
	c.csrf, _ = body["csrf"].(string)
	return c
}

// partNames are the running parts, from the status.
func partNames(t *testing.T, c *pageClient) []string {
	t.Helper()
	code, body, err := c.do("GET", "/api/v1/status", nil)
	if err != nil || code != 200 {
		t.Fatalf("status: %d %v", code, err)
	}
	var out []string
	for _, p := range body["parts"].([]any) {
		if p := p.(map[string]any); p["state"] == "running" {
			out = append(out, p["name"].(string))
		}
	}
	return out
}

// pageGet fetches path with the admin's session and returns the status
// and the body.
func pageGet(t *testing.T, c *pageClient, path string) (int, string) {
	t.Helper()
	resp, err := c.c.Get(c.base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// grepLines are the lines of s holding sub.
func grepLines(s, sub string) string {
	var out []string
	for l := range strings.Lines(s) {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// TestOPCUABound: the supervisor's bound covers three polls and four
// request timeouts of the slowest server, and is never under 30 s.
func TestOPCUABound(t *testing.T) {
	for _, c := range []struct {
		cfg  opcua.Config
		want time.Duration
	}{
		{opcua.Config{}, 30 * time.Second},
		{opcua.Config{Servers: []opcua.Server{{Name: "a"}}}, 30 * time.Second},
		{opcua.Config{Servers: []opcua.Server{{Name: "a"}, {Name: "b", Interval: time.Minute, Timeout: 20 * time.Second}}}, 3*time.Minute + 80*time.Second},
	} {
		if got := opcuaBound(c.cfg); got != c.want {
			t.Errorf("opcuaBound(%+v) = %v, want %v", c.cfg, got, c.want)
		}
	}
}
