package config

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// missingCertsYAML names a certificate, key or CA file that does not exist
// for every part that reads one: %[1]s is a directory without them.
const missingCertsYAML = `version: 1
web:
  tls: {cert: %[1]s/web.pem, key: %[1]s/web.key}
broker:
  listeners:
    tls:
      enabled: true
      cert: %[1]s/tls.pem
      key: %[1]s/tls.key
      client_ca: %[1]s/clients.pem
    websocket:
      cert: %[1]s/ws.pem
      key: %[1]s/ws.key
    quic:
      enabled: true
      cert: %[1]s/quic.pem
      key: %[1]s/quic.key
coap:
  enabled: true
  dtls:
    enabled: true
    cert: %[1]s/dtls.pem
    key: %[1]s/dtls.key
    ca: %[1]s/dtls-ca.pem
uplink:
  tls:
    ca: %[1]s/cloud-ca.pem
    cert: %[1]s/uplink.pem
    key: %[1]s/uplink.key
`

// TestValidateReadsNoFile: a config naming certificate files that do not
// exist passes Validate (which reads nothing); Provision refuses it, naming
// each key and its file, and the errors are located in the YAML.
func TestValidateReadsNoFile(t *testing.T) {
	dir := t.TempDir()
	data := []byte(strings.ReplaceAll(missingCertsYAML, "%[1]s", dir))
	f, err := ParseFile("fieldgate.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Config.Validate(); err != nil {
		t.Fatalf("Validate read the file system:\n%v", err)
	}
	err = f.Config.Provision()
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Provision() = %v, want fs.ErrNotExist", err)
	}
	// key → (line, file): the line is the one of the key's value.
	want := []struct {
		key  string
		line int
		file string
	}{
		{"web.tls.cert", 3, "web.pem"},
		{"web.tls.key", 3, "web.key"},
		{"broker.listeners.tls.cert", 8, "tls.pem"},
		{"broker.listeners.tls.key", 9, "tls.key"},
		{"broker.listeners.tls.client_ca", 10, "clients.pem"},
		{"broker.listeners.websocket.cert", 12, "ws.pem"},
		{"broker.listeners.websocket.key", 13, "ws.key"},
		{"broker.listeners.quic.cert", 16, "quic.pem"},
		{"broker.listeners.quic.key", 17, "quic.key"},
		{"coap.dtls.cert", 22, "dtls.pem"},
		{"coap.dtls.key", 23, "dtls.key"},
		{"coap.dtls.ca", 24, "dtls-ca.pem"},
		{"uplink.tls.ca", 27, "cloud-ca.pem"},
		{"uplink.tls.cert", 28, "uplink.pem"},
		{"uplink.tls.key", 29, "uplink.key"},
	}
	located := f.Locate(err).Error()
	for _, w := range want {
		prefix := "fieldgate.yaml:" + strconv.Itoa(w.line) + ":"
		found := false
		for _, l := range strings.Split(located, "\n") {
			if strings.HasPrefix(l, prefix) && strings.Contains(l, " "+w.key+": ") && strings.Contains(l, filepath.Join(dir, w.file)) {
				found = true
			}
		}
		if !found {
			t.Errorf("no line %s…%s: …%s", prefix, w.key, w.file)
		}
	}
	if t.Failed() {
		t.Logf("errors:\n%s", located)
	}
	// Check (what Load and `config check` run) stops at Validate's errors
	// and otherwise provisions.
	if err := f.Check(); err == nil || err.Error() != located {
		t.Errorf("Check() = %v, want the located Provision errors", err)
	}
}

// TestValidateIsFast: Validate of a full config (certificates named, users
// with bcrypt hashes) takes milliseconds at most, since it reads no file.
func TestValidateIsFast(t *testing.T) {
	c, err := Load(filepath.Join("testdata", "config", "valid-full", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	start := time.Now()
	for range n {
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	per := time.Since(start) / n
	t.Logf("Validate of valid-full: %v per call", per)
	// Generous: -race on a machine shared by many builds took 20-40 ms;
	// alone it is ~4 ms (BenchmarkValidate). What this catches is a
	// Validate that waits on a file or the network.
	if per > 200*time.Millisecond {
		t.Errorf("Validate took %v", per)
	}
}

// TestLocate: a problem is pointed at its field, else at the nearest key
// or list item the file has, else only at the file; an error without a
// path keeps its text.
func TestLocate(t *testing.T) {
	data := []byte("version: 1\nsouthbound:\n  modbus:\n    devices:\n      - name: a\n        points:\n          - {name: t, address: 70000}\n")
	f, err := ParseFile("fg.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	in := errors.Join(
		errors.New("southbound.modbus.devices[0].points[0].address: too big"),
		errors.New("southbound.modbus.devices[0].tcp: missing"),
		errors.New("broker.limits.max_queued: bad default"),
		errors.New("something without a path"),
	)
	got := f.Locate(in).Error()
	want := strings.Join([]string{
		"fg.yaml: broker.limits.max_queued: bad default",
		"fg.yaml: something without a path",
		"fg.yaml:5:9: southbound.modbus.devices[0].tcp: missing",
		"fg.yaml:7:32: southbound.modbus.devices[0].points[0].address: too big",
	}, "\n")
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if f.Locate(nil) != nil {
		t.Error("Locate(nil) is not nil")
	}
}

// TestParseWithoutName: a config parsed without a file name (an upload,
// the API's YAML) keeps "path: reason (line L, column C)", which the page
// strips from JSON sections; a config that never was YAML has paths only.
func TestParseWithoutName(t *testing.T) {
	_, err := Parse([]byte("version: 1\nlog:\n  level: 3\n  colour: red\n"))
	want := `log.colour: unknown field (line 4, column 3)`
	if err == nil || err.Error() != want {
		t.Errorf("Parse() = %v, want %q", err, want)
	}
	var e *Error
	if !errors.As(err, &e) || e.Path != "log.colour" || e.Pos != (Pos{Line: 4, Column: 3}) {
		t.Errorf("not an *Error with path and position: %#v", e)
	}
	c := Default()
	c.Log.Level = "loud"
	if err := c.Validate(); err == nil || err.Error() != `log.level: must be one of debug, info, warn, error, got "loud"` {
		t.Errorf("Validate() = %v", err)
	}
}

func TestParentPath(t *testing.T) {
	for in, want := range map[string]string{
		"a.b[2].c": "a.b[2]",
		"a.b[2]":   "a.b",
		"a.b":      "a",
		"a":        "",
		"a[0][1]":  "a[0]",
	} {
		if got := parentPath(in); got != want {
			t.Errorf("parentPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func BenchmarkValidate(b *testing.B) {
	c, err := Load(filepath.Join("testdata", "config", "valid-full", "config.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := c.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}
