package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pahomqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/gateway/supervise"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// syncBuf is a log sink the test reads while the gateway writes.
type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// attr returns the string attribute key of the first JSON log record with
// message msg.
func (b *syncBuf) attr(msg, key string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			switch v := rec[key].(type) {
			case string:
				return v
			case map[string]any: // a *net.TCPAddr
				return net.JoinHostPort(fmt.Sprint(v["IP"]), fmt.Sprint(v["Port"]))
			}
			return ""
		}
	}
	return ""
}

// TestSupervisedPartRestarted runs the whole gateway with two extra parts:
// one that fails twice and then runs, one that always fails. The first is
// restarted and counted on /metrics and stays healthy; the second, still
// failing after its restarts, makes /readyz fail and is named unhealthy on
// $SYS/fieldgate/parts.
func TestSupervisedPartRestarted(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Gateway.DataDir = filepath.Join(dir, "data")
	cfg.Broker.Listeners.TCP.Address = "127.0.0.1:0"
	cfg.Broker.Listeners.WebSocket.Enabled = false
	cfg.MQTTSN.Enabled, cfg.CoAP.Enabled = false, false
	cfg.Web.Enabled, cfg.Web.Address, cfg.Web.MetricsAuth, cfg.Web.MDNS = true, "127.0.0.1:0", false, false
	cfg.Broker.SysInterval = 200 * time.Millisecond

	var flakyRuns atomic.Int32
	broken := make(chan struct{}) // closed to let "broken" recover
	var brokenOnce sync.Once
	fix := func() { brokenOnce.Do(func() { close(broken) }) }
	defer fix()
	g := startInProcess(t, Options{
		Config: cfg,
		extraParts: []supervise.Part{
			{Name: "flaky", Run: func(ctx context.Context) error {
				if flakyRuns.Add(1) <= 2 {
					return errors.New("flaky failure")
				}
				<-ctx.Done()
				return nil
			}},
			{Name: "broken", Run: func(ctx context.Context) error {
				select {
				case <-broken:
					<-ctx.Done()
					return nil
				default:
					return errors.New("broken for good")
				}
			}},
		},
		supervise: &supervise.Options{MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, MaxFailures: 3, ResetAfter: 500 * time.Millisecond},
	})
	web := g.web(t)
	get := func(path string) (int, string) {
		t.Helper()
		return httpGet(t, web+path)
	}
	poll := func(what string, ok func() bool) {
		t.Helper()
		testwait.For(t, 15*time.Second, what, ok)
	}

	var metrics string
	poll("flaky restarted twice and broken unhealthy on /metrics", func() bool {
		_, metrics = get("/metrics")
		return strings.Contains(metrics, `fieldgate_part_restarts_total{part="flaky"} 2`) &&
			strings.Contains(metrics, `fieldgate_part_healthy{part="broken"} 0`)
	})
	for _, want := range []string{
		`fieldgate_part_up{part="flaky"} 1`,
		`fieldgate_part_healthy{part="flaky"} 1`,
		`fieldgate_part_up{part="modbus"}`,
		`fieldgate_part_state{part="probe",state="running"} 1`,
		`fieldgate_part_last_progress_seconds{part="probe"}`,
		`fieldgate_part_restarts_total{part="uplink"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	code, body := get("/readyz")
	if code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d %s with a part failing past its restarts", code, body)
	}

	// $SYS/fieldgate/parts names the unhealthy part.
	c := pahomqtt.NewClient(pahomqtt.NewClientOptions().AddBroker("tcp://" + g.logs.attr("fieldgate started", "mqtt_tcp")).SetClientID("parts-watcher"))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	got := make(chan partsStatus, 100)
	tok := c.Subscribe("$SYS/fieldgate/parts", 0, func(_ pahomqtt.Client, m pahomqtt.Message) {
		var st partsStatus
		if json.Unmarshal(m.Payload(), &st) == nil {
			got <- st
		}
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	waitParts := func(healthy bool) partsStatus {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case st := <-got:
				if st.Healthy == healthy {
					return st
				}
			case <-deadline:
				t.Fatalf("no $SYS/fieldgate/parts with healthy=%v", healthy)
			}
		}
	}
	st := waitParts(false)
	if !strings.Contains(st.Error, "broken") || strings.Contains(st.Error, "flaky") {
		t.Errorf("parts error %q", st.Error)
	}
	names := map[string]bool{}
	for _, p := range st.Parts {
		names[p.Name] = true
	}
	for _, n := range []string{"uplink", "modbus", "serial", "web", "board", "probe", "flaky", "broken"} {
		if !names[n] {
			t.Errorf("$SYS/fieldgate/parts lacks %s: %+v", n, st.Parts)
		}
	}

	// Once the part runs again, the gateway is ready again.
	fix()
	poll("/readyz back to 200 after the part recovered", func() bool {
		code, _ := get("/readyz")
		return code == http.StatusOK
	})
	g.cancel()
	if err := <-g.done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestShutdownAbandonsPart stops a gateway one of whose parts ignores its
// context: Run returns within gateway.stop_budget with an error naming the
// part, which cmd/fieldgate turns into a non-zero exit.
func TestShutdownAbandonsPart(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Gateway.DataDir = filepath.Join(dir, "data")
	cfg.Gateway.StopBudget = 2 * time.Second
	cfg.Broker.Listeners.TCP.Address = "127.0.0.1:0"
	cfg.Broker.Listeners.WebSocket.Enabled = false
	cfg.Web.Enabled, cfg.MQTTSN.Enabled, cfg.CoAP.Enabled = false, false, false
	release := make(chan struct{})
	defer close(release)
	g := startInProcess(t, Options{
		Config: cfg,
		extraParts: []supervise.Part{{Name: "deaf", Run: func(context.Context) error {
			<-release
			return nil
		}}},
	})
	start := time.Now()
	g.cancel()
	var err error
	select {
	case err = <-g.done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "deaf") {
		t.Fatalf("Run = %v, want an error naming the abandoned part", err)
	}
	// The budget plus a little for closing the files.
	if took > cfg.Gateway.StopBudget+time.Second {
		t.Fatalf("shutdown took %v, budget %v", took, cfg.Gateway.StopBudget)
	}
	if g.logs.attr("part did not stop in time; abandoned", "part") != "deaf" {
		t.Error("the abandoned part is not named in the log")
	}
	t.Logf("shutdown with an abandoned part took %v (budget %v)", took.Round(time.Millisecond), cfg.Gateway.StopBudget)
}
