// Command uplinkbench measures the uplink's store-and-forward path on this
// machine and prints a table with the targets beside the numbers:
//
//   - durable ingest: 50 concurrent MQTT 3.1.1 QoS 1 publishers (raw
//     sockets, 8 in flight each) into a gateway, with a forward rule (every
//     message fsynced into the outbox before its PUBACK) and without one
//     (the broker alone), in messages/s;
//   - backlog drain: a backlog of -backlog messages is put in the outbox
//     while the cloud is away, then drained to a cloud fieldgate over QUIC
//     and over TLS on loopback, and over an emulated 50 ms / 1 % loss link
//     (-link-backlog messages), in messages/s;
//   - the data directory's size once the backlog has drained;
//   - end-to-end latency device → cloud while online, p50/p99, at a
//     steady 2,000 messages/s.
//
// The cloud is a second fieldgate broker in the same process, counting
// what arrives with an in-process subscription. The emulated link is a
// userspace relay (UDP for QUIC, TCP for TLS) adding 25 ms each way and,
// for UDP, dropping 1 % of datagrams at random: this kernel has no netem
// qdisc ("Specified qdisc kind is unknown"), so a network namespace pair
// with netem cannot be made here.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/gateway"
	"github.com/fieldgate/fieldgate/internal/testpki"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
	"github.com/fieldgate/fieldgate/store"
	"github.com/fieldgate/fieldgate/uplink"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "uplinkbench:", err)
		os.Exit(1)
	}
}

type result struct {
	name, value, target string
}

