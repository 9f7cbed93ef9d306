package opcua

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/secret"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// wait is the generous bound of every condition the tests wait for.
const wait = 20 * time.Second

// recorder keeps every message published on the bus.
type recorder struct {
	mu   sync.Mutex
	msgs []bus.Message
}

func (r *recorder) add(m bus.Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
}

// payloads returns the decoded payloads published on topic, in order.
func (r *recorder) payloads(topic string) []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, m := range r.msgs {
		if m.Topic != topic {
			continue
		}
		var v map[string]any
		d := json.NewDecoder(strings.NewReader(string(m.Payload)))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			v = map[string]any{"_raw": string(m.Payload)}
		}
		out = append(out, v)
	}
	return out
}

// last returns the last payload on topic, or nil.
func (r *recorder) last(topic string) map[string]any {
	p := r.payloads(topic)
	if len(p) == 0 {
		return nil
	}
	return p[len(p)-1]
}

// raw returns the last raw payload on topic.
func (r *recorder) raw(topic string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.msgs) - 1; i >= 0; i-- {
		if r.msgs[i].Topic == topic {
			return string(r.msgs[i].Payload)
		}
	}
	return ""
}

func (r *recorder) count(topic string) int { return len(r.payloads(topic)) }

// rig is a running service on an in-memory bus.
type rig struct {
	t    *testing.T
	bus  *bus.Memory
	svc  *Service
	rec  *recorder
	data string
	stop func()
}

// rigOptions are the service options a test may set; DataDir defaults to
// a temporary directory.
func newRig(t *testing.T, cfg Config, opts Options) *rig {
	t.Helper()
	r := &rig{t: t, bus: bus.NewMemory(nil), rec: &recorder{}}
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	r.data = opts.DataDir
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if _, err := r.bus.Subscribe("#", r.rec.add); err != nil {
		t.Fatal(err)
	}
	svc, err := New(cfg, r.bus, opts)
	if err != nil {
		t.Fatal(err)
	}
	r.svc = svc
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	r.stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(wait):
			t.Errorf("Run did not return within %s of the cancel", wait)
		}
	})
	t.Cleanup(r.stop)
	return r
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// waitStatus waits for the server's last status to have state.
func (r *rig) waitStatus(server, state string) map[string]any {
	r.t.Helper()
	var last map[string]any
	testwait.NoError(r.t, wait, func() error {
		last = r.rec.last("southbound/" + server + "/status")
		if last == nil || last["state"] != state {
			return fmt.Errorf("status of %s is %v, want %s", server, last, state)
		}
		return nil
	})
	return last
}

// waitValue waits for a payload on the point's topic that cond accepts.
func (r *rig) waitValue(server, point string, what string, cond func(map[string]any) bool) map[string]any {
	r.t.Helper()
	topic := "southbound/" + server + "/" + point
	var got map[string]any
	testwait.For(r.t, wait, what+" on "+topic, func() bool {
		for _, p := range r.rec.payloads(topic) {
			if cond(p) {
				got = p
				return true
			}
		}
		return false
	})
	return got
}

// set publishes a set command and waits for its result.
func (r *rig) set(server, point string, payload string) map[string]any {
	r.t.Helper()
	topic := "southbound/" + server + "/" + point + "/set"
	before := r.rec.count(topic + "/result")
	if err := r.bus.Publish(context.Background(), bus.Message{Topic: topic, Payload: []byte(payload)}); err != nil {
		r.t.Fatal(err)
	}
	testwait.For(r.t, wait, "the result of "+topic, func() bool { return r.rec.count(topic+"/result") > before })
	return r.rec.last(topic + "/result")
}

// appCertFile makes the gateway's application certificate in dataDir (as
// the service will find it) and returns its file, for the server to trust.
func appCertFile(t *testing.T, dataDir string) string {
	t.Helper()
	svc, err := New(Config{}, bus.NewMemory(nil), Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.ClientCertificate(); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dataDir, certDir, certFile)
	if _, err := os.Stat(f); err != nil {
		t.Fatal(err)
	}
	return f
}

func num(v any) float64 {
	switch x := v.(type) {
	case json.Number:
		f, _ := x.Float64()
		return f
	case float64:
		return x
	}
	return 0
}

func secretOf(s string) secret.String { return secret.New(s) }
