package web

import (
	"errors"
	"strings"
	"testing"
)

// TestFieldWords: config paths become what the technician sees on the
// form, list elements named from the config being checked; the field
// stays the path, so that the page marks the same input.
func TestFieldWords(t *testing.T) {
	tree := map[string]any{
		"southbound": map[string]any{"modbus": map[string]any{"devices": []any{
			map[string]any{"name": "meter"},
			map[string]any{"name": "boiler", "points": []any{map[string]any{"name": "temp"}, map[string]any{"name": ""}}},
		}}},
		"broker": map[string]any{"auth": map[string]any{"users": []any{map[string]any{"username": "alice"}}}},
	}
	cases := []struct {
		tree        map[string]any
		line, words string
	}{
		{tree, `southbound.modbus.devices[1].points[0].scale: expected a number, got "abc"`,
			"Device 2 “boiler”, point “temp”: Scale must be a number, not “abc”"},
		{tree, "southbound.modbus.devices[1].unit_id: must be between 0 and 255, got 300",
			"Device 2 “boiler”: Unit id must be between 0 and 255, got 300"},
		{tree, "southbound.modbus.devices[1].points[1].name: must not be empty",
			"Device 2 “boiler”, point 2: Name must not be empty"},
		{tree, `southbound.modbus.devices[1].tcp.address: "10.0.0.300" is not an IPv4 address`,
			`Device 2 “boiler”, Address (host:port): "10.0.0.300" is not an IPv4 address`},
		{tree, "southbound.modbus.devices[1].points[0].type: a coil holds one bit: type must be BOOL (or BIT), got FLOAT32",
			"Device 2 “boiler”, point “temp”, Data type: a coil holds one bit: type must be BOOL (or BIT), got FLOAT32"},
		{nil, `southbound.modbus.devices[1].points[0].scale: expected a number, got "abc"`,
			"Device 2, point 1: Scale must be a number, not “abc”"},
		{tree, "broker.limits.max_packet_size: must be between 16 and 268435456, got 5",
			"Broker limits: Max packet size must be between 16 and 268435456, got 5"},
		{tree, "broker.auth.users[0].password_hash: must be a bcrypt hash",
			"Broker user 1 “alice”: Password must be a bcrypt hash"},
		{nil, "uplink.servers[0].host: must not be empty", "Uplink server 1: Host must not be empty"},
		{nil, "uplink.servers[0]: offers no port for transport auto", "Uplink server 1: offers no port for transport auto"},
		{nil, "uplink.forward[2].filter: is empty", "Forward rule 3: Topic filter is empty"},
		{nil, "southbound.modbus.devices[0].tcp.address: dial tcp 10.0.0.5:502: connect: connection refused",
			"Device 1, Address (host:port): Cannot reach 10.0.0.5:502: connection refused — is the device on and the address and port right?"},
		{nil, "gateway.id: must not be empty", "Gateway: Id must not be empty"},
		{nil, "a config without paths", "a config without paths"},
	}
	for _, c := range cases {
		got := fieldErrorsIn(c.tree, errors.New(c.line))
		if len(got) != 1 || got[0].Words != c.words {
			t.Errorf("%s:\n got %+v\nwant %s", c.line, got, c.words)
			continue
		}
		if path, _, _ := strings.Cut(c.line, ": "); !strings.Contains(path, " ") && got[0].Field != path {
			t.Errorf("%s: field %q, want the path", c.line, got[0].Field)
		}
	}
}

// TestPlainError: what the Modbus and network code return, in words, with
// the device form's input it concerns.
func TestPlainError(t *testing.T) {
	cases := []struct {
		err, words, field string
	}{
		{"modbus: read m1: dial tcp 10.0.0.5:502: connect: connection refused",
			"Cannot reach 10.0.0.5:502: connection refused — is the device on and the address and port right?", "tcp.address"},
		{"dial tcp 10.0.0.5:502: i/o timeout", "Cannot reach 10.0.0.5:502: no answer — is the device on, on this network, and the address right?", "tcp.address"},
		{"dial tcp 10.0.0.5:502: connect: no route to host", "Cannot reach 10.0.0.5:502: no route to it — is it on the same network as the gateway and the address right?", "tcp.address"},
		{"dial tcp: lookup plc.local on 127.0.0.53:53: no such host", "Cannot find the host name plc.local — check its spelling or type the device's IP address.", "tcp.address"},
		{"read tcp 127.0.0.1:5000->10.0.0.5:502: read: connection reset by peer", "The device at 10.0.0.5:502 closed the connection — it may allow fewer clients, or it restarted.", ""},
		{"exception 2 (illegal data address) to function 3", "The device refused the request (Modbus exception 2, illegal data address): this address does not exist on the device: check the register type and the address (the manual's 40001 is holding register 0).", ""},
		{"exception 11 (gateway target device failed to respond) to function 3", "The device refused the request (Modbus exception 11, gateway target device failed to respond): the device behind the Modbus gateway did not answer: check the unit id.", ""},
		{"serial port gone: resolve /dev/ttyUSB9: lstat /dev/ttyUSB9: no such file or directory", "Serial port /dev/ttyUSB9 is not there — is the adapter plugged in, and is this its name?", "rtu.port"},
		{"serial port gone: open /dev/ttyS1: Permission denied", "The gateway may not open serial port /dev/ttyS1 (permission denied) — its user needs the dialout group.", "rtu.port"},
		{"no complete reply (0 bytes) from unit 7: context deadline exceeded", "No answer from unit 7 on the serial line — check the unit id, the baud rate and parity, and the wiring (A/B swapped, termination).", "unit_id"},
		{"encode INT16: 40000 is out of range (-3276.8 to 3276.7)", "This value does not fit the point (INT16): 40000 is out of range (-3276.8 to 3276.7)", "value"},
		{"modbus: read m1: context deadline exceeded", "The device did not answer in time — check that it is on and its address, or raise its timeout.", "tcp.address"},
		{"point in is not writable", "", ""},
	}
	for _, c := range cases {
		words, field := plainError(c.err)
		if words != c.words || field != c.field {
			t.Errorf("%s:\n got %q (%s)\nwant %q (%s)", c.err, words, field, c.words, c.field)
		}
		if strings.Contains(words, "dial tcp") || strings.Contains(words, "encode ") {
			t.Errorf("%s: Go error text left in %q", c.err, words)
		}
	}
}

// TestPlainNetwork: the uplink's errors keep which server and transport,
// with the Go network error in words.
func TestPlainNetwork(t *testing.T) {
	cases := []struct{ in, want string }{
		{"127.0.0.1 over tcp: dial tcp 127.0.0.1:1: connect: connection refused", "127.0.0.1 over tcp: cannot reach 127.0.0.1:1: connection refused (nothing listens on that port)"},
		{"cloud.example over tls: dial tcp: lookup cloud.example on 127.0.0.53:53: no such host", "cloud.example over tls: the host name cloud.example is not known (DNS)"},
		{"10.1.1.1 over tcp: dial tcp 10.1.1.1:1883: i/o timeout", "10.1.1.1 over tcp: cannot reach 10.1.1.1:1883: no answer (a firewall, or the wrong address)"},
		{"bad credentials", "bad credentials"},
	}
	for _, c := range cases {
		if got := plainNetwork(c.in); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.in, got, c.want)
		}
	}
}
