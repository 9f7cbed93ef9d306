package mqtt

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/store"
)

// testBroker is a broker on loopback with free ports, stopped at test end.
type testBroker struct {
	*Broker
	cfg    Config
	db     *store.DB
	cancel context.CancelFunc
	done   chan error
}

// testConfig is the default config on loopback, port 0, WebSocket on.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Listeners.TCP.Address = "127.0.0.1:0"
	cfg.Listeners.WebSocket.Address = "127.0.0.1:0"
	cfg.Listeners.TLS.Address = "127.0.0.1:0"
	cfg.SysInterval = time.Second
	return cfg
}

// startBroker starts a broker with the test config changed by mutate. With
// dbPath "" it gets a fresh bbolt file in t.TempDir(); pass a path to reuse
// one across restarts, or "-" for no store.
func startBroker(t testing.TB, dbPath string, mutate func(*Config)) *testBroker {
	t.Helper()
	cfg := testConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config invalid: %v", err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if os.Getenv("FIELDGATE_TEST_DEBUG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	var db *store.DB
	if dbPath != "-" {
		if dbPath == "" {
			dbPath = filepath.Join(t.TempDir(), "broker.db")
		}
		var err error
		db, err = store.Open(dbPath, store.Options{Logger: log})
		if err != nil {
			t.Fatalf("open store: %v", err)
		}
	}
	b, err := New(cfg, Options{Logger: log, Store: testStore(db), Version: "test"})
	if err != nil {
		if db != nil {
			_ = db.Close()
		}
		t.Fatalf("new broker: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb := &testBroker{Broker: b, cfg: cfg, db: db, cancel: cancel, done: make(chan error, 1)}
	go func() { tb.done <- b.Run(ctx) }()
	t.Cleanup(tb.stop)
	return tb
}

// stop stops the broker gracefully and closes its store; it is idempotent.
func (tb *testBroker) stop() {
	if tb.cancel == nil {
		return
	}
	tb.cancel()
	<-tb.done
	tb.cancel = nil
	if tb.db != nil {
		_ = tb.db.Close()
	}
}

// tcpURL is the broker's TCP address as a URL for client libraries.
func (tb *testBroker) tcpURL() string { return "tcp://" + tb.Addr("tcp") }

// testWriter sends log output to t.Log, so it shows only for failing tests.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}
