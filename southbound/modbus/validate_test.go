package modbus

import (
	"bytes"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// loadConfig decodes a YAML section strictly, as the gateway config does.
func loadConfig(data []byte) (Config, error) {
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

const goodYAML = `
prefix: plant/sb
publish_mode: point
max_gap: 4
devices:
  - name: meter-1
    tcp: {address: "127.0.0.1:502"}
    unit_id: 1
    timeout: 500ms
    retries: 1
    poll_groups: [{name: fast, interval: 1s}, {name: slow, interval: 1m}]
    points:
      - {name: voltage, register: input, address: 0, type: FLOAT32, byte_order: CDAB, unit: V}
      - {name: energy, register: holding, address: 10, type: UINT64, group: slow}
      - {name: relay, register: coil, address: 0, writable: true, read_back: true}
      - {name: alarm, register: holding, address: 20, type: BIT, bit: 3}
      - {name: label, register: holding, address: 30, type: STRING, length: 8}
  - name: pump
    rtu: {port: /dev/ttyUSB0, baud: 19200, parity: N, stop_bits: 2}
    unit_id: 7
    points:
      - {name: speed, register: holding, address: 1, type: INT16, scale: 0.1, deadband: 0.5, writable: true}
`

func TestValidateGood(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	cfg, err := loadConfig([]byte(goodYAML))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("good config refused: %v", err)
	}
	d := cfg.withDefaults().Devices[1]
	if d.RTU.DataBits != 8 || d.Timeout != DefaultTimeout || d.Points[0].Group != DefaultGroup {
		t.Fatalf("defaults not applied: %+v", d)
	}
}

func TestValidateBad(t *testing.T) {
	dev := func(points string) string {
		return "devices:\n  - name: d\n    tcp: {address: \"h:502\"}\n    points:\n" + points
	}
	tests := []struct {
		name, yaml, want string
	}{
		{"prefix wildcard", "prefix: a/+/b", `prefix: "a/+/b" must be UTF-8 without +, # or NUL`},
		{"mode", "publish_mode: all", `publish_mode: must be one of point, group, got "all"`},
		{"max registers", "max_registers: 200", "max_registers: must be between 1 and 125, got 200"},
		{"max bits", "max_bits: 2001", "max_bits: must be between 1 and 2000"},
		{"no line", "devices: [{name: d, points: [{name: p, register: coil}]}]", "devices[0]: needs tcp or rtu"},
		{"both lines", "devices: [{name: d, tcp: {address: 'h:1'}, rtu: {port: /dev/x}, unit_id: 1, points: [{name: p, register: coil}]}]", "devices[0]: has both tcp and rtu"},
		{"bad address", "devices: [{name: d, tcp: {address: h}, points: [{name: p, register: coil}]}]", "devices[0].tcp.address: must be host:port"},
		{"rtu unit 0", "devices: [{name: d, rtu: {port: /dev/x}, points: [{name: p, register: coil}]}]", "devices[0].unit_id: must be between 1 and 247, got 0"},
		{"baud", "devices: [{name: d, rtu: {port: /dev/x, baud: 1234}, unit_id: 1, points: [{name: p, register: coil}]}]", "devices[0].rtu.baud: must be one of"},
		{"parity", "devices: [{name: d, rtu: {port: /dev/x, parity: X}, unit_id: 1, points: [{name: p, register: coil}]}]", `devices[0].rtu.parity: must be one of N, E, O, got "X"`},
		{"shared line params", "devices: [{name: a, rtu: {port: /dev/x}, unit_id: 1, points: [{name: p, register: coil}]}, {name: b, rtu: {port: /dev/x, baud: 19200}, unit_id: 2, points: [{name: p, register: coil}]}]", "devices[1].rtu: port /dev/x is shared with devices[0]"},
		{"same unit on line", "devices: [{name: a, tcp: {address: 'h:1'}, points: [{name: p, register: coil}]}, {name: b, tcp: {address: 'h:1'}, points: [{name: p, register: coil}]}]", "devices[1].unit_id: unit 0 on h:1 is already devices[0]"},
		{"duplicate device", "devices: [{name: a, tcp: {address: 'h:1'}, points: [{name: p, register: coil}]}, {name: a, tcp: {address: 'h:2'}, points: [{name: p, register: coil}]}]", `devices[1].name: "a" is already the name of devices[0]`},
		{"reserved name", dev("      - {name: status, register: coil}"), `devices[0].points[0].name: "status" is reserved`},
		{"no points", "devices: [{name: d, tcp: {address: 'h:1'}}]", "devices[0].points: a device needs at least one point"},
		{"interval", "devices: [{name: d, tcp: {address: 'h:1'}, poll_groups: [{name: g, interval: 1ms}], points: [{name: p, register: coil}]}]", "devices[0].poll_groups[0].interval: must be between 10ms and 24h0m0s, got 1ms"},
		{"unknown group", dev("      - {name: p, register: coil, group: nope}"), `devices[0].points[0].group: no poll group "nope"`},
		{"register", dev("      - {name: p, register: holdings, type: INT16}"), `devices[0].points[0].register: must be one of coil, discrete, holding, input, got "holdings"`},
		{"type", dev("      - {name: p, register: holding, type: INT12}"), `devices[0].points[0].type: must be one of BOOL`},
		{"coil int", dev("      - {name: p, register: coil, type: INT16}"), "devices[0].points[0].type: a coil holds one bit"},
		{"order", dev("      - {name: p, register: holding, type: INT32, byte_order: XY}"), `devices[0].points[0].byte_order: must be one of ABCD, DCBA, BADC, CDAB, got "XY"`},
		{"string order", dev("      - {name: p, register: holding, type: STRING, length: 2, byte_order: DCBA}"), "devices[0].points[0].byte_order: a STRING is read register by register"},
		{"string length", dev("      - {name: p, register: holding, type: STRING}"), "devices[0].points[0].length: a STRING needs 1 to 125 registers, got 0"},
		{"length on int", dev("      - {name: p, register: holding, type: INT16, length: 2}"), "devices[0].points[0].length: only a STRING has a length"},
		{"past end", dev("      - {name: p, register: holding, type: FLOAT64, address: 65533}"), "devices[0].points[0].address: FLOAT64 at 65533 runs past register 65535"},
		{"bit range", dev("      - {name: p, register: holding, type: BIT, bit: 16}"), "devices[0].points[0].bit: must be between 0 and 15, got 16"},
		{"write input", dev("      - {name: p, register: input, type: INT16, writable: true}"), "devices[0].points[0].writable: input registers are read-only"},
		{"write discrete", dev("      - {name: p, register: discrete, writable: true}"), "devices[0].points[0].writable: discrete registers are read-only"},
		{"write input bit", dev("      - {name: p, register: input, type: BIT, writable: true}"), "devices[0].points[0].writable: input registers are read-only"},
		{"bit writes", "devices: [{name: d, tcp: {address: 'h:1'}, bit_writes: atomic, points: [{name: p, register: holding, type: BIT, writable: true}]}]", `devices[0].bit_writes: must be "mask" or "read_modify_write", got "atomic"`},
		{"read back", dev("      - {name: p, register: holding, type: INT16, read_back: true}"), "devices[0].points[0].read_back: only a writable point is read back"},
		{"deadband string", dev("      - {name: p, register: holding, type: STRING, length: 1, deadband: 1}"), "devices[0].points[0].deadband: a STRING has no deadband"},
		{"scale bool", dev("      - {name: p, register: coil, scale: 2}"), "devices[0].points[0].scale: a BOOL cannot be scaled"},
		{"negative deadband", dev("      - {name: p, register: holding, type: INT16, deadband: -1}"), "devices[0].points[0].deadband: must be a number >= 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadConfig([]byte(tt.yaml))
			if err != nil {
				t.Fatalf("yaml: %v", err)
			}
			err = cfg.Validate()
			if err == nil {
				t.Fatalf("accepted; want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got:\n%v\nwant a line containing %q", err, tt.want)
			}
		})
	}
}

