package gateway_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/peertest"
	smodbus "github.com/simonvetter/modbus"
)

// End-to-end test of the setup page against the real binary: a technician's
// session in headless Chromium (gateway/web/e2e/real.mjs) sets the first
// password, adds a Modbus device pointing at a simulator run here, reads
// and writes it, watches its values live, points the uplink at a second
// fieldgate, and gets locked out by wrong passwords; on a phone-sized
// screen too.

// holdingBank is a Modbus slave's holding registers (simonvetter/modbus
// server handler); other tables answer "illegal data address".
type holdingBank struct {
	mu   sync.Mutex
	regs map[uint16]uint16
}

func (b *holdingBank) get(addr uint16) uint16 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.regs[addr]
}

func (b *holdingBank) HandleCoils(*smodbus.CoilsRequest) ([]bool, error) {
	return nil, smodbus.ErrIllegalDataAddress
}

func (b *holdingBank) HandleDiscreteInputs(*smodbus.DiscreteInputsRequest) ([]bool, error) {
	return nil, smodbus.ErrIllegalDataAddress
}

func (b *holdingBank) HandleInputRegisters(*smodbus.InputRegistersRequest) ([]uint16, error) {
	return nil, smodbus.ErrIllegalDataAddress
}

func (b *holdingBank) HandleHoldingRegisters(req *smodbus.HoldingRegistersRequest) ([]uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]uint16, req.Quantity)
	for i := range out {
		v, ok := b.regs[req.Addr+uint16(i)]
		if !ok {
			return nil, smodbus.ErrIllegalDataAddress
		}
		out[i] = v
	}
	if req.IsWrite {
		for i, v := range req.Args {
			b.regs[req.Addr+uint16(i)] = v
		}
		return nil, nil
	}
	return out, nil
}

// startModbusSimulator serves bank on a free loopback port and returns its
// address (the server does not report the port it bound, so a port free a
// moment ago is tried a few times).
func startModbusSimulator(t *testing.T, bank *holdingBank) string {
	t.Helper()
	var lastErr error
	for range 10 {
		addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
		srv, err := smodbus.NewServer(&smodbus.ServerConfiguration{
			URL: "tcp://" + addr, MaxClients: 10, Timeout: time.Minute,
			Logger: log.New(io.Discard, "", 0),
		}, bank)
		if err != nil {
			t.Fatalf("modbus simulator: %v", err)
		}
		if lastErr = srv.Start(); lastErr == nil {
			t.Cleanup(func() { _ = srv.Stop() })
			return addr
		}
	}
	t.Fatalf("modbus simulator: %v", lastErr)
	return ""
}

// requireBrowser fails the test (skips it under SKIP_PEERS=1) without
// Debian's chromium, node and playwright-core, and returns node's path and
// the e2e directory.
func requireBrowser(t *testing.T) (node, dir string) {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("web", "e2e"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		peertest.Missing(t, "no /usr/bin/chromium", "apt-get install chromium")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core")); err != nil {
		peertest.Missing(t, "no playwright-core", "cd gateway/web/e2e && npm ci")
	}
	node = peertest.Need(t, "node", "nodejs")
	return node, dir
}

// TestE2EWebPage drives the setup page of a real fieldgate in headless
// Chromium (gateway/web/e2e/real.mjs). Screenshots go to docs/screenshots/
// when FIELDGATE_SCREENSHOTS is set, else to a temporary directory.
func TestE2EWebPage(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	node, e2eDir := requireBrowser(t)
	shots := t.TempDir()
	if os.Getenv("FIELDGATE_SCREENSHOTS") != "" {
		var err error
		if shots, err = filepath.Abs(filepath.Join("..", "docs", "screenshots")); err != nil {
			t.Fatal(err)
		}
	}

	bank := &holdingBank{regs: map[uint16]uint16{
		0: 215,                                                                       // temp: INT16 × 0.1 = 21.5
		1: uint16(math.Float32bits(230.5) >> 16), 2: uint16(math.Float32bits(230.5)), // voltage: FLOAT32 ABCD
		3: 7, // setpoint, writable
	}}
	modbusAddr := startModbusSimulator(t, bank)

	cloud := startGatewayWith(t, "", func(g *gateway) string {
		return fmt.Sprintf(`version: 1
gateway: {id: cloud, data_dir: %q}
web: {enabled: false}
mqttsn: {enabled: false}
coap: {enabled: false}
broker:
  listeners:
    tcp: {enabled: true, address: "127.0.0.1:%d"}
    websocket: {enabled: false}
`, g.dataDir, g.port)
	})
	cloudSub := cloud.sub(t, "-t", "gateways/#", "-v", "-q", "1")

	webAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	// The edge runs the -race build: the page's first boot and config
	// changes are where the gateway's goroutines meet.
	edge := startRaceGatewayWith(t, "", func(g *gateway) string {
		return fmt.Sprintf(`version: 1
gateway: {data_dir: %q}
web:
  enabled: true
  address: %q
  login_free_attempts: 3
  login_delay: 30s
  mdns: false
mqttsn: {enabled: false}
coap: {enabled: false}
broker:
  listeners:
    tcp: {enabled: true, address: "127.0.0.1:%d"}
    websocket: {enabled: false}
`, g.dataDir, webAddr, g.port)
	})
	base := "http://" + webAddr
	if !waitFor(10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", webAddr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("the page at %s does not accept", base)
	}

	// A local client for the Broker page's list of connected clients.
	edge.sub(t, "-i", "line-3-hmi", "-t", "southbound/#")

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(e2eDir, "real.mjs"), base, shots, modbusAddr, strconv.Itoa(cloud.port))
	cmd.Dir = e2eDir
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("real.mjs: %v", err)
	}

	// What only the test can see: the register the page wrote, the
	// config file the page changed, and the readings in the cloud.
	if v := bank.get(3); v != 42 {
		t.Errorf("setpoint register = %d after the page wrote 42", v)
	}
	cfg, err := os.ReadFile(edge.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"id: plant-7", "name: meter1", modbusAddr, "transport: tcp", "tcp_port: " + strconv.Itoa(cloud.port)} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("config file lacks %q:\n%s", want, cfg)
		}
	}
	if !waitFor(10*time.Second, func() bool {
		return strings.Contains(cloudSub.out.String(), "gateways/plant-7/southbound/meter1/temp")
	}) {
		t.Errorf("the cloud did not receive gateways/plant-7/southbound/meter1/temp; it got:\n%s", cloudSub.out)
	}
}
