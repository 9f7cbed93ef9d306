package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/internal/atomicfile"
)

// addrCatcher is a slog handler that keeps the web address of the
// "fieldgate started" line.
type addrCatcher struct {
	mu   sync.Mutex
	addr string
}

func (a *addrCatcher) Enabled(context.Context, slog.Level) bool { return true }
func (a *addrCatcher) WithAttrs([]slog.Attr) slog.Handler       { return a }
func (a *addrCatcher) WithGroup(string) slog.Handler            { return a }
func (a *addrCatcher) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "fieldgate started" {
		return nil
	}
	r.Attrs(func(at slog.Attr) bool {
		if at.Key == "web" {
			a.mu.Lock()
			a.addr = fmt.Sprint(at.Value.Any())
			a.mu.Unlock()
		}
		return true
	})
	return nil
}

// pageGateway runs a whole gateway in this process, with its web page on a
// free port, on a config file in a temporary directory; it returns the
// page's base URL, the config file and the reload channel (SIGHUP).
func pageGateway(t *testing.T) (base, cfgPath string, reload chan struct{}) {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Gateway.DataDir = filepath.Join(dir, "data")
	cfg.Broker.Listeners.TCP.Address = "127.0.0.1:0"
	cfg.Broker.Listeners.WebSocket.Enabled = false
	cfg.MQTTSN.Enabled, cfg.CoAP.Enabled = false, false
	cfg.Web.Address = "127.0.0.1:0"
	cfg.Web.MDNS = false
	cfgPath = filepath.Join(dir, "fieldgate.yaml")
	data, err := config.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	catcher := &addrCatcher{}
	reload = make(chan struct{}, 1)
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{ConfigPath: cfgPath, Config: cfg, Logger: slog.New(catcher), Reload: reload, Ready: ready})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("gateway not ready after 10s")
	}
	catcher.mu.Lock()
	defer catcher.mu.Unlock()
	if catcher.addr == "" {
		t.Fatal("no web address logged")
	}
	return "http://" + catcher.addr, cfgPath, reload
}

// pageClient is a browser session on the page.
type pageClient struct {
	base string
	c    *http.Client
	csrf string
}

