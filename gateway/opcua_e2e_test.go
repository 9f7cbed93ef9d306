package gateway_test

// End-to-end tests of the OPC UA southbound through the real binary: a
// node-opcua server (internal/opcuatest) as the peer, mosquitto clients on
// the gateway's broker, and the setup page in headless Chromium
// (web/e2e/opcua.mjs).

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/fieldgate/fieldgate/internal/opcuatest"
)

// trustServer puts the server's certificate in the gateway's trust list
// the way docs/southbound.md says to do it by hand: its DER file copied
// into data_dir/opcua/trusted/.
func trustServer(t *testing.T, dataDir string, der []byte) {
	t.Helper()
	dir := filepath.Join(dataDir, "opcua", "trusted")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(der)
	if err := os.WriteFile(filepath.Join(dir, strings.ToUpper(hex.EncodeToString(sum[:]))+".der"), der, 0o640); err != nil {
		t.Fatal(err)
	}
}

// opcuaConfig is a gateway config with one OPC UA server named press
// (Basic256Sha256 SignAndEncrypt, user gateway) and the MQTT users writer
// and reader (passwords "writer pw", "reader pw"), with an ACL that denies
// reader the set topics and allows the rest; anonymous clients keep the
// default anonymous_deny_publish (no southbound writes).
func opcuaConfig(g *gateway, endpoint, points string) string {
	w, _ := bcrypt.GenerateFromPassword([]byte("writer pw"), bcrypt.MinCost)
	r, _ := bcrypt.GenerateFromPassword([]byte("reader pw"), bcrypt.MinCost)
	broker := fmt.Sprintf(`auth:
  users: [{username: writer, password_hash: %q}, {username: reader, password_hash: %q}]
acl:
  - {username: reader, topic: "southbound/+/+/set", action: publish, permission: deny}
  - {topic: "#", action: all, permission: allow}
`, w, r)
	return gatewayConfig(g.dataDir, g.port, broker) + fmt.Sprintf(`southbound:
  opcua:
    servers:
      - name: press
        endpoint: %s
        security: {policy: Basic256Sha256, mode: SignAndEncrypt}
        auth: {username: gateway, password: "s3cret"}
        timeout: 2s
        points:
%s`, endpoint, points)
}

// TestE2EOPCUA: a configured server's values arrive on MQTT in the
// issue's payload shape with a retained online status; the broker decides
// who may write, as for Modbus: an anonymous set command is refused
// (anonymous_deny_publish) and so is one of a user an ACL rule denies,
// neither reaches the server; an allowed user's is written and answered on
// set/result (and one out of range refused by the server); the server killed: status offline and the values stale;
// restarted: online again and the values fresh.
func TestE2EOPCUA(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	srv := opcuatest.Start(t, opcuatest.Options{
		Security:              []string{opcuatest.SecurityBasic256Sha256SignAndEncrypt},
		NoAnonymous:           true,
		Users:                 map[string]string{"gateway": "s3cret"},
		AutoAcceptClientCerts: true,
	})
	points := fmt.Sprintf(`          - {name: temp, node: %q, unit: "°C"}
          - {name: counter, node: %q}
          - {name: sp, node: %q, writable: true}
          - {name: ints, node: %q}
`, opcuatest.NodePress4Temp, opcuatest.NodeCounter, opcuatest.NodeSetpoint, opcuatest.NodeInt32Array)
	g := startGatewayWith(t, "", func(g *gateway) string {
		trustServer(t, g.dataDir, srv.CertDER)
		return opcuaConfig(g, srv.Endpoint(), points)
	})
	s := g.sub(t, append([]string{"-t", "southbound/press/#", "-v"}, topicFormat...)...)
	const wait = 60 * time.Second // node-opcua and the session set-up on 2 busy cores

	at, _ := nextMsg(t, s, 0, "southbound/press/status", wait, status("online"))
	_, temp := nextMsg(t, s, 0, "southbound/press/temp", wait, reading(81.25, "good", "°C"))
	if ts, _ := temp["ts"].(float64); time.UnixMilli(int64(ts)).Before(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("temp ts %v is not a source timestamp in ms", temp["ts"])
	}
	_, ints := nextMsg(t, s, 0, "southbound/press/ints", wait, nil)
	if fmt.Sprint(ints["v"]) != "[1 -2 3 2.147483647e+09]" || ints["q"] != "good" {
		t.Errorf("ints = %v, want the Int32 array [1,-2,3,2147483647], good", ints)
	}
	_, c1 := nextMsg(t, s, at, "southbound/press/counter", wait, anyGood)
	at, c2 := nextMsg(t, s, at, "southbound/press/counter", wait, func(m map[string]any) bool { return m["q"] == "good" && m["v"] != c1["v"] })
	t.Logf("counter %v then %v", c1["v"], c2["v"])

	// An anonymous client may not write to a field device: the broker
	// refuses the command (and drops the client), so no result comes and
	// the value stays.
	if out, err := g.pub(nil, "-q", "1", "-t", "southbound/press/sp/set", "-m", `{"id":"anon-1","v":55}`); err == nil {
		t.Errorf("the broker took an anonymous set command (%s): want the publish refused", out)
	}
	// An ACL rule denies reader the set topics: its command is dropped too.
	_, _ = g.pub(nil, "-q", "1", "-u", "reader", "-P", "reader pw", "-t", "southbound/press/sp/set", "-m", `{"id":"r-1","v":66}`)
	g.mustPub("-q", "1", "-u", "writer", "-P", "writer pw", "-t", "southbound/press/sp/set", "-m", `{"id":"w-1","v":42.5}`)
	at, res := nextMsg(t, s, at, "southbound/press/sp/set/result", wait, nil)
	if res["id"] != "w-1" || res["ok"] != true {
		t.Fatalf("first result %v: want the writer's w-1 ok (neither the anonymous anon-1 nor reader's r-1 may arrive)", res)
	}
	nextMsg(t, s, at, "southbound/press/sp", wait, reading(42.5, "good", ""))
	// Refused by the server: out of the EURange 0..100.
	g.mustPub("-q", "1", "-u", "writer", "-P", "writer pw", "-t", "southbound/press/sp/set", "-m", `{"id":"w-2","v":1000}`)
	at, res = nextMsg(t, s, at, "southbound/press/sp/set/result", wait, nil)
	if res["id"] != "w-2" || res["ok"] != false || !strings.Contains(fmt.Sprint(res["err"]), "OutOfRange") {
		t.Errorf("out of range: %v", res)
	}
	for _, m := range topicMessages(s) {
		if strings.Contains(m.payload, "anon-1") || strings.Contains(m.payload, "r-1") {
			t.Errorf("a denied command got through: %s %s", m.topic, m.payload)
		}
	}

	// The server dies: offline, and the values go stale.
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	at, off := nextMsg(t, s, at, "southbound/press/status", wait, status("offline"))
	t.Logf("offline: %v", off)
	nextMsg(t, s, at, "southbound/press/counter", wait, func(m map[string]any) bool { return m["q"] == "stale" })
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	at, _ = nextMsg(t, s, at, "southbound/press/status", 2*wait, status("online"))
	_, fresh := nextMsg(t, s, at, "southbound/press/counter", wait, anyGood)
	// The restarted server counts from 0 again: fresh values, not the old.
	if fresh["v"].(float64) >= c2["v"].(float64) {
		t.Errorf("counter after the restart %v, before %v: want the restarted server's fresh count", fresh["v"], c2["v"])
	}
}