func run() error {
	backlog := flag.Int("backlog", 1_000_000, "messages in the backlog drained over loopback")
	linkBacklog := flag.Int("link-backlog", 200_000, "messages in the backlog drained over the emulated 50 ms link")
	ingestFor := flag.Duration("ingest", 5*time.Second, "duration of each ingest run")
	payload := flag.Int("payload", 200, "payload bytes")
	flag.Float64Var(&linkLoss, "link-loss", 0.01, "round-trip datagram loss of the emulated link (QUIC)")
	flag.IntVar(&linkConns, "link-connections", 16, "uplink connections over the emulated link")
	flag.Parse()

	dir, err := os.MkdirTemp("", "uplinkbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pki, err := testpki.Make(dir, "uplinkbench CA")
	if err != nil {
		return err
	}
	var results []result
	add := func(name, value, target string) {
		results = append(results, result{name, value, target})
		fmt.Fprintf(os.Stderr, "  %-52s %s\n", name, value)
	}

	for _, forward := range []bool{false, true} {
		rate, err := ingest(dir, pki, forward, *ingestFor, *payload)
		if err != nil {
			return fmt.Errorf("ingest: %w", err)
		}
		if forward {
			add("durable QoS 1 ingest, 50 publishers, forward rule", fmt.Sprintf("%.0f msg/s", rate), "≥ 20,000")
		} else {
			add("QoS 1 ingest, 50 publishers, no forward rule", fmt.Sprintf("%.0f msg/s", rate), "(the cost of durability)")
		}
	}
	for _, tr := range []string{uplink.TransportQUIC, uplink.TransportTLS} {
		rate, size, err := drain(dir, pki, tr, *backlog, *payload, false)
		if err != nil {
			return fmt.Errorf("drain %s: %w", tr, err)
		}
		target := "≥ 40,000"
		if tr == uplink.TransportTLS {
			target = "-"
		}
		add(fmt.Sprintf("drain %d backlog over %s, loopback", *backlog, tr), fmt.Sprintf("%.0f msg/s", rate), target)
		add(fmt.Sprintf("data dir after %d in and out (%s)", *backlog, tr), fmt.Sprintf("%.1f MB", float64(size)/1e6), "< 64 MB")
	}
	for _, tr := range []string{uplink.TransportQUIC, uplink.TransportTLS} {
		rate, _, err := drain(dir, pki, tr, *linkBacklog, *payload, true)
		if err != nil {
			return fmt.Errorf("drain %s over the link: %w", tr, err)
		}
		target := "≥ 10,000"
		if tr == uplink.TransportTLS {
			target = "-"
		}
		add(fmt.Sprintf("drain %d backlog over %s, 50 ms RTT, %.1f%% loss, %d connections", *linkBacklog, tr, linkLoss*100, linkConns), fmt.Sprintf("%.0f msg/s", rate), target)
	}
	p50, p99, err := latency(dir, pki, *payload)
	if err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	add("device → cloud latency over QUIC at 2,000 msg/s, p50 / p99", fmt.Sprintf("%.2f / %.2f ms", ms(p50), ms(p99)), "-")

	fmt.Println()
	fmt.Println("| uplink | measured | target |")
	fmt.Println("| --- | ---: | --- |")
	for _, r := range results {
		fmt.Printf("| %s | %s | %s |\n", r.name, r.value, r.target)
	}
	fmt.Println()
	fmt.Println("mosquitto has no comparable durable path (its bridge keeps messages in memory and saves them on an interval), so there is no mosquitto column.")
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

var quiet = slog.New(slog.DiscardHandler)

// linkLoss is the round-trip datagram loss of the emulated link, and
// linkConns the uplink connections used over it.
var (
	linkLoss  = 0.01
	linkConns = 16
)

// cloud is a fieldgate broker with TCP, TLS and QUIC listeners that counts
// what arrives on gateways/#.
type cloud struct {
	b      *mqtt.Broker
	count  atomic.Int64
	lat    []time.Duration
	latMu  sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

func startCloud(p *testpki.PKI, measureLatency bool) (*cloud, error) {
	cfg := mqtt.DefaultConfig()
	cfg.Listeners.TCP.Address = "127.0.0.1:0"
	cfg.Listeners.WebSocket.Enabled = false
	cfg.Listeners.TLS = mqtt.TLSListener{Enabled: true, Address: "127.0.0.1:0", TLSFiles: mqtt.TLSFiles{Cert: p.CertFile, Key: p.KeyFile, MinVersion: "1.2"}}
	cfg.Listeners.QUIC.Enabled = true
	cfg.Listeners.QUIC.Address = "127.0.0.1:0"
	b, err := mqtt.New(cfg, mqtt.Options{Logger: quiet})
	if err != nil {
		return nil, err
	}
	c := &cloud{b: b, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() { defer close(c.done); _ = b.Run(ctx) }()
	_, err = b.Subscribe("gateways/#", func(m bus.Message) {
		c.count.Add(1)
		if measureLatency && len(m.Payload) >= 8 {
			sent := time.Unix(0, int64(binary.BigEndian.Uint64(m.Payload)))
			c.latMu.Lock()
			c.lat = append(c.lat, time.Since(sent))
			c.latMu.Unlock()
		}
	})
	return c, err
}

func (c *cloud) stop() { c.cancel(); <-c.done }

// edge is a gateway: broker, outbox and bridge.
type edge struct {
	b      *mqtt.Broker
	q      *store.Outbox
	br     *uplink.Bridge
	dir    string
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startEdge(dir string, ucfg uplink.Config) (*edge, error) {
	cfg := mqtt.DefaultConfig()
	cfg.Listeners.TCP.Address = "127.0.0.1:0"
	cfg.Listeners.WebSocket.Enabled = false
	cfg.Limits.ReceiveMaximum = 65535
	b, err := mqtt.New(cfg, mqtt.Options{Logger: quiet})
	if err != nil {
		return nil, err
	}
	e := &edge{b: b, dir: filepath.Join(dir, "outbox")}
	e.q, err = store.OpenOutbox(store.OutboxOptions{Dir: e.dir, MaxBytes: 2 << 30, Logger: quiet})
	if err != nil {
		return nil, err
	}
	opts := uplink.Options{Bus: b, GatewayID: "bench", Logger: quiet}
	if ucfg.Enabled {
		opts.Outbox = gateway.UplinkOutbox(e.q)
	}
	e.br, err = uplink.New(ucfg, opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.wg.Go(func() { _ = b.Run(ctx) })
	return e, nil
}

func (e *edge) runBridge(ctx context.Context) {
	e.wg.Go(func() { _ = e.br.Run(ctx) })
}

func (e *edge) stop() {
	e.cancel()
	e.wg.Wait()
	e.br.Close()
	_ = e.q.Close()
}

func uplinkConfig(srv uplink.Server, transport, ca string) uplink.Config {
	c := uplink.DefaultConfig()
	c.Enabled = true
	c.Servers = []uplink.Server{srv}
	c.Transport = transport
	c.TLS.CA = ca
	c.BackoffMin = 50 * time.Millisecond
	c.BackoffMax = 500 * time.Millisecond
	c.Forward = []uplink.ForwardRule{{Filter: "sensors/#", RemoteTopic: "gateways/{gateway_id}/{topic}", QoS: 1}}
	return c
}

// ingest runs 50 raw QoS 1 publishers against an edge for d and returns
// the acknowledged messages/s. With forward, a rule selects every message
// (the server is unreachable: the outbox only grows).
func ingest(dir string, p *testpki.PKI, forward bool, d time.Duration, size int) (float64, error) {
	dir, _ = os.MkdirTemp(dir, "ingest-")
	ucfg := uplink.DefaultConfig()
	if forward {
		ucfg = uplinkConfig(uplink.Server{Host: "127.0.0.1", TCPPort: 1}, uplink.TransportTCP, "")
	}
	e, err := startEdge(dir, ucfg)
	if err != nil {
		return 0, err
	}
	defer e.stop()
	var acked atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	payload := make([]byte, size)
	for i := range 50 {
		wg.Go(func() {
			if err := publishQoS1(ctx, e.b.Addr("tcp"), fmt.Sprintf("pub%d", i), fmt.Sprintf("sensors/p%d", i), payload, 8, &acked); err != nil {
				errs <- err
			}
		})
	}
	start := time.Now()
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(acked.Load()) / time.Since(start).Seconds(), nil
}

// drain fills an outbox with n messages, then drains it to a cloud over
// transport and returns messages/s and the outbox directory size after.
func drain(dir string, p *testpki.PKI, transport string, n, size int, link bool) (float64, int64, error) {
	dir, _ = os.MkdirTemp(dir, "drain-")
	c, err := startCloud(p, false)
	if err != nil {
		return 0, 0, err
	}
	defer c.stop()
	srv := uplink.Server{Host: "127.0.0.1", QUICPort: portOf(c.b.Addr("quic")), TLSPort: portOf(c.b.Addr("tls"))}
	if link {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if transport == uplink.TransportQUIC {
			port, err := udpLink(ctx, c.b.Addr("quic"), 25*time.Millisecond, linkLoss)
			if err != nil {
				return 0, 0, err
			}
			srv.QUICPort = port
		} else {
			port, err := tcpLink(ctx, c.b.Addr("tls"), 25*time.Millisecond)
			if err != nil {
				return 0, 0, err
			}
			srv.TLSPort = port
		}
	}
	ucfg := uplinkConfig(srv, transport, p.CAFile)
	if link {
		// The window a 50 ms link needs for ≥ 10,000 msg/s (window ÷ RTT),
		// and several connections: one QUIC connection's congestion
		// control (NewReno) caps near 2,600 msg/s at 1 % loss.
		ucfg.Inflight = 1024
		ucfg.Connections = linkConns
	}
	e, err := startEdge(dir, ucfg)
	if err != nil {
		return 0, 0, err
	}
	defer e.stop()
	// Fill: the backlog an outage leaves behind.
	// 100 sensors' topics, as a site would have.
	batch := make([]store.OutboxRecord, 1000)
	for i := range batch {
		batch[i] = store.OutboxRecord{Data: uplinkRecord(fmt.Sprintf("gateways/bench/sensors/s%d", i%100), size)}
	}
	for i := 0; i < n; i += len(batch) {
		if _, err := e.q.Append(context.Background(), batch[:min(len(batch), n-i)]...); err != nil {
			return 0, 0, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	e.runBridge(ctx)
	deadline := start.Add(10 * time.Minute)
	for c.count.Load() < int64(n) {
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("drained only %d of %d", c.count.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	// Let the acknowledgements reach the outbox, then measure the disk.
	for e.q.Stats().Depth > 0 && time.Since(start) < took+30*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	return float64(n) / took.Seconds(), dirSize(e.dir), nil
}

// uplinkRecord is an outbox record as the forward tap writes it (version
// 1, QoS 1, topic, payload): see uplink/record.go.
func uplinkRecord(topic string, size int) []byte {
	b := []byte{1, 1}
	b = binary.AppendUvarint(b, uint64(len(topic)))
	b = append(b, topic...)
	return append(b, make([]byte, size)...)
}

// latency publishes QoS 1 at a steady 2,000 msg/s for 5 s through an edge
// connected over QUIC and returns p50 and p99 device → cloud.
func latency(dir string, p *testpki.PKI, size int) (time.Duration, time.Duration, error) {
	dir, _ = os.MkdirTemp(dir, "latency-")
	c, err := startCloud(p, true)
	if err != nil {
		return 0, 0, err
	}
	defer c.stop()
	e, err := startEdge(dir, uplinkConfig(uplink.Server{Host: "127.0.0.1", QUICPort: portOf(c.b.Addr("quic"))}, uplink.TransportQUIC, p.CAFile))
	if err != nil {
		return 0, 0, err
	}
	defer e.stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.runBridge(ctx)
	for !e.br.Status().Connected {
		time.Sleep(10 * time.Millisecond)
	}
	conn, err := dialMQTT(e.b.Addr("tcp"), "lat")
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	go func() { _, _ = io.Copy(io.Discard, conn) }()
	payload := make([]byte, max(size, 8))
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	sent := 0
	start := time.Now()
	for time.Since(start) < 5*time.Second {
		<-tick.C
		for want := int(time.Since(start).Seconds() * 2000); sent < want; sent++ {
			binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
			if _, err := conn.Write(publishPacket("sensors/lat", payload, uint16(sent%65535+1))); err != nil {
				return 0, 0, err
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.count.Load() < int64(sent) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	c.latMu.Lock()
	lat := slices.Clone(c.lat)
	c.latMu.Unlock()
	if len(lat) == 0 {
		return 0, 0, errors.New("nothing arrived")
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], nil
}

func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// udpLink relays datagrams to target with delay each way and random loss
// (each way: half of loss, so a round trip loses loss); it returns the port
// to use instead of target's. Each client address gets its own socket
// towards the target (several QUIC connections may pass). Datagrams keep
// their order, as on a real link: a relay that reordered would look like
// loss to QUIC.
func udpLink(ctx context.Context, target string, delay time.Duration, loss float64) (int, error) {
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return 0, err
	}
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, err
	}
	_ = front.SetReadBuffer(8 << 20)
	type datagram struct {
		b  []byte
		at time.Time
	}
	// line delivers datagrams in order, each delay after it was sent.
	line := func(send func([]byte)) chan<- datagram {
		q := make(chan datagram, 65536)
		go func() {
			for d := range q {
				time.Sleep(time.Until(d.at))
				send(d.b)
			}
		}()
		return q
	}
	push := func(q chan<- datagram, b []byte) {
		if rand.Float64() < loss/2 {
			return
		}
		select {
		case q <- datagram{b, time.Now().Add(delay)}:
		default: // the line is full: dropped, as a router would
		}
	}
	var mu sync.Mutex
	ups := map[string]chan<- datagram{}
	var backs []*net.UDPConn
	go func() {
		<-ctx.Done()
		front.Close()
		mu.Lock()
		for _, b := range backs {
			b.Close()
		}
		mu.Unlock()
	}()
	go func() {
		for {
			buf := make([]byte, 2048)
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			mu.Lock()
			up, ok := ups[from.String()]
			if !ok {
				back, err := net.DialUDP("udp", nil, ta)
				if err != nil {
					mu.Unlock()
					continue
				}
				_ = back.SetReadBuffer(8 << 20)
				backs = append(backs, back)
				up = line(func(b []byte) { _, _ = back.Write(b) })
				ups[from.String()] = up
				down := line(func(b []byte) { _, _ = front.WriteToUDP(b, from) })
				go func() {
					for {
						buf := make([]byte, 2048)
						n, err := back.Read(buf)
						if err != nil {
							return
						}
						push(down, buf[:n])
					}
				}()
			}
			mu.Unlock()
			push(up, buf[:n])
		}
	}()
	return front.LocalAddr().(*net.UDPAddr).Port, nil
}

// tcpLink relays TCP connections to target, delaying every chunk by delay
// each way (in order); it returns the port to use instead of target's.
func tcpLink(ctx context.Context, target string, delay time.Duration) (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	go func() { <-ctx.Done(); ln.Close() }()
	pipe := func(dst, src net.Conn) {
		type chunk struct {
			b  []byte
			at time.Time
		}
		q := make(chan chunk, 4096)
		go func() {
			for c := range q {
				time.Sleep(time.Until(c.at))
				if _, err := dst.Write(c.b); err != nil {
					return
				}
			}
		}()
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if err != nil {
				close(q)
				_ = dst.Close()
				return
			}
			q <- chunk{buf[:n], time.Now().Add(delay)}
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go pipe(u, c)
			go pipe(c, u)
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