func TestValidateAllErrors(t *testing.T) {
	cfg, err := loadConfig([]byte("prefix: '#'\nmax_gap: -1\ndevices: [{name: 'a b', tcp: {address: x}, points: [{name: p, register: r}]}]"))
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.Validate()
	if n := len(strings.Split(err.Error(), "\n")); n != 5 {
		t.Fatalf("want 5 errors, got %d:\n%v", n, err)
	}
}

func TestUnknownKey(t *testing.T) {
	if _, err := loadConfig([]byte("devices: [{name: d, tcp: {adress: 'h:1'}}]")); err == nil {
		t.Fatal("unknown key accepted")
	}
}

// FuzzValidate feeds arbitrary YAML to the strict loader and Validate; a
// config Validate accepts must build a service.
func FuzzValidate(f *testing.F) {
	f.Add([]byte(goodYAML))
	f.Add([]byte("devices: [{name: d, tcp: {address: 'h:1'}, points: [{name: p, register: holding, type: STRING, length: 3}]}]"))
	f.Add([]byte("max_gap: 3\nmax_registers: 10\ndevices: [{name: d, rtu: {port: /dev/x}, unit_id: 3, points: [{name: p, register: input, type: FLOAT64, address: 65532}]}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := loadConfig(data)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		s, err := New(cfg, nopBus{}, Options{Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("valid config, New failed: %v", err)
		}
		for _, d := range s.devices {
			for _, g := range d.groups {
				for _, r := range g.reqs {
					limit := s.cfg.MaxRegisters
					if r.Register == RegCoil || r.Register == RegDiscrete {
						limit = s.cfg.MaxBits
					}
					if r.Count < 1 || r.Count > limit || r.Address+r.Count-1 > 65535 {
						t.Fatalf("bad request %+v", r)
					}
				}
			}
		}
	})
}

