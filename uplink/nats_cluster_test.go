package uplink

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/fieldgate/fieldgate/internal/peertest"
	"github.com/fieldgate/fieldgate/internal/testwait"
	"github.com/fieldgate/fieldgate/store"
)

// natsNode is one nats-server of a 3-node cluster in a child process, with
// JetStream (its own store directory) and its MQTT 3.1.1 listener.
type natsNode struct {
	name                   string
	host                   string // each node on its own loopback address
	client, route, mqttPrt int
	conf, log              string
	cmd                    *exec.Cmd
}

// startNATSCluster starts three clustered nats-server nodes on loopback
// and waits until each one's MQTT listener accepts an MQTT session (which
// needs the JetStream meta group, so the cluster has formed).
func startNATSCluster(t *testing.T) []*natsNode {
	t.Helper()
	bin := peertest.Need(t, "nats-server", "nats-server")
	nodes := make([]*natsNode, 3)
	for i := range nodes {
		nodes[i] = &natsNode{name: fmt.Sprintf("n%d", i+1), host: fmt.Sprintf("127.0.0.%d", i+1), client: freePort(t), route: freePort(t), mqttPrt: freePort(t)}
	}
	var routes []string
	for _, n := range nodes {
		routes = append(routes, fmt.Sprintf("nats-route://%s:%d", n.host, n.route))
	}
	for _, n := range nodes {
		dir := t.TempDir()
		n.conf = filepath.Join(dir, "nats.conf")
		conf := fmt.Sprintf(`server_name: %s
listen: %[2]s:%[3]d
jetstream { store_dir: %[4]q, max_memory_store: 64MB, max_file_store: 2GB }
cluster { name: cloud, listen: %[2]s:%[5]d, routes: [%[6]s] }
mqtt { listen: %[2]s:%[7]d }
`, n.name, n.host, n.client, filepath.Join(dir, "js"), n.route, strings.Join(routes, ", "), n.mqttPrt)
		if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		n.log = filepath.Join(dir, "nats.log")
		n.cmd = exec.Command(bin, "-c", n.conf, "-l", n.log)
		n.cmd.Stdout, n.cmd.Stderr = nil, nil
		if err := n.cmd.Start(); err != nil {
			t.Fatalf("nats-server %s: %v", n.name, err)
		}
		t.Cleanup(n.kill)
	}
	for _, n := range nodes {
		testwait.NoError(t, 60*time.Second, func() error {
			c, err := natsMQTTClient(n, "probe-"+n.name, true, nil)
			if err != nil {
				return fmt.Errorf("nats-server %s: MQTT not ready: %w", n.name, err)
			}
			c.disconnect()
			return nil
		})
	}
	return nodes
}

// kill ends the node with SIGKILL (kill -9) and reaps it.
func (n *natsNode) kill() {
	if n.cmd != nil && n.cmd.Process != nil {
		_ = n.cmd.Process.Kill()
		_ = n.cmd.Wait()
		n.cmd = nil
	}
}

// natsMQTTClient connects an MQTT 3.1.1 session to the node (nats-server
// 2.9 speaks MQTT 3.1.1 only, so the test client is paho.mqtt.golang, the
// bridge's own library, not paho.golang).
func natsMQTTClient(n *natsNode, id string, clean bool, onMsg func(topic string, payload []byte)) (*client311, error) {
	return dial311(net.JoinHostPort(n.host, strconv.Itoa(n.mqttPrt)), id, clean, onMsg)
}

// client311 is an MQTT 3.1.1 test client.
type client311 struct{ c paho.Client }

func dial311(addr, id string, clean bool, onMsg func(topic string, payload []byte)) (*client311, error) {
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetCleanSession(clean).SetProtocolVersion(4).SetAutoReconnect(false).
		SetConnectRetry(false).SetOrderMatters(true).SetConnectTimeout(5 * time.Second)
	if onMsg != nil {
		o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { onMsg(m.Topic(), m.Payload()) })
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect %s: no CONNACK in 10 s", addr)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	return &client311{c: c}, nil
}

func (c *client311) subscribe(filter string, qos byte) error {
	tok := c.c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(10 * time.Second) {
		return fmt.Errorf("subscribe %s: no SUBACK in 10 s", filter)
	}
	return tok.Error()
}

func (c *client311) disconnect() { c.c.Disconnect(250) }

