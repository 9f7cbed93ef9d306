package opcua

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/fieldgate/fieldgate/bus"
)

// TestConfigYAML reads the example.
func TestConfigYAML(t *testing.T) {
	const doc = `
servers:
  - name: press-4
    endpoint: opc.tcp://10.0.0.20:4840/line
    security: {policy: Basic256Sha256, mode: SignAndEncrypt}
    auth: {username: gateway, password: "pw"}
    points:
      - {name: temp, node: "ns=2;s=Press4.Temp", unit: "°C", deadband: 0.2}
      - {name: setpoint, node: "ns=2;s=Press4.Setpoint", writable: true}
      - {name: level, browse_path: "2:Tank/2:Level", mode: poll, decimals: 1, sampling_interval: 250ms}
`
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	s := WithDefaults(c.Servers[0])
	if s.Auth.Password.Reveal() != "pw" || s.Mode != ModeSubscribe || s.Interval != DefaultInterval || s.Points[2].Decimals == nil || *s.Points[2].Decimals != 1 {
		t.Errorf("server = %+v", s)
	}
	if s.Points[0].SamplingInterval != DefaultInterval || s.Points[0].DeadbandType != DeadbandAbsolute || s.Points[0].Scale != 1 {
		t.Errorf("point defaults = %+v", s.Points[0])
	}
}

func TestValidate(t *testing.T) {
	neg := -1
	c := Config{Prefix: "$x", QoS: 2, Servers: []Server{
		{Name: "a", Endpoint: "http://x", Security: Security{Policy: "Basic128", Mode: "Encrypt"}, Mode: "push",
			Auth: Auth{Password: secretOf("x"), Key: "k"}, Points: []Point{
				{Name: "p"},
				{Name: "p", Node: "ns=2;s=a", BrowsePath: "2:a"},
				{Name: "set", Node: "ns=x"},
				{Name: "q", BrowsePath: "x:y", Type: "Quux", Decimals: &neg, Deadband: -1, DeadbandType: "rel", Mode: "never"},
			}},
		{Name: "a", Endpoint: "opc.tcp://300.1.1.1:99999", Security: Security{Policy: PolicyNone, Mode: SecurityModeSign}},
		{Name: "b", Endpoint: "opc.tcp://h:4840", Security: Security{Policy: PolicyBasic256Sha256, Mode: SecurityModeNone}, Auth: Auth{Certificate: "/nonexistent/c.pem", Key: "/nonexistent/k.pem"}},
	}}
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`prefix: "$x" must not start with $`,
		"qos: must be between 0 and 1",
		`servers[0].endpoint: must be an opc.tcp://host:port URL`,
		`servers[0].security.policy: must be one of None, Basic256Sha256`,
		`servers[0].security.mode: must be one of None, Sign, SignAndEncrypt`,
		`servers[0].auth.username: a password needs a username`,
		`servers[0].mode: must be one of subscribe, poll`,
		`servers[0].points[0].node: needs a node`,
		`servers[0].points[1].name: "p" is already the name of points[0]`,
		`servers[0].points[1].browse_path: a point has a node or a browse_path, not both`,
		`servers[0].points[2].name: "set" is reserved`,
		`servers[0].points[2].node: "ns=x": ns=<index> must be followed by ';'`,
		`servers[0].points[3].browse_path: browse path "x:y": "x:y" must start with a namespace index`,
		`servers[0].points[3].type: "Quux" is not an OPC UA built-in type`,
		`servers[0].points[3].decimals: must be between 0 and 15, got -1`,
		`servers[0].points[3].deadband: must be 0 or more`,
		`servers[0].points[3].deadband_type: must be one of absolute, percent`,
		`servers[0].points[3].mode: must be one of subscribe, poll`,
		`servers[1].name: "a" is already the name of servers[0]`,
		`servers[1].endpoint: "300.1.1.1" is not an IPv4 address`,
		`servers[1].security.mode: policy None goes with mode None`,
		`servers[2].security.mode: policy Basic256Sha256 needs mode Sign or SignAndEncrypt`,
		`servers[2].auth.certificate: open /nonexistent/c.pem`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in\n%v", want, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	if _, err := New(c, bus.NewMemory(nil), Options{}); err == nil || !strings.HasPrefix(err.Error(), "opcua: config: ") {
		t.Errorf("New = %v", err)
	}
}

// TestApplicationCertificate checks the certificate made on first use: an
// RSA key readable only by its owner, the application URI in the SAN, the
// same certificate on the next start.
func TestApplicationCertificate(t *testing.T) {
	data := t.TempDir()
	opts := Options{DataDir: data, ApplicationURI: "urn:fieldgate:test-gw"}
	svc, err := New(Config{}, bus.NewMemory(nil), opts)
	if err != nil {
		t.Fatal(err)
	}
	c1, err := svc.ClientCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if c1.ApplicationURI != "urn:fieldgate:test-gw" || len(c1.Thumbprint) != 40 {
		t.Errorf("certificate %+v", c1)
	}
	cert, err := x509.ParseCertificate(c1.DER)
	if err != nil {
		t.Fatal(err)
	}
	if cert.KeyUsage&x509.KeyUsageDataEncipherment == 0 || cert.PublicKeyAlgorithm != x509.RSA {
		t.Errorf("key usage %v, algorithm %v", cert.KeyUsage, cert.PublicKeyAlgorithm)
	}
	fi, err := os.Stat(filepath.Join(data, certDir, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", fi.Mode().Perm())
	}
	svc2, _ := New(Config{}, bus.NewMemory(nil), opts)
	c2, err := svc2.ClientCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if c2.Thumbprint != c1.Thumbprint {
		t.Error("the certificate was made again")
	}
	// Another application URI makes a new certificate.
	svc3, _ := New(Config{}, bus.NewMemory(nil), Options{DataDir: data, ApplicationURI: "urn:other"})
	if c3, _ := svc3.ClientCertificate(); c3.Thumbprint == c1.Thumbprint || c3.ApplicationURI != "urn:other" {
		t.Errorf("certificate for another URI: %+v", c3)
	}
}

func TestTrustList(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "trusted")
	if l, err := TrustList(dir); err != nil || len(l) != 0 {
		t.Fatalf("empty: %v %v", l, err)
	}
	a, err := makeAppCert("urn:a", "a")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Trust(dir, a.der)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := trusted(dir, a.der); !ok {
		t.Error("not trusted after Trust")
	}
	if _, err := Trust(dir, []byte("junk")); err == nil {
		t.Error("junk trusted")
	}
	l, _ := TrustList(dir)
	if len(l) != 1 || l[0].Thumbprint != c.Thumbprint {
		t.Errorf("list %+v", l)
	}
	if err := Untrust(dir, strings.ToLower(c.Thumbprint)); err != nil {
		t.Fatal(err)
	}
	if ok, _ := trusted(dir, a.der); ok {
		t.Error("trusted after Untrust")
	}
	if err := Untrust(dir, c.Thumbprint); err == nil {
		t.Error("second Untrust did not fail")
	}
}
