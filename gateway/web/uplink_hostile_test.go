package web

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/fieldgate/fieldgate/internal/secret"
	"github.com/fieldgate/fieldgate/uplink"
)

// startOn is start with a data dir, a Backend (which may wrap fb) and a
// bcrypt cost of the test's choosing.
func startOn(t *testing.T, cfg Config, backend Backend, fb *fakeBackend, dataDir string, opts Options) *harness {
	t.Helper()
	h := &harness{t: t, b: fb, dataDir: dataDir, clock: &fakeClock{now: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}}
	opts.DataDir, opts.Version, opts.Now, opts.Logger = dataDir, "test", h.clock.Now, slogTo(fb.ring)
	if opts.BcryptCost == 0 {
		opts.BcryptCost = bcrypt.MinCost
	}
	srv, err := New(cfg, backend, opts)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	h.base = "http://" + srv.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return h
}

// realUplink is the fake backend with the real connection test, so that
// what a test sends reaches real sockets.
type realUplink struct{ *fakeBackend }

func (r realUplink) TestUplink(ctx context.Context, c uplink.Config) error {
	return uplink.TestConnection(ctx, c, "gw-test")
}

// recorder is a TCP server that keeps every byte sent to it.
type recorder struct {
	ln    net.Listener
	mu    sync.Mutex
	conns int
	got   []byte
	wg    sync.WaitGroup
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				data, _ := io.ReadAll(c)
				r.mu.Lock()
				r.conns++
				r.got = append(r.got, data...)
				r.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); r.wg.Wait() })
	return r
}

func (r *recorder) port() int { return r.ln.Addr().(*net.TCPAddr).Port }

func (r *recorder) seen() (int, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns, string(r.got)
}

// TestHostileUplinkTestStoredPassword is issue 17 item 3: POST
// /api/v1/uplink/test with "password": "<redacted>" and servers pointed at
// any host sent the stored uplink password there in clear. A rogue server
// on 127.0.0.1 records what it gets: the stored password never reaches it,
// whatever the request changes, while a typed password and the stored
// server still work.
func TestHostileUplinkTestStoredPassword(t *testing.T) {
	const stored = "cloud-secret-pw"
	rogue, cloud := newRecorder(t), newRecorder(t)
	fb := newFakeBackend()
	fb.cfg.Uplink.Transport = "tcp"
	fb.cfg.Uplink.Servers = []uplink.Server{{Host: "127.0.0.1", TCPPort: cloud.port()}}
	fb.cfg.Uplink.Username = "gw"
	fb.cfg.Uplink.Password = secret.New(stored)
	fb.cfg.Uplink.ConnectTimeout = time.Second
	h := startOn(t, testConfig(), realUplink{fb}, fb, t.TempDir(), Options{})
	c := h.setUp()

	section := func(edit func(u map[string]any)) map[string]any {
		m, err := configMap(h.b.Config())
		if err != nil {
			t.Fatal(err)
		}
		u := m["uplink"].(map[string]any)
		if u["password"] != Redacted {
			t.Fatalf("the API shows the password as %v", u["password"])
		}
		edit(u)
		return u
	}
	evilCA, err := filepath.Abs(filepath.Join("testdata", "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	rogueServer := map[string]any{"host": "127.0.0.1", "tcp_port": rogue.port(), "tls_port": 0, "quic_port": 0}
	refused := []struct {
		name string
		edit func(u map[string]any)
	}{
		{"rogue server", func(u map[string]any) { u["servers"] = []any{rogueServer} }},
		{"rogue server after the stored one", func(u map[string]any) {
			u["servers"] = append(u["servers"].([]any), rogueServer)
		}},
		{"rogue by host name", func(u map[string]any) {
			u["servers"] = []any{map[string]any{"host": "localhost", "tcp_port": rogue.port()}}
		}},
		{"password left out", func(u map[string]any) {
			delete(u, "password")
			u["servers"] = []any{rogueServer}
			// Left out means empty here; a backend that merged it would
			// still be caught by the value check.
		}},
		{"tls server name", func(u map[string]any) {
			u["tls"].(map[string]any)["server_name"] = "evil.example"
		}},
		{"tls ca", func(u map[string]any) { u["tls"].(map[string]any)["ca"] = evilCA }},
		{"verification off", func(u map[string]any) { u["tls"].(map[string]any)["insecure_skip_verify"] = true }},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			body := section(tc.edit)
			_, typed := body["password"]
			code, resp, _ := c.do("POST", "/api/v1/uplink/test", body)
			if !typed {
				// Nothing stored goes out: the test may run, without a password.
				if code != 200 {
					t.Fatalf("%d %v", code, resp)
				}
				return
			}
			if code != 400 || !strings.Contains(resp["error"].(string), "stored") {
				t.Fatalf("want 400 naming the stored secret, got %d %v", code, resp)
			}
			if f := resp["fields"].([]any)[0].(map[string]any); f["field"] != "uplink.password" {
				t.Fatalf("field %v", f)
			}
		})
	}
	n, got := rogue.seen()
	t.Logf("rogue server: %d connections, %d bytes", n, len(got))
	if strings.Contains(got, stored) {
		t.Fatalf("the stored password reached the rogue server: %q", got)
	}
	if n > 1 { // only the "password left out" case may connect
		t.Fatalf("%d connections reached the rogue server", n)
	}

	// A typed password may go anywhere: the rogue server records it, which
	// shows that it would have recorded the stored one.
	code, resp, _ := c.do("POST", "/api/v1/uplink/test", section(func(u map[string]any) {
		u["servers"] = []any{rogueServer}
		u["password"] = "typed-by-the-caller"
	}))
	if code != 200 || resp["ok"] != false {
		t.Fatalf("typed password: %d %v", code, resp)
	}
	waitFor(t, func() bool { _, got := rogue.seen(); return strings.Contains(got, "typed-by-the-caller") })

	// The stored servers get the stored password, as the running uplink does.
	code, resp, _ = c.do("POST", "/api/v1/uplink/test", section(func(u map[string]any) {}))
	if code != 200 {
		t.Fatalf("stored settings: %d %v", code, resp)
	}
	waitFor(t, func() bool { _, got := cloud.seen(); return strings.Contains(got, stored) })
	if _, got := rogue.seen(); strings.Contains(got, stored) {
		t.Fatal("the stored password reached the rogue server")
	}
}
