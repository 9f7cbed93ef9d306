package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fieldgate/fieldgate/southbound/opcua"
	"github.com/fieldgate/fieldgate/southbound/serial"
)

// TestOPCUAIssueExample: the OPC UA example reads into the section
// as written (the golden case opcua-issue-example has it), its password a
// secret that Marshal writes back and a re-read keeps.
func TestOPCUAIssueExample(t *testing.T) {
	path := filepath.Join(goldenDir, "opcua-issue-example", "config.yaml")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ua := c.Southbound.OPCUA
	if ua.Prefix != "southbound" || len(ua.Servers) != 1 {
		t.Fatalf("section = %+v", ua)
	}
	s := ua.Servers[0]
	if s.Name != "press-4" || s.Endpoint != "opc.tcp://10.0.0.20:4840/line" ||
		s.Security != (opcua.Security{Policy: "Basic256Sha256", Mode: "SignAndEncrypt"}) ||
		s.Auth.Username != "gateway" || s.Auth.Password.Reveal() != "…" {
		t.Fatalf("server = %+v", s)
	}
	want := []opcua.Point{
		{Name: "temp", Node: "ns=2;s=Press4.Temp", Unit: "°C", Deadband: 0.2},
		{Name: "setpoint", Node: "ns=2;s=Press4.Setpoint", Writable: true},
	}
	if !reflect.DeepEqual(s.Points, want) {
		t.Fatalf("points = %+v", s.Points)
	}
	if strings.Contains(c.Southbound.OPCUA.Servers[0].Auth.Password.String(), "…") {
		t.Error("the password prints in clear")
	}
	data, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "again.yaml")
	if err := os.WriteFile(out, data, 0o600); err != nil {
		t.Fatal(err)
	}
	again, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again.Southbound.OPCUA, c.Southbound.OPCUA) {
		t.Fatalf("after Marshal and Load:\n%+v\nwant\n%+v", again.Southbound.OPCUA, c.Southbound.OPCUA)
	}
}

// TestOPCUANameClash: an OPC UA server may share a Modbus device's or a
// serial sensor's name only under another topic prefix.
func TestOPCUANameClash(t *testing.T) {
	c := Default()
	c.Southbound.Serial.Sensors = nil
	c.Southbound.OPCUA.Servers = []opcua.Server{{Name: "gps", Endpoint: "opc.tcp://127.0.0.1:4840"}}
	if err := c.Validate(); err != nil {
		t.Fatalf("no clash: %v", err)
	}
	c.Southbound.Serial.Sensors = []serial.Sensor{{Name: "gps", Port: "/dev/ttyUSB0", Parser: "nmea"}}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), `southbound.opcua.servers[0].name: "gps" is also the name of southbound.serial.sensors[0]`) {
		t.Fatalf("clash with a serial sensor: %v", err)
	}
	c.Southbound.OPCUA.Prefix = "opcua"
	if err := c.Validate(); err != nil {
		t.Fatalf("other prefix: %v", err)
	}
}