// TestFailoverInNATSCluster drains 100,000 QoS 1 messages from the outbox
// into a real 3-node nats-server cluster (JetStream, MQTT listener on each
// node, all three in the uplink's servers list) and kills -9 the node the
// bridge is connected to in the middle of the drain. The bridge must fail
// over to another node; a subscriber on the third node must receive every
// message, in order per topic; duplicates (resends of what was in flight)
// are counted and reported.
func TestFailoverInNATSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3-node cluster and 100,000 messages")
	}
	t.Parallel()
	nodes := startNATSCluster(t)

	const topics, perTopic = 4, 25000
	const total = topics * perTopic

	// The outbox holds the whole backlog before the bridge starts, as
	// after a long outage.
	dir := filepath.Join(t.TempDir(), "outbox")
	q, err := store.OpenOutbox(store.OutboxOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for i := range perTopic {
		recs := make([]store.OutboxRecord, 0, topics)
		for k := range topics {
			r := record{Topic: fmt.Sprintf("gateways/gw1/sensors/s%d/v", k), Payload: []byte(strconv.Itoa(i)), QoS: 1}
			recs = append(recs, store.OutboxRecord{Data: r.encode()})
		}
		if _, err := q.Append(context.Background(), recs...); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	// The cloud's consumer: a persistent QoS 1 session on the third node.
	var (
		mu  sync.Mutex
		got = map[string][]string{}
		n   int
	)
	sub, err := natsMQTTClient(nodes[2], "cloud-sub", false, func(topic string, payload []byte) {
		mu.Lock()
		got[topic] = append(got[topic], string(payload))
		n++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.disconnect()
	if err := sub.subscribe("gateways/#", 1); err != nil {
		t.Fatal(err)
	}
	received := func() int { mu.Lock(); defer mu.Unlock(); return n }

	var servers []Server
	for _, nd := range nodes {
		servers = append(servers, Server{Host: nd.host, TCPPort: nd.mqttPrt})
	}
	cfg := testConfig(servers...)
	cfg.Transport = TransportTCP
	cfg.Inflight = 256
	cfg.Connections = 4
	start := time.Now()
	e := startEdge(t, cfg, store.OutboxOptions{Dir: dir})
	eventually(t, "connected to the cluster", func() bool { return e.bridge.Status().Connected })
	first := e.bridge.Status().Server

	// Kill -9 the node the bridge is connected to once a fifth has arrived.
	testwait.NoError(t, 2*time.Minute, func() error {
		if n := received(); n < total/5 {
			return fmt.Errorf("only %d of %d messages", n, total)
		}
		return nil
	})
	var victim *natsNode
	for _, nd := range nodes {
		if nd.host == first {
			victim = nd
		}
	}
	if victim == nil || victim == nodes[2] {
		t.Fatalf("bridge connected to %s, which is not n1 or n2", first)
	}
	atKill := received()
	t.Logf("%d received %s after the bridge started", atKill, time.Since(start))
	killed := time.Now()
	victim.kill()
	testwait.NoError(t, time.Minute, func() error {
		if st := e.bridge.Status(); !st.Connected || st.Server == first {
			return fmt.Errorf("no failover after %s was killed: %+v", victim.name, st)
		}
		return nil
	})
	failover := time.Since(killed)

	// Everything arrives, each topic in order; the rest is duplicates.
	drained := testwait.Until(8*time.Minute, func() bool {
		mu.Lock()
		complete := len(got) == topics
		for _, ps := range got {
			if len(ps) < perTopic {
				complete = false
			}
		}
		mu.Unlock()
		return complete && e.outbox.Stats().Depth == 0
	})
	if !drained {
		t.Logf("status %+v", e.bridge.Status())
		for _, nd := range nodes {
			b, _ := os.ReadFile(nd.log)
			lines := strings.Split(string(b), "\n")
			var keep []string
			for _, l := range lines {
				if strings.Contains(l, "leader") || strings.Contains(l, "gw1") && !strings.Contains(l, "Readloop") || strings.Contains(l, "cloud-sub") || strings.Contains(l, "JetStream") && !strings.Contains(l, "route") {
					keep = append(keep, l)
				}
			}
			t.Logf("%s log:\n%s", nd.name, strings.Join(keep, "\n"))
		}
		t.Fatalf("%d messages received (%d distinct needed) 8 minutes after the failover; outbox depth %d", received(), total, e.outbox.Stats().Depth)
	}
	time.Sleep(500 * time.Millisecond) // kept sleep: a window for late duplicates, which may or may not come
	mu.Lock()
	dups := checkInOrder(t, got, perTopic)
	mu.Unlock()
	t.Logf("3-node nats-server cluster: %d messages drained in %s; %s (n=%s) killed after %d received; failover to another node in %s; 0 lost, %d duplicates (%.2f%%)",
		total, time.Since(start).Round(time.Millisecond), victim.name, first, atKill, failover.Round(time.Millisecond), dups, 100*float64(dups)/total)
}
