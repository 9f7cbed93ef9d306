package web

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/internal/secret"
)

// FuzzParseUpload feeds arbitrary bytes to the config upload path: it must
// never panic, and whatever it accepts must survive a redacted round trip.
func FuzzParseUpload(f *testing.F) {
	f.Add([]byte("version: 1\n"))
	f.Add([]byte(`{"version": 1, "uplink": {"password": "<redacted>"}}`))
	f.Add([]byte("version: 1\nbroker:\n  auth:\n    users:\n      - username: a\n        password_hash: <redacted>\n"))
	running := config.Default()
	running.Uplink.Password = secret.New("secret")
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseConfig(data, running)
		if err != nil {
			if len(fieldErrors(err)) == 0 {
				t.Fatalf("error without lines: %v", err)
			}
			return
		}
		if c.Uplink.Password.Kept() {
			t.Fatal("redacted marker kept")
		}
		if _, err := configYAML(c); err != nil {
			t.Fatalf("accepted config does not encode: %v", err)
		}
	})
}

// FuzzPEMKind feeds arbitrary bytes to the certificate upload check.
func FuzzPEMKind(f *testing.F) {
	for _, name := range []string{"cert.pem", "key.pem"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		kind, err := pemKind(data)
		if err == nil && kind != "certificate" && kind != "key" {
			t.Fatalf("kind %q", kind)
		}
	})
}
