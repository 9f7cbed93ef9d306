package web

import (
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	smodbus "github.com/simonvetter/modbus"
)

// probeBank is a Modbus slave with holding registers 0–1 (215 and 7).
type probeBank struct {
	mu    sync.Mutex
	reads int
}

func (b *probeBank) HandleCoils(*smodbus.CoilsRequest) ([]bool, error) {
	return nil, smodbus.ErrIllegalDataAddress
}

func (b *probeBank) HandleDiscreteInputs(*smodbus.DiscreteInputsRequest) ([]bool, error) {
	return nil, smodbus.ErrIllegalDataAddress
}

func (b *probeBank) HandleInputRegisters(*smodbus.InputRegistersRequest) ([]uint16, error) {
	return nil, smodbus.ErrIllegalDataAddress
}

func (b *probeBank) HandleHoldingRegisters(req *smodbus.HoldingRegistersRequest) ([]uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reads++
	regs := []uint16{215, 7}
	if req.IsWrite || int(req.Addr)+int(req.Quantity) > len(regs) {
		return nil, smodbus.ErrIllegalDataAddress
	}
	return regs[req.Addr : req.Addr+req.Quantity], nil
}

// startProbeSlave serves bank on a loopback port free a moment ago (the
// server does not report the port it bound, so a few are tried).
func startProbeSlave(t *testing.T, bank *probeBank) string {
	t.Helper()
	var lastErr error
	for range 10 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		srv, err := smodbus.NewServer(&smodbus.ServerConfiguration{URL: "tcp://" + addr, MaxClients: 4, Timeout: time.Minute, Logger: log.New(io.Discard, "", 0)}, bank)
		if err != nil {
			t.Fatal(err)
		}
		if lastErr = srv.Start(); lastErr == nil {
			t.Cleanup(func() { _ = srv.Stop() })
			return addr
		}
	}
	t.Fatalf("modbus slave: %v", lastErr)
	return ""
}

// probeSection is a Modbus section with one TCP device at addr.
func probeSection(addr string) map[string]any {
	return map[string]any{"devices": []any{map[string]any{
		"name": "m1", "tcp": map[string]any{"address": addr}, "unit_id": 1,
		"poll_groups": []any{map[string]any{"name": "default", "interval": "1s"}},
		"points": []any{
			map[string]any{"name": "temp", "register": "holding", "address": 0, "type": "INT16", "scale": 0.1, "unit": "°C"},
			map[string]any{"name": "missing", "register": "holding", "address": 9, "type": "UINT16"},
		},
	}}}
}

// TestProbeDevice: "read before save" reads a device that is not saved,
// once, and answers like "read now" (values without float noise, raw
// registers, a point's error); a bad section is refused with the field's
// path like a save; a device that does not answer is named in words at
// its address's input; nothing is saved (TestProbeRTU: serial devices).
func TestProbeDevice(t *testing.T) {
	bank := &probeBank{}
	addr := startProbeSlave(t, bank)
	h := start(t, testConfig(), nil)
	c := h.setUp()
	h.b.mu.Lock()
	applied := h.b.applied
	h.b.mu.Unlock()

	code, body, _ := c.do("POST", "/api/v1/southbound/probe", map[string]any{"device": "m1", "modbus": probeSection(addr)})
	if code != 200 {
		t.Fatalf("probe: %d %v", code, body)
	}
	points, _ := body["points"].([]any)
	if len(points) != 2 {
		t.Fatalf("points: %v", body)
	}
	temp, missing := points[0].(map[string]any), points[1].(map[string]any)
	if temp["name"] != "temp" || temp["value"] != 21.5 || temp["unit"] != "°C" || temp["raw"].([]any)[0] != 215.0 {
		t.Errorf("temp: %v", temp)
	}
	if missing["error"] == nil || missing["error"] == "" {
		t.Errorf("a point at an address the device lacks has no error: %v", missing)
	}

	bad := probeSection("192.168.1.300:502")
	code, body, _ = c.do("POST", "/api/v1/southbound/probe", map[string]any{"device": "m1", "modbus": bad})
	fields, _ := body["fields"].([]any)
	if code != 400 || len(fields) == 0 || !strings.Contains(fields[0].(map[string]any)["field"].(string), "devices[0].tcp.address") {
		t.Errorf("a bad address: %d %v", code, body)
	}

	// Nothing listens: the address's input is named, in words.
	closed := probeSection(closedAddr(t))
	code, body, _ = c.do("POST", "/api/v1/southbound/probe", map[string]any{"device": "m1", "modbus": closed})
	if f := firstField(body); code != 502 || f["field"] != "southbound.modbus.devices[0].tcp.address" || !strings.HasPrefix(f["words"].(string), "Cannot reach 127.0.0.1:") {
		t.Errorf("a device that is not there: %d %v", code, body)
	}

	if code, _, _ := c.do("POST", "/api/v1/southbound/probe", map[string]any{"device": "other", "modbus": probeSection(addr)}); code != 400 {
		t.Errorf("an unknown device: %d", code)
	}
	h.b.mu.Lock()
	after := h.b.applied
	h.b.mu.Unlock()
	if n := len(h.b.Config().Southbound.Modbus.Devices); n != 0 || after != applied {
		t.Errorf("a probe saved something: %d devices, %d applies", n, after-applied)
	}
	noCSRF := *c
	noCSRF.csrf = ""
	if code, _, _ := noCSRF.do("POST", "/api/v1/southbound/probe", map[string]any{"device": "m1", "modbus": probeSection(addr)}); code != 403 {
		t.Errorf("probe without CSRF: %d", code)
	}
}

// closedAddr is a loopback address where nothing listens (a port free a
// moment ago).
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
