package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

// holdingBank is a Modbus slave's holding registers and coils
// (simonvetter/modbus server handler): the registers in regs, and zeros at
// 100–999 (the page's bulk import reads there); discrete and input tables
// answer "illegal data address".
type holdingBank struct {
	mu    sync.Mutex
	regs  map[uint16]uint16
	coils map[uint16]bool
}

// coil returns a coil's state.
func (b *holdingBank) coil(addr uint16) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.coils[addr]
}

func (b *holdingBank) get(addr uint16) uint16 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.regs[addr]
}

func (b *holdingBank) HandleCoils(req *smodbus.CoilsRequest) ([]bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]bool, req.Quantity)
	for i := range out {
		v, ok := b.coils[req.Addr+uint16(i)]
		if !ok {
			return nil, smodbus.ErrIllegalDataAddress
		}
		out[i] = v
	}
	if req.IsWrite {
		for i, v := range req.Args {
			b.coils[req.Addr+uint16(i)] = v
		}
		return nil, nil
	}
	return out, nil
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
		a := req.Addr + uint16(i)
		v, ok := b.regs[a]
		if !ok && (a < 100 || a > 999) {
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

// screenshotDir is where a page test puts its screenshots:
// docs/screenshots/ when FIELDGATE_SCREENSHOTS is set, else a temporary
// directory.
func screenshotDir(t *testing.T) string {
	t.Helper()
	if os.Getenv("FIELDGATE_SCREENSHOTS") == "" {
		return t.TempDir()
	}
	dir, err := filepath.Abs(filepath.Join("..", "docs", "screenshots"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
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
	shots := screenshotDir(t)

	bank := &holdingBank{regs: map[uint16]uint16{
		0: 215,                                                                       // temp: INT16 × 0.1 = 21.5
		1: uint16(math.Float32bits(230.5) >> 16), 2: uint16(math.Float32bits(230.5)), // voltage: FLOAT32 ABCD
		3: 7, // setpoint, writable
	}, coils: map[uint16]bool{0: false}} // pump, writable
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

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(e2eDir, "real.mjs"), base, shots, modbusAddr, strconv.Itoa(cloud.port))
	setupCode, _ := os.ReadFile(filepath.Join(edge.dataDir, "setup-code"))
	cmd.Env = append(os.Environ(), "FIELDGATE_SETUP_CODE="+strings.TrimSpace(string(setupCode)))
	cmd.Dir = e2eDir
	runPageScript(t, cmd, map[string]func() string{
		// The script asks for the gateway to be stopped and started
		// under its open page.
		"@@STOP": func() string {
			code, took := edge.stop(syscall.SIGTERM)
			t.Logf("edge stopped (exit %d) in %v", code, took)
			return "stopped"
		},
		"@@START": func() string {
			edge.start()
			return "started"
		},
	})

	// What only the test can see: the register the page wrote, the
	// config file the page changed, and the readings in the cloud.
	if v := bank.get(3); v != 42 {
		t.Errorf("setpoint register = %d after the page wrote 42", v)
	}
	if !bank.coil(0) {
		t.Error("the pump coil is off after the page switched it on")
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
	// No float noise in what subscribers and the cloud receive.
	if m := floatNoise.FindString(cloudSub.out.String()); m != "" {
		t.Errorf("float noise %q in the published payloads:\n%s", m, cloudSub.out)
	}
	if !strings.Contains(cloudSub.out.String(), `"v":21.5`) {
		t.Errorf("the cloud did not get temp 21.5:\n%s", cloudSub.out)
	}
}

// floatNoise matches a decimal with a run of 0s or 9s before its last
// digit, as binary floating point prints 21.7 (21.700000000000003).
var floatNoise = regexp.MustCompile(`\d\.\d*(0{6,}|9{6,})\d`)

// runPageScript runs a page script, logs its output, and answers its
// control lines: a line in answers is answered on the script's stdin with
// what the function returns. It fails the test when the script fails.
func runPageScript(t *testing.T, cmd *exec.Cmd, answers map[string]func() string) {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		t.Log(line)
		if f, ok := answers[strings.TrimSpace(line)]; ok {
			if _, err := io.WriteString(stdin, f()+"\n"); err != nil {
				t.Errorf("answer %s: %v", line, err)
			}
		}
	}
	err = cmd.Wait()
	if stderr.Len() > 0 {
		t.Logf("stderr:\n%s", stderr.String())
	}
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(cmd.Args[1]), err)
	}
}
