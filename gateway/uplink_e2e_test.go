package gateway_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldgate/fieldgate/internal/testpki"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// End-to-end tests of the uplink: two fieldgate processes, an edge whose
// uplink forwards sensors/# over QUIC to a cloud fieldgate with a QUIC
// listener.

// cloudConfig is a fieldgate with TCP on its port and QUIC on quicPort.
func cloudConfig(pki *testpki.PKI, quicPort int) func(g *gateway) string {
	return func(g *gateway) string {
		return fmt.Sprintf(`version: 1
gateway: {id: cloud, data_dir: %q}
web: {enabled: false}
mqttsn: {enabled: false}
coap: {enabled: false}
broker:
  listeners:
    tcp: {enabled: true, address: "127.0.0.1:%d"}
    websocket: {enabled: false}
    tls: {cert: %q, key: %q}
    quic: {enabled: true, address: "127.0.0.1:%d"}
`, g.dataDir, g.port, pki.CertFile, pki.KeyFile, quicPort)
	}
}

// edgeConfig is a fieldgate whose uplink forwards sensors/# over QUIC.
func edgeConfig(pki *testpki.PKI, quicPort int, extra string) func(g *gateway) string {
	return func(g *gateway) string {
		return fmt.Sprintf(`version: 1
gateway: {id: edge1, data_dir: %q}
web: {enabled: false}
mqttsn: {enabled: false}
coap: {enabled: false}
broker:
  listeners:
    tcp: {enabled: true, address: "127.0.0.1:%d"}
    websocket: {enabled: false}
uplink:
  enabled: true
  transport: quic
  servers: [{host: 127.0.0.1, quic_port: %d}]
  tls: {ca: %q}
  backoff_min: 100ms
  backoff_max: 1s
  connect_timeout: 2s
  forward:
    - {filter: "sensors/#", remote_topic: "gateways/{gateway_id}/{topic}", qos: 1}
%s`, g.dataDir, g.port, quicPort, pki.CAFile, extra)
	}
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// mqttClient is an MQTT 5 client (paho.golang) counting what it receives.
type mqttClient struct {
	*paho.Client
	mu   sync.Mutex
	msgs map[string][]string // topic → payloads, in arrival order
	n    int
}

func connectClient(t *testing.T, addr, id string) (*mqttClient, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c := &mqttClient{msgs: map[string][]string{}}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(p paho.PublishReceived) (bool, error) {
			c.mu.Lock()
			c.msgs[p.Packet.Topic] = append(c.msgs[p.Packet.Topic], string(p.Packet.Payload))
			c.n++
			c.mu.Unlock()
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		conn.Close()
		return nil, err
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, nil
}

func (c *mqttClient) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// TestE2EUplinkKill9ZeroLoss: 10 QoS 1 publishers run against the edge; the
// edge is killed with SIGKILL mid-stream and started again. Every message a
// publisher saw acknowledged arrives in the cloud at least once, and each
// publisher's messages arrive in order (duplicates are reported).
func TestE2EUplinkKill9ZeroLoss(t *testing.T) {
	t.Parallel()
	pki := testpki.New(t, "e2e CA")
	quicPort := freeUDPPort(t)
	cloud := startGatewayWith(t, "", cloudConfig(pki, quicPort))
	sub, err := connectClient(t, cloud.addr, "cloud-sub")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "gateways/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	edge := startGatewayWith(t, "", edgeConfig(pki, quicPort, ""))

	const publishers = 10
	acked := make([]int, publishers) // highest acknowledged sequence number + 1
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for p := range publishers {
		c, err := connectClient(t, edge.addr, fmt.Sprintf("pub%d", p))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				r, err := c.Publish(pctx, &paho.Publish{Topic: fmt.Sprintf("sensors/p%d", p), QoS: 1, Payload: []byte(strconv.Itoa(seq))})
				cancel()
				if err != nil || r.ReasonCode != 0 {
					return // the edge is gone: what was acknowledged counts
				}
				acked[p] = seq + 1
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond) // kept sleep: the load window; the publishers must be mid-stream when kill -9 comes
	edge.stop(syscall.SIGKILL)
	close(stop)
	wg.Wait()
	total := 0
	for _, n := range acked {
		total += n
	}
	if total == 0 {
		t.Fatal("no publish was acknowledged before the kill")
	}
	edge.start()

	testwait.NoError(t, 30*time.Second, func() error {
		missing := 0
		sub.mu.Lock()
		for p := range publishers {
			seen := map[string]bool{}
			for _, v := range sub.msgs[fmt.Sprintf("gateways/edge1/sensors/p%d", p)] {
				seen[v] = true
			}
			for seq := range acked[p] {
				if !seen[strconv.Itoa(seq)] {
					missing++
				}
			}
		}
		sub.mu.Unlock()
		if missing > 0 {
			return fmt.Errorf("%d of %d acknowledged messages never reached the cloud", missing, total)
		}
		return nil
	})
	// Order per publisher, ignoring resends of what came before.
	dups := 0
	sub.mu.Lock()
	for p := range publishers {
		next := 0
		for _, v := range sub.msgs[fmt.Sprintf("gateways/edge1/sensors/p%d", p)] {
			n, _ := strconv.Atoi(v)
			switch {
			case n == next:
				next++
			case n < next:
				dups++
			default:
				t.Errorf("publisher %d: %d arrived before %d", p, n, next)
			}
		}
	}
	received := sub.n
	sub.mu.Unlock()
	t.Logf("kill -9 under load: %d messages acknowledged by the edge before the kill, all %d in the cloud (%d received, %d duplicates after the restart)", total, total, received, dups)
}

// TestE2EUplinkCorruptOutbox: a damaged outbox segment at start is reported
// in the log, the gateway runs (no crash loop), and the readable messages
// still reach the cloud.
func TestE2EUplinkCorruptOutbox(t *testing.T) {
	t.Parallel()
	pki := testpki.New(t, "e2e CA")
	quicPort := freeUDPPort(t)
	// The edge starts with the cloud down and queues 50 messages.
	edge := startGatewayWith(t, "", edgeConfig(pki, quicPort, ""))
	for i := range 50 {
		edge.mustPub("-q", "1", "-t", "sensors/a", "-m", strconv.Itoa(i))
	}
	if code, _ := edge.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	// Damage: a segment full of garbage beside the real one.
	dir := filepath.Join(edge.dataDir, "outbox")
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("outbox dir: %v %v", entries, err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	t.Logf("outbox files: %v", names)
	garbage := strings.Repeat("\xde\xad\xbe\xef", 4096)
	bad := filepath.Join(dir, strings.Replace(entries[0].Name(), "0", "9", 1))
	if err := os.WriteFile(bad, []byte(garbage), 0o600); err != nil {
		t.Fatal(err)
	}

	cloud := startGatewayWith(t, "", cloudConfig(pki, quicPort))
	sub, err := connectClient(t, cloud.addr, "cloud-sub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "gateways/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	edge.start()
	if !waitFor(20*time.Second, func() bool { return sub.count() >= 50 }) {
		t.Fatalf("cloud got %d of the 50 readable messages\n%s", sub.count(), edge.log)
	}
	if !strings.Contains(strings.ToLower(edge.log.String()), "corrupt") {
		t.Errorf("the damaged segment is not reported in the log:\n%s", edge.log)
	}
	if !edge.running() {
		t.Fatal("edge exited")
	}
}

// TestE2EBoardInSys: the board's identity and health are on
// $SYS/fieldgate/board (retained JSON), with the gateway id derived from it.
func TestE2EBoardInSys(t *testing.T) {
	t.Parallel()
	g := startGateway(t, "")
	sub := g.startSub(t, "-t", "$SYS/fieldgate/board", "-C", "1", "-W", "10")
	got := sub.wait(15 * time.Second)
	if len(got) != 1 || !strings.Contains(got[0], `"identity"`) || !strings.Contains(got[0], `"gateway_id"`) {
		t.Fatalf("$SYS/fieldgate/board: %q", got)
	}
}
