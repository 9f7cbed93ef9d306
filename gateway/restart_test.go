package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/board/appliance"
	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/internal/atomicfile"
)

// leafKeys lists the YAML paths of every setting of a config type (down to
// the first field that is not a struct of YAML keys).
func leafKeys(t reflect.Type, prefix string) []string {
	if t.Kind() != reflect.Struct || !hasYAMLFields(t) {
		return []string{prefix}
	}
	var out []string
	for i := range t.NumField() {
		name, inline := yamlName(t.Field(i))
		switch {
		case inline:
			out = append(out, leafKeys(t.Field(i).Type, prefix)...)
		case name != "":
			key := name
			if prefix != "" {
				key = prefix + "." + name
			}
			out = append(out, leafKeys(t.Field(i).Type, key)...)
		}
	}
	return out
}

// TestReloadersCoverConfig: every setting of the config has an entry in
// reloaders (a new one cannot be accepted and then reach nothing), and
// every entry names a setting that exists.
func TestReloadersCoverConfig(t *testing.T) {
	keys := leafKeys(reflect.TypeFor[config.Config](), "")
	if len(keys) < 50 {
		t.Fatalf("only %d settings found: %v", len(keys), keys)
	}
	for _, k := range keys {
		if _, ok := reloaderFor(k); !ok {
			t.Errorf("setting %s has no entry in reloaders: say how a change reaches its part", k)
		}
	}
	for _, r := range reloaders {
		if !fieldAt(reflect.ValueOf(config.Default()), r.key).IsValid() {
			t.Errorf("reloaders entry %q names no setting", r.key)
		}
		if r.reload == nil && r.part == "" {
			t.Errorf("reloaders entry %q needs a restart of no part", r.key)
		}
	}
	t.Logf("%d settings, %d entries", len(keys), len(reloaders))
}

