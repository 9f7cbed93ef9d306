package gateway

import (
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pahomqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/gateway/supervise"
	"github.com/fieldgate/fieldgate/internal/testwait"
	"github.com/fieldgate/fieldgate/uplink"
)

// TestOutboxWriterWedged wedges the outbox writer of a whole gateway (its
// commit blocks in a test hook, as in an fsync that never returns) while a
// QoS 1 publish that a forward rule selects waits for it: the "outbox" part
// is reported stuck and restarted within its bound, then, still wedged past
// its restarts, unhealthy (/readyz 503, $SYS/fieldgate/parts names it);
// once the commit goes through, the message is in the outbox and the
// gateway is ready again.
func TestOutboxWriterWedged(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Gateway.DataDir = filepath.Join(dir, "data")
	cfg.Broker.Listeners.TCP.Address = "127.0.0.1:0"
	cfg.Broker.Listeners.WebSocket.Enabled = false
	cfg.MQTTSN.Enabled, cfg.CoAP.Enabled = false, false
	cfg.Web.Enabled, cfg.Web.Address, cfg.Web.MetricsAuth, cfg.Web.MDNS = true, "127.0.0.1:0", false, false
	cfg.Broker.SysInterval = 200 * time.Millisecond
	// An uplink whose cloud is not there: the outbox keeps what is forwarded.
	cfg.Uplink.Enabled = true
	cfg.Uplink.Transport = "tcp"
	cfg.Uplink.Servers = []uplink.Server{{Host: "127.0.0.1", TCPPort: 1}}
	cfg.Uplink.Forward = []uplink.ForwardRule{{Filter: "sensors/#", RemoteTopic: "{topic}", QoS: 1}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}

	const bound = 500 * time.Millisecond
	var (
		mu      sync.Mutex
		wedged  bool
		release = make(chan struct{})
		entered = make(chan struct{}, 1)
	)
	hook := func() {
		mu.Lock()
		w := wedged
		mu.Unlock()
		if w {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-release
		}
	}
	var releaseOnce sync.Once
	unwedge := func() {
		mu.Lock()
		wedged = false
		mu.Unlock()
		releaseOnce.Do(func() { close(release) })
	}
	defer unwedge()

	g := startInProcess(t, Options{
		Config:      cfg,
		outboxHook:  hook,
		outboxBound: bound,
		supervise:   &supervise.Options{MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxFailures: 2, CheckEvery: 50 * time.Millisecond, ResetAfter: 2 * time.Second},
	})
	defer func() {
		unwedge()
		g.cancel()
		if err := <-g.done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	web := g.web(t)
	get := func(path string) (int, string) {
		t.Helper()
		return httpGet(t, web+path)
	}
	poll := func(what string, d time.Duration, ok func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		testwait.For(t, d, what, ok)
		return time.Since(start)
	}
	// Healthy and idle: nothing waits, so an old last commit is no matter.
	if code, body := get("/readyz"); code != 200 {
		t.Fatalf("/readyz %d %s before the wedge", code, body)
	}
	mu.Lock()
	wedged = true
	mu.Unlock()
	c := pahomqtt.NewClient(pahomqtt.NewClientOptions().AddBroker("tcp://" + g.logs.attr("fieldgate started", "mqtt_tcp")).SetClientID("wedge-pub"))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	wedgedAt := time.Now()
	pub := c.Publish("sensors/boiler/temp", 1, false, "71.5") // its PUBACK waits for the commit
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer never tried to commit the forwarded message")
	}

	var metrics string
	stuckAfter := poll("the outbox part restarted for being stuck", 10*time.Second, func() bool {
		_, metrics = get("/metrics")
		return !strings.Contains(metrics, `fieldgate_part_restarts_total{part="outbox"} 0`) &&
			strings.Contains(metrics, `fieldgate_part_restarts_total{part="outbox"}`)
	})
	if stuckAfter > bound+2*time.Second {
		t.Errorf("stuck restart after %v, bound %v", stuckAfter, bound)
	}
	if !strings.Contains(g.logs.attr("part stuck: no progress within its bound; restarting it", "part"), "outbox") {
		t.Error("the stuck restart is not logged with the part's name")
	}
	unhealthyAfter := poll("/readyz failing with the writer wedged past its restarts", 15*time.Second, func() bool {
		code, _ := get("/readyz")
		_, metrics = get("/metrics")
		return code == http.StatusServiceUnavailable && strings.Contains(metrics, `fieldgate_part_healthy{part="outbox"} 0`)
	})
	sinceWedge := time.Since(wedgedAt)
	if pub.WaitTimeout(0) {
		t.Fatal("the publish was acknowledged while the outbox writer was wedged")
	}
	for _, p := range []string{"probe", "uplink", "board"} {
		if !strings.Contains(metrics, `fieldgate_part_healthy{part="`+p+`"} 1`) {
			t.Errorf("part %s not healthy while only the outbox is wedged", p)
		}
	}

	// The commit goes through: the publish is acknowledged, the writer's
	// part is healthy again, and so is the gateway.
	unwedge()
	if !pub.WaitTimeout(10*time.Second) || pub.Error() != nil {
		t.Fatalf("the publish was not acknowledged after the commit: %v", pub.Error())
	}
	backAfter := poll("/readyz back to 200", 15*time.Second, func() bool {
		code, _ := get("/readyz")
		return code == 200
	})
	t.Logf("outbox writer wedged (bound %v, %d restarts allowed): stuck restart %v after the commit blocked, /readyz 503 %v later (%v after the wedge), ready again %v after the commit went through",
		bound, 2, stuckAfter.Round(time.Millisecond), unhealthyAfter.Round(time.Millisecond), sinceWedge.Round(time.Millisecond), backAfter.Round(time.Millisecond))
}