func newPageClient(base string) *pageClient {
	jar, _ := cookiejar.New(nil)
	return &pageClient{base: base, c: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
}

// do sends body (JSON) and returns the status and the decoded answer.
func (p *pageClient) do(method, path string, body any) (int, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, p.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if p.csrf != "" {
		req.Header.Set("X-CSRF-Token", p.csrf)
	}
	resp, err := p.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var m map[string]any
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%s %s: %d %q", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, m, nil
}

// fileAsAPI returns the config file at path in the shape GET
// /api/v1/config answers (the YAML tree, secrets redacted, no nulls), as
// JSON-decoded values.
func fileAsAPI(t *testing.T, path string) map[string]any {
	t.Helper()
	c, err := config.Load(path)
	if err != nil {
		t.Fatalf("the written config does not load: %v", err)
	}
	data, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(dropNulls(m))
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(j, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func dropNulls(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if x == nil {
				delete(t, k)
			} else {
				t[k] = dropNulls(x)
			}
		}
	case []any:
		for i, x := range t {
			t[i] = dropNulls(x)
		}
	}
	return v
}

// TestConfigWritesSerialised is issue 17's config write race: two
// concurrent PUT /api/v1/config left the file different from the running
// config in 2 of 8 rounds, and a first boot request answered 409 still
// renamed the gateway. Here, on a whole gateway: 8 concurrent first-boot
// setups (one wins, its id is applied; every 409 or 429 changes nothing,
// and neither does a late one); then 50 rounds of two concurrent PUTs of different
// configs, with a SIGHUP reload racing them, after each of which the file
// on disk must be the running config.
func TestConfigWritesSerialised(t *testing.T) {
	base, cfgPath, reload := pageGateway(t)

	const racers = 8
	setupCode, err := os.ReadFile(filepath.Join(filepath.Dir(cfgPath), "data", "setup-code"))
	if err != nil {
		t.Fatal(err)
	}
	clients := make([]*pageClient, racers)
	codes := make([]int, racers)
	var wg sync.WaitGroup
	for i := range racers {
		clients[i] = newPageClient(base)
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body, err := clients[i].do("POST", "/api/v1/setup", map[string]string{"password": "correct horse battery", "gateway_id": fmt.Sprintf("racer-%d", i), "setup_code": strings.TrimSpace(string(setupCode))})
			if err != nil {
				t.Error(err)
				return
			}
			codes[i] = code
			if code == 200 {
				clients[i].csrf, _ = body["csrf"].(string)
			}
		}()
	}
	wg.Wait()
	var admin *pageClient
	winner := -1
	for i, code := range codes {
		switch {
		case code == 200 && admin == nil:
			admin, winner = clients[i], i
		case code == 409, code == 429: // refused (429: too many password checks at once)
		default:
			t.Fatalf("setup codes %v", codes)
		}
	}
	if admin == nil {
		t.Fatalf("no setup won: %v", codes)
	}
	status := func() map[string]any {
		t.Helper()
		code, st, err := admin.do("GET", "/api/v1/status", nil)
		if err != nil || code != 200 {
			t.Fatalf("status: %d %v", code, err)
		}
		return st
	}
	wantID := fmt.Sprintf("racer-%d", winner)
	if id := status()["gateway_id"]; id != wantID {
		t.Fatalf("gateway id %v after setup, want the winner's %s (codes %v)", id, wantID, codes)
	}
	if id := fileAsAPI(t, cfgPath)["gateway"].(map[string]any)["id"]; id != wantID {
		t.Fatalf("file's gateway id %v, want %s", id, wantID)
	}
	before, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	late := newPageClient(base)
	if code, _, err := late.do("POST", "/api/v1/setup", map[string]string{"password": "another password", "gateway_id": "late"}); err != nil || code != 409 {
		t.Fatalf("late setup: %d %v", code, err)
	}
	after, _ := os.ReadFile(cfgPath)
	if id := status()["gateway_id"]; id != wantID || !bytes.Equal(before, after) {
		t.Fatalf("late setup changed something: gateway id %v, file changed %v", id, !bytes.Equal(before, after))
	}

	// Two different configs, PUT at the same time, 50 times.
	code, running, err := admin.do("GET", "/api/v1/config", nil)
	if err != nil || code != 200 {
		t.Fatalf("get config: %d %v", code, err)
	}
	variant := func(round, n int) map[string]any {
		var m map[string]any
		data, _ := json.Marshal(running)
		_ = json.Unmarshal(data, &m)
		m["gateway"].(map[string]any)["id"] = fmt.Sprintf("round-%d-%d", round, n)
		m["broker"].(map[string]any)["sys_interval"] = fmt.Sprintf("%ds", 10+n)
		return m
	}
	mismatches := 0
	for round := range 50 {
		var wg sync.WaitGroup
		for n := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, body, err := admin.do("PUT", "/api/v1/config", variant(round, n))
				if err != nil || code != 200 {
					t.Errorf("round %d put %d: %d %v %v", round, n, code, body, err)
				}
			}()
		}
		select {
		case reload <- struct{}{}:
		default:
		}
		wg.Wait()
		code, got, err := admin.do("GET", "/api/v1/config", nil)
		if err != nil || code != 200 {
			t.Fatalf("round %d: get config: %d %v", round, code, err)
		}
		file := fileAsAPI(t, cfgPath)
		if !reflect.DeepEqual(file, got) {
			mismatches++
			t.Errorf("round %d: the file is not the running config: file gateway %v sys_interval %v, running gateway %v sys_interval %v",
				round, file["gateway"], file["broker"].(map[string]any)["sys_interval"], got["gateway"], got["broker"].(map[string]any)["sys_interval"])
		}
		if id, _ := got["gateway"].(map[string]any)["id"].(string); !strings.HasPrefix(id, fmt.Sprintf("round-%d-", round)) {
			t.Errorf("round %d: running gateway id %q", round, id)
		}
	}
	t.Logf("50 rounds of two concurrent PUTs (and a reload): %d with the file different from the running config", mismatches)
}