// TestPendingKeys: the settings where the saved config differs from the
// running one, each with the part to restart; copyAt takes a running value
// back.
func TestPendingKeys(t *testing.T) {
	running := config.Default()
	desired := running
	desired.Web.Address = "127.0.0.1:9999"
	desired.Broker.Listeners.TCP.Address = ":1999"
	desired.MQTTSN.Enabled = !running.MQTTSN.Enabled
	desired.Gateway.MemoryBudgetMB = 64
	got := pending(running, desired)
	want := []pendingKey{
		{"gateway.memory_budget_mb", "gateway"},
		{"web.address", "web"},
		{"broker.listeners.tcp.address", "broker"},
		{"mqttsn.enabled", "mqttsn"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("pending = %v, want %v", got, want)
	}
	if p := pendingParts(got); !slices.Equal(p, []string{"gateway", "web", "broker", "mqttsn"}) {
		t.Fatalf("parts = %v", p)
	}
	copyAt(&desired, running, "broker.listeners")
	copyAt(&desired, running, "web")
	if got := pendingNames(pending(running, desired)); !slices.Equal(got, []string{"gateway.memory_budget_mb", "mqttsn.enabled"}) {
		t.Fatalf("after copying back: %v", got)
	}
}

// runPage runs a gateway in this process on the config file cfgPath,
// with its page on a free port; it returns the page's base URL, and the
// channel Run's result arrives on. Stopping it is the caller's business.
func runPage(t *testing.T, cfgPath string) (base string, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	catcher := &addrCatcher{}
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	d := make(chan error, 1)
	go func() {
		d <- Run(ctx, Options{ConfigPath: cfgPath, Config: cfg, Logger: slog.New(catcher), Ready: ready})
	}()
	select {
	case <-ready:
	case err := <-d:
		cancel()
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("gateway not ready after 10s")
	}
	catcher.mu.Lock()
	defer catcher.mu.Unlock()
	return "http://" + catcher.addr, cancel, d
}

// TestRestartPending: on a whole gateway with its page, a saved change that
// needs a restart is pending (GET /status names the settings and the
// parts; GET /config shows what was saved; what changes live, the gateway
// id, changed at once); saving a setting back to its running value takes it
// off the list; "Restart now" stops the gateway cleanly (Run returns
// ErrRestart within the stop budget), and the gateway started again on
// its file runs the saved config with nothing pending. Page readers run
// throughout, so -race sees the configs read while they change.
func TestRestartPending(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Gateway.DataDir = filepath.Join(dir, "data")
	cfg.Gateway.StopBudget = 5 * time.Second
	cfg.Broker.Listeners.TCP.Address = "127.0.0.1:0"
	cfg.Broker.Listeners.WebSocket.Enabled = false
	cfg.MQTTSN.Enabled, cfg.CoAP.Enabled = false, false
	cfg.Web.Address = "127.0.0.1:0"
	cfg.Web.MDNS = false
	cfgPath := filepath.Join(dir, "fieldgate.yaml")
	data, err := config.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	base, cancel, done := runPage(t, cfgPath)
	defer cancel()
	admin := newPageClient(base)
	setupCode, err := os.ReadFile(filepath.Join(cfg.Gateway.DataDir, appliance.SetupCodeFile))
	if err != nil {
		t.Fatal(err)
	}
	code, body, err := admin.do("POST", "/api/v1/setup", map[string]string{"password": "correct horse battery", "gateway_id": "site-1", "setup_code": strings.TrimSpace(string(setupCode))})
	if err != nil || code != 200 {
		t.Fatalf("setup: %d %v %v", code, body, err)
	}
	admin.csrf = body["csrf"].(string)
	get := func(c *pageClient, path string) map[string]any {
		t.Helper()
		code, m, err := c.do("GET", path, nil)
		if err != nil || code != 200 {
			t.Fatalf("GET %s: %d %v", path, code, err)
		}
		return m
	}
	restartOf := func(st map[string]any) (keys, parts []string) {
		r := st["restart"].(map[string]any)
		for _, k := range r["keys"].([]any) {
			keys = append(keys, k.(map[string]any)["key"].(string))
		}
		for _, p := range r["parts"].([]any) {
			parts = append(parts, p.(string))
		}
		if (len(keys) > 0) != r["needed"].(bool) {
			t.Fatalf("restart %v: needed does not match the keys", r)
		}
		return keys, parts
	}
	if keys, _ := restartOf(get(admin, "/api/v1/status")); len(keys) != 0 {
		t.Fatalf("pending at start: %v", keys)
	}

	// Readers of the page while the config changes.
	stopReaders := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			c := &pageClient{base: admin.base, c: admin.c}
			for {
				select {
				case <-stopReaders:
					return
				default:
				}
				for _, p := range []string{"/api/v1/status", "/api/v1/config", "/metrics"} {
					if code, _, err := c.do("GET", p, nil); code != 200 { // /metrics is no JSON: err
						t.Errorf("GET %s: %d %v", p, code, err)
					}
				}
			}
		}()
	}

	running := get(admin, "/api/v1/config")
	change := func(edit func(m map[string]any)) []string {
		t.Helper()
		m := get(admin, "/api/v1/config")
		edit(m)
		code, body, err := admin.do("PUT", "/api/v1/config", m)
		if err != nil || code != 200 {
			t.Fatalf("PUT config: %d %v %v", code, body, err)
		}
		var restart []string
		for _, k := range body["restart"].([]any) {
			restart = append(restart, k.(string))
		}
		return restart
	}
	sys := func(m map[string]any) map[string]any { return m["broker"].(map[string]any) }
	gw := func(m map[string]any) map[string]any { return m["gateway"].(map[string]any) }
	restart := change(func(m map[string]any) {
		sys(m)["sys_interval"] = "7s"
		gw(m)["memory_budget_mb"] = 128
		gw(m)["id"] = "renamed"
	})
	wantKeys := []string{"gateway.memory_budget_mb", "broker.sys_interval"}
	if !slices.Equal(restart, wantKeys) {
		t.Fatalf("PUT answered restart %v, want %v", restart, wantKeys)
	}
	st := get(admin, "/api/v1/status")
	keys, parts := restartOf(st)
	if !slices.Equal(keys, wantKeys) || !slices.Equal(parts, []string{"gateway", "broker"}) {
		t.Fatalf("status: pending %v of parts %v", keys, parts)
	}
	if st["gateway_id"] != "renamed" {
		t.Fatalf("gateway id %v: it changes live", st["gateway_id"])
	}
	if saved := get(admin, "/api/v1/config"); sys(saved)["sys_interval"] != "7s" || fmt.Sprint(gw(saved)["memory_budget_mb"]) != "128" {
		t.Fatalf("GET /config does not show the saved values: %v %v", sys(saved)["sys_interval"], gw(saved)["memory_budget_mb"])
	}
	if file := fileAsAPI(t, cfgPath); sys(file)["sys_interval"] != "7s" {
		t.Fatalf("the file does not hold the saved config: %v", sys(file)["sys_interval"])
	}

	// Saved back to its running value, a setting is no longer pending.
	restart = change(func(m map[string]any) { sys(m)["sys_interval"] = sys(running)["sys_interval"] })
	if !slices.Equal(restart, []string{"gateway.memory_budget_mb"}) {
		t.Fatalf("after saving sys_interval back: restart %v", restart)
	}
	if keys, parts := restartOf(get(admin, "/api/v1/status")); !slices.Equal(keys, restart) || !slices.Equal(parts, []string{"gateway"}) {
		t.Fatalf("status after saving back: %v %v", keys, parts)
	}
	close(stopReaders)
	readers.Wait()

	// Restart now: a clean stop that says it wants to be started again.
	start := time.Now()
	if code, body, err := admin.do("POST", "/api/v1/restart", nil); err != nil || code != 202 {
		t.Fatalf("restart: %d %v %v", code, body, err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrRestart) {
			t.Fatalf("Run = %v, want ErrRestart", err)
		}
		if joined, ok := err.(interface{ Unwrap() []error }); ok && len(joined.Unwrap()) != 1 {
			t.Fatalf("the stop for the restart was not clean: %v", err)
		}
	case <-time.After(cfg.Gateway.StopBudget + 5*time.Second):
		t.Fatal("the gateway did not stop for the restart")
	}
	took := time.Since(start)

	// Started again on its file (as cmd/fieldgate does): nothing pending,
	// the saved value runs.
	base, cancel2, done2 := runPage(t, cfgPath)
	defer func() {
		cancel2()
		if err := <-done2; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	again := newPageClient(base)
	code, body, err = again.do("POST", "/api/v1/login", map[string]string{"password": "correct horse battery"})
	if err != nil || code != 200 {
		t.Fatalf("login after the restart: %d %v %v", code, body, err)
	}
	st = get(again, "/api/v1/status")
	if keys, _ := restartOf(st); len(keys) != 0 || st["gateway_id"] != "renamed" {
		t.Fatalf("after the restart: pending %v, gateway id %v", keys, st["gateway_id"])
	}
	if got := fmt.Sprint(gw(get(again, "/api/v1/config"))["memory_budget_mb"]); got != "128" {
		t.Fatalf("memory_budget_mb %s after the restart", got)
	}
	t.Logf("restart requested → Run returned in %v (stop budget %v)", took.Round(time.Millisecond), cfg.Gateway.StopBudget)
}