// anyGood matches a reading of quality good.
func anyGood(m map[string]any) bool { _, ok := m["ts"].(float64); return ok && m["q"] == "good" }

// TestE2EOPCUAPage: in headless Chromium at 390×844 (web/e2e/opcua.mjs) a
// technician adds the server on the page, sees it refused for its
// untrusted certificate with the thumbprint shown, trusts it, browses the
// address space from Objects, adds a variable as a point with one click
// and sees its live value; the page has no sideways scroll at 360 px.
// The server trusts the gateway's certificate as an administrator would:
// the file the gateway made on first use in data_dir/opcua/. Screenshots
// go to docs/screenshots/ when FIELDGATE_SCREENSHOTS is set.
func TestE2EOPCUAPage(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	node, e2eDir := requireBrowser(t)
	opcuatest.Need(t)
	port := freePort(t)
	endpoint := "opc.tcp://127.0.0.1:" + strconv.Itoa(port)
	webAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	g := startGatewayWith(t, "", func(g *gateway) string {
		return fmt.Sprintf(`version: 1
gateway: {data_dir: %q}
web: {enabled: true, address: %q, mdns: false}
mqttsn: {enabled: false}
coap: {enabled: false}
broker:
  listeners:
    tcp: {enabled: true, address: "127.0.0.1:%d"}
    websocket: {enabled: false}
`, g.dataDir, webAddr, g.port)
	})
	// The page adds the server; the gateway makes its certificate when the
	// OPC UA part first starts. The script says when, and the test starts
	// the server trusting that certificate.
	shots := screenshotDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(e2eDir, "opcua.mjs"), "http://"+webAddr, shots, endpoint)
	setupCode, _ := os.ReadFile(filepath.Join(g.dataDir, "setup-code"))
	cmd.Env = append(os.Environ(), "FIELDGATE_SETUP_CODE="+strings.TrimSpace(string(setupCode)))
	cmd.Dir = e2eDir
	var srv *opcuatest.Server
	runPageScript(t, cmd, map[string]func() string{
		"@@START_SERVER": func() string {
			cert := filepath.Join(g.dataDir, "opcua", "cert.der")
			if !waitFor(30*time.Second, func() bool { _, err := os.Stat(cert); return err == nil }) {
				t.Errorf("the gateway made no certificate at %s", cert)
			}
			srv = opcuatest.Start(t, opcuatest.Options{
				Port:               port,
				Security:           []string{opcuatest.SecurityBasic256Sha256SignAndEncrypt},
				TrustedClientCerts: []string{cert},
			})
			return "started"
		},
	})
	if srv == nil {
		t.Fatal("the script never asked for the server")
	}
	trusted, _ := os.ReadDir(filepath.Join(g.dataDir, "opcua", "trusted"))
	if len(trusted) != 1 {
		t.Errorf("trust list after the page's trust: %d files, want 1", len(trusted))
	}
	data, _ := os.ReadFile(g.cfgPath)
	if !strings.Contains(string(data), opcuatest.NodePress4Temp) {
		t.Errorf("the config file lacks the point added on the page:\n%s", data)
	}
}