// TestPointRef: addresses as device manuals print them (issue 14).
func TestPointRef(t *testing.T) {
	for _, tt := range []struct {
		ref      string
		register string
		address  int
		err      string
	}{
		{"40001", RegHolding, 0, ""},
		{"400001", RegHolding, 0, ""},
		{"465536", RegHolding, 65535, ""},
		{"30010", RegInput, 9, ""},
		{"10001", RegDiscrete, 0, ""},
		{"00001", RegCoil, 0, ""},
		{"40000", "", 0, "register numbers start at 40001"},
		{"20001", "", 0, "the first digit names the table"},
		{"4001", "", 0, "want 5 digits"},
		{"4000a", "", 0, "digits only"},
	} {
		reg, addr, err := ParseRef(tt.ref)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseRef(%q) error %v, want %q", tt.ref, err, tt.err)
			}
			continue
		}
		if err != nil || reg != tt.register || addr != tt.address {
			t.Errorf("ParseRef(%q) = %s %d %v, want %s %d", tt.ref, reg, addr, err, tt.register, tt.address)
		}
		if back := FormatRef(reg, addr); back != tt.ref && len(tt.ref) == 5 {
			t.Errorf("FormatRef(%s, %d) = %q, want %q", reg, addr, back, tt.ref)
		}
	}
	if got := FormatRef(RegHolding, 9999); got != "410000" {
		t.Errorf("FormatRef(holding, 9999) = %q, want 410000", got)
	}

	dev := func(p Point) Config {
		return Config{Devices: []Device{{Name: "m", TCP: &TCP{Address: "127.0.0.1:502"}, Points: []Point{p}}}}
	}
	cfg := dev(Point{Name: "t", Ref: "40011", Type: TypeInt16}).withDefaults()
	if p := cfg.Devices[0].Points[0]; p.Register != RegHolding || p.Address != 10 {
		t.Fatalf("ref 40011 gave %s %d, want holding 10", p.Register, p.Address)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("ref 40011: %v", err)
	}
	err := dev(Point{Name: "t", Ref: "40011", Register: RegInput, Address: 10, Type: TypeInt16}).Validate()
	if err == nil || !strings.Contains(err.Error(), "devices[0].points[0].ref: 40011 is holding register 10") {
		t.Fatalf("a ref that disagrees: %v", err)
	}
	err = dev(Point{Name: "t", Ref: "50001", Type: TypeInt16}).Validate()
	if err == nil || !strings.Contains(err.Error(), "devices[0].points[0].ref:") {
		t.Fatalf("a bad ref: %v", err)
	}
}

// TestDeviceAddressIPv4Typo: 192.168.1.300:502 was saved (issue 14).
func TestDeviceAddressIPv4Typo(t *testing.T) {
	c := Config{Devices: []Device{{Name: "m", TCP: &TCP{Address: "192.168.1.300:502"}, Points: []Point{{Name: "t", Register: RegHolding, Type: TypeInt16}}}}}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), `devices[0].tcp.address: "192.168.1.300" is not an IPv4 address`) {
		t.Fatalf("got %v", err)
	}
}
