package web

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/fieldgate/fieldgate/gateway/config"
)

// FuzzParseUpload feeds arbitrary bytes to the config upload path: it must
// never panic, and whatever it accepts must survive a redacted round trip.
func FuzzParseUpload(f *testing.F) {
	f.Add([]byte("version: 1\n"))
	f.Add([]byte(`{"version": 1, "uplink": {"password": "<redacted>"}}`))
	f.Add([]byte("version: 1\nbroker:\n  auth:\n    users:\n      - username: a\n        password_hash: <redacted>\n"))
	running := config.Default()
	running.Uplink.Password = "secret"
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseConfig(data, running)
		if err != nil {
			if len(fieldErrors(err)) == 0 {
				t.Fatalf("error without lines: %v", err)
			}
			return
		}
		if c.Uplink.Password == Redacted {
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

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	for _, content := range []string{"one", "two"} {
		if err := writeFileAtomic(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if string(got) != content {
			t.Fatalf("got %q", got)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temp files left: %v", entries)
	}
	// A failed write (directory in the way) leaves the old content.
	if err := writeFileAtomic(filepath.Join(path, "x"), []byte("three"), 0o600); err == nil {
		t.Fatal("write under a file succeeded")
	}
	if got, _ := os.ReadFile(path); string(got) != "two" {
		t.Fatalf("old content lost: %q", got)
	}
}
