package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden errors.txt files, the fuzz seed corpus and missing test certificates")

// goldenDir holds one directory per case: config.yaml and errors.txt (the
// expected error lines of ParseFile, or else of Validate, or else of
// Provision, located in the file as Load locates them: "config.yaml:L:C:
// path: reason"; empty when the config is valid).
const goldenDir = "testdata/config"

// certDir holds the test certificates the golden configs refer to.
const certDir = "testdata/config/certs"

// fuzzDir is the seed corpus of FuzzParse, made from the golden configs.
const fuzzDir = "testdata/fuzz/FuzzParse"

// checkFile parses, validates and provisions a config the way Load does and
// returns its error lines, in the order of the file.
func checkFile(data []byte) []string {
	f, err := ParseFile("config.yaml", data)
	if err == nil {
		err = f.Check()
	}
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}

func TestGolden(t *testing.T) {
	if *update {
		writeTestCerts(t, certDir)
	}
	entries, err := os.ReadDir(goldenDir)
	if err != nil {
		t.Fatal(err)
	}
	cases := 0
	for _, e := range entries {
		if !e.IsDir() || e.Name() == "certs" {
			continue
		}
		cases++
		name := e.Name()
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(goldenDir, name)
			data, err := os.ReadFile(filepath.Join(dir, "config.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			got := checkFile(data)
			var out bytes.Buffer
			for _, l := range got {
				out.WriteString(l + "\n")
			}
			golden := filepath.Join(dir, "errors.txt")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				writeSeed(t, name, data)
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != string(want) {
				t.Errorf("errors differ (run go test -update to accept)\n--- got\n%s--- want\n%s", out.String(), want)
			}
		})
	}
	if cases < 15 {
		t.Errorf("only %d golden cases in %s", cases, goldenDir)
	}
}

// writeSeed stores a golden config as a FuzzParse seed in go test's format.
func writeSeed(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(fuzzDir, 0o755); err != nil {
		t.Fatal(err)
	}
	seed := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
	if err := os.WriteFile(filepath.Join(fuzzDir, name), []byte(seed), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeTestCerts writes a self-signed server certificate valid for a
// century, its key and an unrelated key into dir, unless they exist.
func writeTestCerts(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "server.pem")); err == nil {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fieldgate test"},
		DNSNames:              []string{"localhost"},
		NotBefore:             time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2125, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "server.pem"), "CERTIFICATE", der)
	for name, k := range map[string]*ecdsa.PrivateKey{"server.key": key, "other.key": other} {
		b, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, filepath.Join(dir, name), "PRIVATE KEY", b)
	}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDefaultYAML keeps default.yaml and Default() from drifting apart.
func TestDefaultYAML(t *testing.T) {
	c, err := Parse(DefaultYAML)
	if err != nil {
		t.Fatalf("default.yaml does not parse:\n%v", err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("default.yaml differs from Default()\nyaml:    %+v\ndefault: %+v", c, Default())
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate:\n%v", err)
	}
}

// TestDefaultYAMLComplete checks that every field of Config appears in
// default.yaml, so that the file stays the complete reference.
func TestDefaultYAMLComplete(t *testing.T) {
	text := string(DefaultYAML)
	for _, key := range yamlKeys(reflect.TypeFor[Config]()) {
		if !strings.Contains(text, key+":") {
			t.Errorf("default.yaml lacks %q", key)
		}
	}
}

// yamlKeys lists the yaml keys of a struct type and of its nested structs.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		sf := t.Field(i)
		name, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		ft := sf.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft.PkgPath() != "time" {
			keys = append(keys, yamlKeys(ft)...)
		}
		if !strings.Contains(opts, "inline") {
			keys = append(keys, name)
		}
	}
	return keys
}

func TestParseKeepsDefaults(t *testing.T) {
	c, err := Parse([]byte("version: 1\nbroker:\n  limits:\n    max_queued: 7\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Broker.Limits.MaxQueued = 7
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v\nwant %+v", c, want)
	}
}

func TestParseEmptyListClearsDefault(t *testing.T) {
	c, err := Parse([]byte("version: 1\nbroker:\n  banned:\n    cidrs: [10.0.0.0/8]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Broker.Banned.CIDRs; !slices.Equal(got, []string{"10.0.0.0/8"}) {
		t.Errorf("cidrs = %q", got)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("version: 1\nlog: {level: debug}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Level != "debug" {
		t.Errorf("level = %q", c.Log.Level)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("version: 1\nlog: {level: loud}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || err.Error() != bad+`:2:14: log.level: must be one of debug, info, warn, error, got "loud"` {
		t.Errorf("Load(bad) = %v, want a located log.level error", err)
	}

	if _, err := Load(filepath.Join(dir, "none.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}

// TestProvisionKeepsErrorChain checks that a broker error still wraps the
// underlying one after being prefixed with "broker." and located.
func TestProvisionKeepsErrorChain(t *testing.T) {
	c := Default()
	c.Broker.Listeners.TLS.Enabled = true
	c.Broker.Listeners.TLS.Cert = filepath.Join(t.TempDir(), "none.pem")
	c.Broker.Listeners.TLS.Key = c.Broker.Listeners.TLS.Cert
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	err := c.Provision()
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Provision() = %v, want it to wrap ErrNotExist", err)
	}
	if !strings.HasPrefix(err.Error(), "broker.listeners.tls.cert: open ") {
		t.Errorf("Provision() = %q", err)
	}
	f := &File{Name: "x.yaml", pos: positions{"broker.listeners.tls": {Line: 4, Column: 5}}}
	located := f.Locate(err)
	if !errors.Is(located, os.ErrNotExist) {
		t.Errorf("Locate lost the chain: %v", located)
	}
	if !strings.HasPrefix(located.Error(), "x.yaml:4:5: broker.listeners.tls.cert: open ") {
		t.Errorf("located: %q", located)
	}
}

func TestAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: 1\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 9; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	fmt.Fprintf(&b, "broker:\n  banned:\n    cidrs: *a8\n")
	start := time.Now()
	if _, err := Parse([]byte(b.String())); err == nil {
		t.Error("Parse accepted an alias bomb")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Parse took %s", d)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(DefaultYAML)
	f.Fuzz(func(t *testing.T, data []byte) {
		f, err := ParseFile("f.yaml", data)
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("empty error")
			}
			return
		}
		if err := f.Locate(f.Config.Validate()); err != nil {
			for _, l := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(l, "f.yaml:") {
					t.Fatalf("error line not located: %q", l)
				}
			}
		}
	})
}

// TestMarshalRoundTrip: what the setup page writes reads back the same.
func TestMarshalRoundTrip(t *testing.T) {
	for _, dir := range []string{"valid-full", "valid-minimal", "southbound-valid"} {
		c, err := Load(filepath.Join("testdata", "config", dir, "config.yaml"))
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		data, err := Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(data)
		if err != nil {
			t.Fatalf("%s: marshalled config does not parse: %v\n%s", dir, err, data)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("%s: round trip differs\n%s", dir, data)
		}
		if !strings.Contains(string(data), "session_ttl: 8h0m0s") {
			t.Errorf("durations not written as durations:\n%s", data)
		}
	}
}
