package gateway

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/internal/atomicfile"
)

// TestSystemdNotify runs the whole gateway with $NOTIFY_SOCKET pointing at
// a socket the test listens on (as systemd does for Type=notify): READY=1
// once it serves, STATUS= lines, WATCHDOG=1 pings while the health check
// (the bus probe) passes, RELOADING=1 around a reload, STOPPING=1 at the
// end. systemd itself does not run as PID 1 here; this is its protocol.
func TestSystemdNotify(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "400000") // pings every 200 ms

	cfg := config.Default()
	cfg.Gateway.DataDir = filepath.Join(dir, "data")
	cfg.Broker.Listeners.TCP.Address = "127.0.0.1:0"
	cfg.Broker.Listeners.WebSocket.Enabled = false
	cfg.Web.Enabled, cfg.MQTTSN.Enabled, cfg.CoAP.Enabled = false, false, false
	cfgPath := filepath.Join(dir, "fieldgate.yaml")
	data, err := config.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	reload := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{ConfigPath: cfgPath, Config: cfg, Logger: slog.New(slog.DiscardHandler), Reload: reload})
	}()

	msgs := make(chan string, 1000)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	seen := map[string]int{}
	wait := func(prefix string, n int) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for seen[prefix] < n {
			select {
			case m := <-msgs:
				for _, line := range strings.Split(m, "\n") {
					k, _, _ := strings.Cut(line, "=")
					seen[k]++
				}
			case <-deadline:
				t.Fatalf("waited for %d × %s; saw %v", n, prefix, seen)
			}
		}
	}
	wait("READY", 1)
	wait("WATCHDOG", 3)
	wait("STATUS", 1)
	reload <- struct{}{}
	wait("RELOADING", 1)
	wait("READY", 2)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	wait("STOPPING", 1)
	t.Logf("notifications: %v", seen)
}
