package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"
)

// inProcess is a gateway run in the test's process by startInProcess.
type inProcess struct {
	logs   *syncBuf
	done   chan error // Run's result, once it returns
	cancel context.CancelFunc
}

// startInProcess runs the gateway with opts (its Logger writing JSON to
// logs, Ready set here) and waits until it is ready. The caller stops it
// with cancel and reads Run's result from done.
func startInProcess(t *testing.T, opts Options) *inProcess {
	t.Helper()
	g := &inProcess{logs: &syncBuf{}, done: make(chan error, 1)}
	ready := make(chan struct{})
	opts.Logger = slog.New(slog.NewJSONHandler(g.logs, nil))
	opts.Ready = ready
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	go func() { g.done <- Run(ctx, opts) }()
	select {
	case <-ready:
	case err := <-g.done:
		cancel()
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("gateway not ready")
	}
	return g
}

// web is the setup page's base URL, as the gateway logged it.
func (g *inProcess) web(t *testing.T) string {
	t.Helper()
	addr := g.logs.attr("fieldgate started", "web")
	if addr == "" {
		g.logs.mu.Lock()
		defer g.logs.mu.Unlock()
		t.Fatalf("no web address logged:\n%s", g.logs.buf.String())
	}
	return "http://" + addr
}

// httpGet fetches url and returns the status code and body.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
