package web

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/internal/secret"
	"github.com/fieldgate/fieldgate/protocols/coap"
)

// growAll makes every list of structs in v hold one element and every
// optional section present, so that a walk reaches every field the schema
// has.
func growAll(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() && v.Type().Elem().Kind() == reflect.Struct {
			v.Set(reflect.New(v.Type().Elem()))
		}
		if !v.IsNil() {
			growAll(v.Elem())
		}
	case reflect.Struct:
		if v.Type() == secretType {
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				growAll(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.Len() == 0 && v.Type().Elem().Kind() == reflect.Struct {
			v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		}
		for i := range v.Len() {
			growAll(v.Index(i))
		}
	}
}

// everySecret returns a config with every secret field of the schema
// present and set to a distinct clear value, and those values.
func everySecret(t *testing.T) (config.Config, []string) {
	t.Helper()
	c := config.Default()
	c.Gateway.ID = "gw-test"
	growAll(reflect.ValueOf(&c).Elem())
	var clearVals []string
	for i, f := range c.SecretFields() {
		v := fmt.Sprintf("clear-secret-%d-%s", i, strings.NewReplacer("[", "", "]", "", ".", "-").Replace(f.Path))
		*f.Value = secret.New(v)
		clearVals = append(clearVals, v)
	}
	if len(clearVals) < 3 {
		t.Fatalf("only %d secrets found: %v", len(clearVals), c.SecretFields())
	}
	return c, clearVals
}

// TestSecretsRedactedByType fills every secret of the whole config (found
// by type, with reflection) and checks that none leaves the box: not in
// GET /api/v1/config, the YAML download, any file of the diagnostics
// bundle, nor in a log line holding the config (text and JSON handlers,
// and the page's log ring as /api/v1/logs shows it). Issue 17 found
// coap.dtls.psk[].key in clear in all three downloads.
func TestSecretsRedactedByType(t *testing.T) {
	b := newFakeBackend()
	cfg, clearVals := everySecret(t)
	h := start(t, testConfig(), b)
	c := h.setUp()
	b.mu.Lock()
	b.cfg = cfg // not a valid config (empty list entries), but every secret is set
	b.mu.Unlock()

	leaks := func(what string, data []byte) {
		t.Helper()
		for _, s := range clearVals {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("%s holds the clear secret %q", what, s)
			}
		}
	}
	code, body, _ := c.do("GET", "/api/v1/config", nil)
	if code != 200 {
		t.Fatalf("config: %d %v", code, body)
	}
	raw, _ := json.Marshal(body)
	leaks("GET /api/v1/config", raw)
	psk := body["coap"].(map[string]any)["dtls"].(map[string]any)["psk"].([]any)[0].(map[string]any)
	if psk["key"] != Redacted {
		t.Errorf("coap.dtls.psk[0].key shown as %v, want %s", psk["key"], Redacted)
	}
	if got := strings.Count(string(raw), `"\u003credacted\u003e"`); got != len(clearVals) { // json.Marshal escapes < and >
		t.Errorf("%d values redacted, want %d", got, len(clearVals))
	}
	_, y, _ := c.do("GET", "/api/v1/config.yaml", nil)
	leaks("config.yaml", []byte(y["raw"].(string)))

	// A log line with the whole config, through every handler.
	var out bytes.Buffer
	for _, l := range []*slog.Logger{
		slog.New(slog.NewTextHandler(&out, nil)), slog.New(slog.NewJSONHandler(&out, nil)), h.srv.log,
	} {
		l.Info("config", "config", cfg, "uplink", cfg.Uplink, "psk", cfg.CoAP.DTLS.PSK)
		l.Warn(fmt.Sprintf("config %v %+v", cfg, cfg))
	}
	leaks("log lines", out.Bytes())
	if !strings.Contains(out.String(), Redacted) {
		t.Errorf("no %s in the log lines", Redacted)
	}
	_, logs, _ := c.do("GET", "/api/v1/logs?level=debug", nil)
	raw, _ = json.Marshal(logs)
	leaks("/api/v1/logs", raw)

	_, zipBody, _ := c.do("GET", "/api/v1/diagnostics", nil)
	data := zipBody["raw"].(string)
	zr, err := zip.NewReader(strings.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		content, _ := io.ReadAll(rc)
		rc.Close()
		leaks("diagnostics "+f.Name, content)
	}
}

