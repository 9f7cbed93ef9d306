package web

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/peertest"
	"github.com/fieldgate/fieldgate/internal/testwait"
	"github.com/fieldgate/fieldgate/southbound/modbus"
)

// pythonBin is Debian's Python, which has python3-pymodbus.
const pythonBin = "/usr/bin/python3"

// startRTUSlave makes a pty pair with socat (the cable) and serves Modbus
// RTU on its far end with Debian's pymodbus (9600 8N1, every unit id,
// holding registers 0: 1234 and 1: 5678; southbound/modbus/testdata). It
// returns the near end's path.
func startRTUSlave(t *testing.T) string {
	t.Helper()
	socat := peertest.Need(t, "socat", "socat")
	if out, err := exec.Command(pythonBin, "-c", "import pymodbus.server, serial_asyncio").CombinedOutput(); err != nil {
		peertest.Missing(t, fmt.Sprintf("pymodbus's serial server under %s (%v: %s)", pythonBin, err, bytes.TrimSpace(out)),
			"apt-get install python3-pymodbus python3-serial-asyncio")
	}
	dir := t.TempDir()
	near, far := filepath.Join(dir, "near"), filepath.Join(dir, "far")
	sc := exec.Command(socat, "pty,raw,echo=0,link="+near, "pty,raw,echo=0,link="+far)
	if err := sc.Start(); err != nil {
		t.Fatalf("start socat: %v", err)
	}
	t.Cleanup(func() { _ = sc.Process.Kill(); _ = sc.Wait() })
	testwait.NoError(t, 5*time.Second, func() error {
		_, err1 := os.Stat(near)
		_, err2 := os.Stat(far)
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("socat made no ptys: %w", err)
		}
		return nil
	})
	farDev, err := filepath.EvalSymlinks(far)
	if err != nil {
		t.Fatal(err)
	}
	sim := exec.Command(pythonBin, "../../southbound/modbus/testdata/pymodbus_rtu_server.py", farDev)
	if err := sim.Start(); err != nil {
		t.Fatalf("start pymodbus: %v", err)
	}
	t.Cleanup(func() { _ = sim.Process.Kill(); _ = sim.Wait() })
	return near
}

// rtuSection is a Modbus section with one RTU device on port.
func rtuSection(port string) map[string]any {
	return map[string]any{"devices": []any{map[string]any{
		"name": "rtu1", "rtu": map[string]any{"port": port, "baud": 9600, "parity": "N", "stop_bits": 1}, "unit_id": 1, "timeout": "500ms",
		"poll_groups": []any{map[string]any{"name": "default", "interval": "1s"}},
		"points": []any{
			map[string]any{"name": "a", "register": "holding", "address": 0, "type": "UINT16"},
			map[string]any{"name": "b", "register": "holding", "address": 1, "type": "UINT16", "scale": 0.1, "unit": "V"},
		},
	}}}
}

// TestProbeRTU: "read before save" of a Modbus RTU device opens the serial
// port of the form with the form's settings (a socat pty pair, Debian's
// pymodbus answering on the far end), reads the points and closes the
// port, which the next read opens again. A port that a running device
// uses is not opened: the answer names that device, at the port's input.
// A port that is not there is said in words, at the port's input.
func TestProbeRTU(t *testing.T) {
	port := startRTUSlave(t)
	h := start(t, testConfig(), nil)
	c := h.setUp()

	probe := func(section map[string]any) (int, map[string]any) {
		code, body, _ := c.do("POST", "/api/v1/southbound/probe", map[string]any{"device": "rtu1", "modbus": section})
		return code, body
	}
	// pymodbus takes a moment to start: the first reads may find no one.
	var body map[string]any
	testwait.NoError(t, 30*time.Second, func() error {
		var code int
		code, body = probe(rtuSection(port))
		if code != 200 {
			return fmt.Errorf("probe: %d %v", code, body)
		}
		return nil
	})
	points, _ := body["points"].([]any)
	if len(points) != 2 {
		t.Fatalf("points: %v", body)
	}
	a, b := points[0].(map[string]any), points[1].(map[string]any)
	if a["value"] != 1234.0 || b["value"] != 567.8 || b["unit"] != "V" {
		t.Fatalf("values: %v %v", a, b)
	}
	// The port was closed: it opens again, for a second read.
	if code, body := probe(rtuSection(port)); code != 200 {
		t.Fatalf("a second read: %d %v", code, body)
	}

	// A port that is not there.
	code, body := probe(rtuSection(filepath.Join(t.TempDir(), "ttyUSB9")))
	f := firstField(body)
	if code != 502 || f["field"] != "southbound.modbus.devices[0].rtu.port" || !strings.Contains(f["words"].(string), "is not there") {
		t.Errorf("a missing port: %d %v", code, body)
	}

	// A running device on the same port (by another name: a link to it).
	link := filepath.Join(t.TempDir(), "by-id-adapter")
	if err := os.Symlink(port, link); err != nil {
		t.Fatal(err)
	}
	h.b.mu.Lock()
	h.b.cfg.Southbound.Modbus.Devices = []modbus.Device{{Name: "line1", RTU: &modbus.RTU{Port: link}, UnitID: 5}}
	h.b.mu.Unlock()
	section := rtuSection(port)
	section["devices"] = append(section["devices"].([]any), map[string]any{"name": "line1", "rtu": map[string]any{"port": link}, "unit_id": 5,
		"points": []any{map[string]any{"name": "x", "register": "holding", "address": 0, "type": "UINT16"}}})
	code, body = probe(section)
	f = firstField(body)
	if code != 400 || f["field"] != "southbound.modbus.devices[0].rtu.port" || !strings.Contains(f["words"].(string), "in use by the running Modbus device “line1”") {
		t.Errorf("a port in use: %d %v", code, body)
	}
}

// firstField is the first field error of an API answer (nil without one).
func firstField(body map[string]any) map[string]any {
	fields, _ := body["fields"].([]any)
	if len(fields) == 0 {
		return map[string]any{"field": nil, "words": ""}
	}
	return fields[0].(map[string]any)
}
