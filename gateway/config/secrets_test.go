package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/secret"
	"github.com/fieldgate/fieldgate/protocols/coap"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// secretLike matches the YAML keys that name a credential.
var secretLike = regexp.MustCompile(`(?i)pass|secret|token|psk|credential|(^|_)key$|private`)

// filePathKeys are keys that look secret but hold the path of a file (a TLS
// private key in PEM, readable by the gateway only), not the secret itself.
var filePathKeys = map[string]bool{
	"web.tls.key":                    true,
	"broker.listeners.tls.key":       true,
	"broker.listeners.websocket.key": true,
	"broker.listeners.quic.key":      true,
	"coap.dtls.key":                  true,
	"uplink.tls.key":                 true,

	"southbound.opcua.servers[].auth.key": true, // the OPC UA user certificate's key
}

// wantSecrets is every secret of the config, as documented in
// docs/security.md. A new secret field fails this test until it is listed
// here (and there).
var wantSecrets = []string{
	"broker.auth.users[].password_hash",
	"coap.dtls.psk[].key",
	"southbound.opcua.servers[].auth.password",
	"uplink.password",
}

// schemaField is one leaf of the config schema.
type schemaField struct {
	path  string // YAML keys, "[]" for list elements, "{}" for map values
	t     reflect.Type
	inMap bool
}

// schema lists every leaf field of t.
func schema(t reflect.Type, path string, inMap bool) []schemaField {
	if t == secretType || t == durationType {
		return []schemaField{{path, t, inMap}}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return schema(t.Elem(), path, inMap)
	case reflect.Slice, reflect.Array:
		return schema(t.Elem(), path+"[]", inMap)
	case reflect.Map:
		return schema(t.Elem(), path+"{}", true)
	case reflect.Struct:
		var out []schemaField
		for i := range t.NumField() {
			f := t.Field(i)
			name, inline, ok := yamlKey(f)
			if !ok {
				continue
			}
			if inline {
				out = append(out, schema(f.Type, path, inMap)...)
				continue
			}
			out = append(out, schema(f.Type, join(path, name), inMap)...)
		}
		return out
	default:
		return []schemaField{{path, t, inMap}}
	}
}

// TestSecretFieldsTyped is the guard against a forgotten secret: every
// field whose key looks like a password, key, secret, token or PSK is a
// secret.String (or a listed file path), no secret sits in a map (where the
// walkers cannot replace it), and the secrets are exactly wantSecrets.
func TestSecretFieldsTyped(t *testing.T) {
	var got []string
	for _, f := range schema(reflect.TypeFor[Config](), "", false) {
		key := f.path[strings.LastIndex(f.path, ".")+1:]
		key = strings.TrimRight(key, "[]{}")
		if f.t == secretType {
			got = append(got, f.path)
			if f.inMap {
				t.Errorf("%s: a secret in a map cannot be restored after an upload: use a list of structs", f.path)
			}
			continue
		}
		if secretLike.MatchString(key) && !filePathKeys[f.path] {
			if k := f.t.Kind(); k == reflect.String || (k == reflect.Slice && f.t.Elem().Kind() == reflect.Uint8) {
				t.Errorf("%s (%s) looks like a secret: make it a secret.String, or list it in filePathKeys if it is a file path", f.path, f.t)
			}
		}
	}
	if !slices.Equal(got, wantSecrets) {
		t.Errorf("secret fields:\n got  %q\n want %q", got, wantSecrets)
	}
}

// TestSecretFields: SecretFields finds every secret present, with its
// path, and lets the caller replace it.
func TestSecretFields(t *testing.T) {
	c := Default()
	c.Uplink.Password = secret.New("up")
	c.CoAP.DTLS.PSK = []coap.PSK{{Identity: "a", Key: secret.New("ka")}, {Identity: "b", Key: secret.New("kb")}}
	c.Broker.Auth.Users = []mqtt.User{{Username: "u", PasswordHash: secret.New("h")}}
	var paths []string
	for _, f := range c.SecretFields() {
		paths = append(paths, f.Path+"="+f.Value.Reveal())
		*f.Value = secret.New("x")
	}
	want := []string{"broker.auth.users[0].password_hash=h", "coap.dtls.psk[0].key=ka", "coap.dtls.psk[1].key=kb", "uplink.password=up"}
	if !slices.Equal(paths, want) {
		t.Fatalf("got %q, want %q", paths, want)
	}
	if c.CoAP.DTLS.PSK[1].Key.Reveal() != "x" || c.Uplink.Password.Reveal() != "x" {
		t.Fatal("SecretFields does not point into the config")
	}
}

// TestMarshalWritesSecrets: the config file the gateway writes holds its
// secrets (it reads them back from it), and parses back to the same config.
func TestMarshalWritesSecrets(t *testing.T) {
	c := Default()
	c.Uplink.Password = secret.New("uplink-clear")
	c.CoAP.DTLS.PSK = []coap.PSK{{Identity: "dev", Key: secret.New("psk-clear")}}
	data, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"uplink-clear", "psk-clear"} {
		if !strings.Contains(string(data), s) {
			t.Errorf("file lacks %q", s)
		}
	}
	back, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, c) {
		t.Fatal("round trip differs")
	}
	// A placeholder is never written as if it were the secret.
	var kept secret.String
	if err := kept.UnmarshalText([]byte(secret.Redacted)); err != nil {
		t.Fatal(err)
	}
	c.Uplink.Password = kept
	if _, err := Marshal(c); err == nil {
		t.Fatal("a <redacted> placeholder was written")
	}
}

// TestLoadRefusesHugeFile is issue 17's `fieldgate config check` on a
// 100 MB file (43 s and 2.7 GB before): refused by its size before it is
// read, fast and without memory.
func TestLoadRefusesHugeFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "huge.yaml")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("version: 1\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(100 << 20); err != nil { // sparse
		t.Fatal(err)
	}
	f.Close()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	_, err = Load(path)
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	const want = "config file is 100 MiB, larger than the 4 MiB limit"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Load = %v, want %q", err, want)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("refused in %v, %d bytes allocated", took, allocated)
	if took > 500*time.Millisecond {
		t.Errorf("refusing took %v", took)
	}
	if allocated > 1<<20 {
		t.Errorf("refusing allocated %d bytes", allocated)
	}
}

// TestReadLimits: at the limit is read; one byte more is refused, from a
// file (by size) and from a stream (by reading MaxFileSize+1 bytes).
func TestReadLimits(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		size int
		ok   bool
	}{{0, true}, {MaxFileSize, true}, {MaxFileSize + 1, false}} {
		path := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(path, make([]byte, tc.size), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := ReadFile(path)
		if (err == nil) != tc.ok {
			t.Errorf("ReadFile(%d bytes) = %v", tc.size, err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ReadAll(f)
		f.Close()
		if (err == nil) != tc.ok {
			t.Errorf("ReadAll(%d bytes) = %v", tc.size, err)
		}
		if err != nil && !strings.Contains(err.Error(), "larger than the 4 MiB limit") {
			t.Errorf("error %q", err)
		}
	}
	if err := CheckSize(MaxFileSize + 1); err == nil {
		t.Error("CheckSize accepted too much")
	}
}