// TestRedactedRoundTripKeepsEverySecret: the redacted download of a config
// with every secret set, uploaded back, restores every secret (by type:
// nothing to list), and a reordered PSK list keeps each identity's key.
func TestRedactedRoundTripKeepsEverySecret(t *testing.T) {
	cfg, _ := everySecret(t)
	y, err := configYAML(cfg)
	if err != nil {
		t.Fatal(err)
	}
	back, err := parseConfig(y, cfg)
	if err != nil {
		t.Fatalf("parse the download: %v\n%s", err, y)
	}
	want := cfg.SecretFields()
	got := back.SecretFields()
	if len(got) != len(want) {
		t.Fatalf("%d secrets back, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Path != want[i].Path || *got[i].Value != *want[i].Value {
			t.Errorf("%s not restored", want[i].Path)
		}
	}

	running := config.Default()
	running.CoAP.DTLS.PSK = []coap.PSK{
		{Identity: "dev-1", Key: secret.New("key-one")},
		{Identity: "dev-2", Key: secret.New("key-two")},
	}
	upload := []byte(`{"version": 1, "coap": {"dtls": {"psk": [
		{"identity": "dev-2", "key": "<redacted>"},
		{"identity": "dev-3", "key": "key-three"},
		{"identity": "dev-1", "key": "<redacted>"}]}}}`)
	c, err := parseConfig(upload, running)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, p := range c.CoAP.DTLS.PSK {
		keys[p.Identity] = p.Key.Reveal()
	}
	if !reflect.DeepEqual(keys, map[string]string{"dev-1": "key-one", "dev-2": "key-two", "dev-3": "key-three"}) {
		t.Fatalf("keys after reorder: %v", keys)
	}
	// A redacted secret with nothing stored to keep is refused by path.
	c, err = parseConfig([]byte(`{"version": 1, "coap": {"dtls": {"psk": [{"identity": "dev-9", "key": "<redacted>"}]}}}`), running)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "coap.dtls.psk[0].key: is <redacted>") {
		t.Fatalf("Validate = %v", err)
	}
}

// TestSetupRaceChangesNothing is issue 17's first boot race: a setup
// request answered 409 still renamed the gateway (6 of 6 trials). Now the
// password state is checked first and claimed before the gateway id is
// applied: of concurrent setups exactly one wins and applies its id; every
// 409 changed nothing, and so does a setup after the first.
func TestSetupRaceChangesNothing(t *testing.T) {
	const trials, racers = 6, 8
	for trial := range trials {
		b := newFakeBackend()
		h := start(t, testConfig(), b)
		codes := make([]int, racers)
		code := h.setupCode()
		var wg sync.WaitGroup
		for i := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := fmt.Sprintf(`{"password": %q, "gateway_id": "racer-%d", "setup_code": %q}`, testPassword, i, code)
				resp, err := http.Post(h.base+"/api/v1/setup", "application/json", strings.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				codes[i] = resp.StatusCode
			}()
		}
		wg.Wait()
		winner := -1
		for i, code := range codes {
			switch code {
			case 200:
				if winner >= 0 {
					t.Fatalf("trial %d: two setups won: %v", trial, codes)
				}
				winner = i
			case 409, 429: // refused (429: too many password checks at once)
			default:
				t.Fatalf("trial %d: codes %v", trial, codes)
			}
		}
		b.mu.Lock()
		id, applied := b.cfg.Gateway.ID, b.applied
		b.mu.Unlock()
		if winner < 0 || id != fmt.Sprintf("racer-%d", winner) || applied != 1 {
			t.Fatalf("trial %d: codes %v, gateway id %q, %d configs applied; want racer-%d's id applied once", trial, codes, id, applied, winner)
		}
		// After setup: 409, and nothing changes.
		resp, err := http.Post(h.base+"/api/v1/setup", "application/json", strings.NewReader(`{"password": "another password", "gateway_id": "late"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		b.mu.Lock()
		after := b.cfg
		applied = b.applied
		b.mu.Unlock()
		if resp.StatusCode != 409 || after.Gateway.ID != id || applied != 1 {
			t.Fatalf("late setup: %d, gateway id %q, applied %d", resp.StatusCode, after.Gateway.ID, applied)
		}
	}
}

// TestConfigUploadLimit: a 100 MB config upload is refused after the
// first MiB, fast and without holding the body.
func TestConfigUploadLimit(t *testing.T) {
	h := start(t, testConfig(), nil)
	c := h.setUp()
	applied := h.b.applied
	for _, path := range []string{"/api/v1/config", "/api/v1/config/uplink"} {
		body := io.MultiReader(strings.NewReader("version: 1\n# "), &zeroReader{n: 100 << 20})
		req, _ := http.NewRequest("PUT", h.base+path, body)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-CSRF-Token", c.csrf)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		resp, err := c.c.Do(req)
		took := time.Since(start)
		if err != nil {
			// The server may close the connection once it stops reading.
			t.Logf("%s: %v", path, err)
		} else {
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge && resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s: %d", path, resp.StatusCode)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		growth := int64(after.HeapInuse) - int64(before.HeapInuse)
		t.Logf("%s: refused in %v, heap in use grew %.1f MiB", path, took, float64(growth)/(1<<20))
		if took > 5*time.Second {
			t.Errorf("%s: took %v", path, took)
		}
		if growth > 16<<20 {
			t.Errorf("%s: heap grew %d MiB", path, growth>>20)
		}
	}
	if h.b.applied != applied {
		t.Fatal("an oversized config was applied")
	}
}

// zeroReader reads n zero bytes.
type zeroReader struct{ n int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), z.n)
	clear(p[:n])
	z.n -= n
	return int(n), nil
}
