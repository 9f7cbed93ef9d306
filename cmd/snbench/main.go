// Command snbench measures the MQTT-SN gateway: an in-process broker and
// gateway on loopback, MQTT-SN clients publishing QoS 0 and QoS 1 to one
// MQTT subscriber (counting what arrives), and the memory one connected
// MQTT-SN client costs. It prints a table; `make bench` runs it.
//
// No Debian package provides an MQTT-SN peer, so unlike cmd/mqttbench there
// is no mosquitto column.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldgate/fieldgate/protocols/mqtt"
	"github.com/fieldgate/fieldgate/protocols/mqttsn"
)

func main() {
	clients := flag.Int("clients", 100, "publishing MQTT-SN clients")
	duration := flag.Duration("duration", 5*time.Second, "duration of each publish scenario")
	idle := flag.Int("idle", 1000, "idle MQTT-SN clients for the memory measurement")
	payload := flag.Int("payload", 64, "payload bytes")
	paced := flag.Int("rate", 20000, "total publishes/s of the paced QoS 0 scenario (0: skip it)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "snbench:", err)
			os.Exit(1)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	if err := run(os.Stdout, *clients, *duration, *idle, *payload, *paced); err != nil {
		fmt.Fprintln(os.Stderr, "snbench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// result is one publish scenario's numbers.
type result struct {
	name                 string
	sent, acked, arrived int64
	wall                 time.Duration
}

func run(w io.Writer, clients int, d time.Duration, idle, payload, paced int) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.DiscardHandler)

	bc := mqtt.DefaultConfig()
	bc.Listeners.TCP.Address = "127.0.0.1:0"
	bc.Listeners.TLS.Enabled = false
	bc.Listeners.WebSocket.Enabled = false
	b, err := mqtt.New(bc, mqtt.Options{Logger: log})
	if err != nil {
		return err
	}
	bdone := make(chan error, 1)
	go func() { bdone <- b.Run(ctx) }()
	defer func() { cancel(); <-bdone }()

	gc := mqttsn.DefaultConfig()
	gc.Address = "127.0.0.1:0"
	gc.MaxClients = clients + idle + 10
	gc.MaxClientsPerAddress = 0 // every client speaks from 127.0.0.1
	g, err := mqttsn.New(gc, b, log)
	if err != nil {
		return err
	}
	gctx, gcancel := context.WithCancel(ctx)
	gdone := make(chan error, 1)
	go func() { gdone <- g.Run(gctx) }()
	defer func() { gcancel(); <-gdone }()
	gw := g.Addr().(*net.UDPAddr)

	fmt.Fprintf(w, "MQTT-SN gateway benchmark: in-process broker + gateway on loopback, %s, %d cores, %s\n",
		cpuModel(), runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(w, "%d publishing clients, %d-byte payloads, %s per scenario; one MQTT 5 subscriber (paho.golang) counts arrivals.\n",
		clients, payload, d)
	fmt.Fprintln(w, "No Debian package provides an MQTT-SN client or gateway, so there is no mosquitto column.")
	fmt.Fprintln(w)

	var results []result
	type scenario struct {
		qos  byte
		rate int // publishes/s in all; 0: unpaced
	}
	scenarios := []scenario{{0, 0}}
	if paced > 0 {
		scenarios = append(scenarios, scenario{0, paced})
	}
	scenarios = append(scenarios, scenario{1, 0})
	for _, sc := range scenarios {
		r, err := publishScenario(ctx, b, gw, clients, sc.qos, sc.rate, d, payload)
		if err != nil {
			return fmt.Errorf("QoS %d scenario: %w", sc.qos, err)
		}
		results = append(results, r)
	}
	fmt.Fprintf(w, "%-34s %12s %12s %12s %8s\n", "scenario", "sent/s", "acked/s", "arrived/s", "arrived")
	for _, r := range results {
		s := r.wall.Seconds()
		acked := "-"
		if r.name[4] != '0' {
			acked = fmt.Sprintf("%.0f", float64(r.acked)/s)
		}
		fmt.Fprintf(w, "%-34s %12.0f %12s %12.0f %7.1f%%\n", r.name, float64(r.sent)/s, acked,
			float64(r.arrived)/s, 100*float64(r.arrived)/float64(max(r.sent, 1)))
	}
	fmt.Fprintln(w, "Unpaced QoS 0 senders share the 2 cores with the gateway and outrun it: UDP has no flow control,")
	fmt.Fprintln(w, "so what exceeds the gateway's rate is dropped (counted as overload, or by the kernel when the socket buffer is full).")
	fmt.Fprintln(w)

	heap, rss, err := memoryPerClient(gw, g, idle)
	if err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	fmt.Fprintf(w, "%-34s %12s %12s\n", "memory per connected client", "heap", "RSS")
	fmt.Fprintf(w, "%-34s %10.1f KiB %10.1f KiB\n", fmt.Sprintf("(%d idle clients, delta ÷ %d)", idle, idle), heap/1024, rss/1024)
	fmt.Fprintln(w, "The delta includes the benchmark's own client sockets (a few hundred bytes each) and the broker session behind each device.")
	st := g.Stats()
	fmt.Fprintf(w, "\ngateway: datagrams in %d, out %d, publishes in %d, retransmissions %d, lost %d, drops %v\n",
		st.DatagramsIn, st.DatagramsOut, st.PublishesIn, st.Retransmissions, st.LostClients, st.Drops)
	return nil
}

// snConn is a benchmark MQTT-SN client.
type snConn struct {
	c   *net.UDPConn
	buf []byte
}

func dialSN(gw *net.UDPAddr) (*snConn, error) {
	c, err := net.DialUDP("udp", nil, gw)
	if err != nil {
		return nil, err
	}
	return &snConn{c: c, buf: make([]byte, 2048)}, nil
}

func (s *snConn) send(p mqttsn.Packet) error {
	b, err := mqttsn.Encode(nil, p)
	if err != nil {
		return err
	}
	_, err = s.c.Write(b)
	return err
}

func (s *snConn) recv(timeout time.Duration) (mqttsn.Packet, error) {
	_ = s.c.SetReadDeadline(time.Now().Add(timeout))
	n, err := s.c.Read(s.buf)
	if err != nil {
		return mqttsn.Packet{}, err
	}
	return mqttsn.Decode(s.buf[:n])
}

// expect waits for a packet of type t, skipping others.
func (s *snConn) expect(t mqttsn.MsgType) (mqttsn.Packet, error) {
	for {
		p, err := s.recv(time.Second)
		if err != nil {
			return p, fmt.Errorf("waiting for %s: %w", t, err)
		}
		if p.Type == t {
			return p, nil
		}
	}
}

func (s *snConn) connect(id string) error {
	if err := s.send(mqttsn.Packet{Type: mqttsn.TypeConnect, Flags: mqttsn.Flags{CleanSession: true}, ProtocolID: 1, Duration: 600, ClientID: id}); err != nil {
		return err
	}
	ack, err := s.expect(mqttsn.TypeConnack)
	if err == nil && ack.ReturnCode != mqttsn.Accepted {
		err = fmt.Errorf("CONNACK 0x%02x", ack.ReturnCode)
	}
	return err
}

// publishScenario has n clients publish at QoS qos for d: as fast as they
// can, or rate publishes/s in all when rate > 0.
func publishScenario(ctx context.Context, b *mqtt.Broker, gw *net.UDPAddr, n int, qos byte, rate int, d time.Duration, size int) (result, error) {
	r := result{name: fmt.Sprintf("QoS %d publish, %d clients → 1 sub", qos, n)}
	var interval time.Duration // between two publishes of one client
	if rate > 0 {
		r.name = fmt.Sprintf("QoS %d paced %d/s, %d clients", qos, rate, n)
		interval = time.Duration(float64(n) / float64(rate) * float64(time.Second))
	}
	var arrived atomic.Int64
	conn, err := net.Dial("tcp", b.Addr("tcp"))
	if err != nil {
		return r, err
	}
	sub := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(paho.PublishReceived) (bool, error) {
			arrived.Add(1)
			return true, nil
		}},
		OnClientError: func(error) {},
	})
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := sub.Connect(cctx, &paho.Connect{ClientID: fmt.Sprintf("bench-sub-%d-%d", qos, rate), CleanStart: true, KeepAlive: 60, Properties: &paho.ConnectProperties{ReceiveMaximum: ptr(uint16(65535))}}); err != nil {
		return r, err
	}
	defer sub.Disconnect(&paho.Disconnect{})
	if _, err := sub.Subscribe(cctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "bench/#", QoS: qos}}}); err != nil {
		return r, err
	}

	conns := make([]*snConn, n)
	topics := make([]uint16, n)
	for i := range conns {
		c, err := dialSN(gw)
		if err != nil {
			return r, err
		}
		defer c.c.Close()
		if err := c.connect(fmt.Sprintf("bench-q%d-r%d-%d", qos, rate, i)); err != nil {
			return r, err
		}
		if err := c.send(mqttsn.Packet{Type: mqttsn.TypeRegister, MsgID: 1, TopicName: fmt.Sprintf("bench/%d", i)}); err != nil {
			return r, err
		}
		ack, err := c.expect(mqttsn.TypeRegack)
		if err != nil {
			return r, err
		}
		conns[i], topics[i] = c, ack.TopicID
	}

	var sent, acked atomic.Int64
	data := make([]byte, size)
	stop := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var id uint16
			next := time.Now().Add(time.Duration(i) * interval / time.Duration(n)) // spread the clients
			for time.Now().Before(stop) {
				if interval > 0 {
					time.Sleep(time.Until(next))
					next = next.Add(interval)
				}
				id++
				if id == 0 {
					id = 1
				}
				p := mqttsn.Packet{Type: mqttsn.TypePublish, Flags: mqttsn.Flags{QoS: int8(qos)}, TopicID: topics[i], MsgID: id, Data: data}
				if c.send(p) != nil {
					return
				}
				sent.Add(1)
				if qos == 0 {
					if interval == 0 && sent.Load()%64 == 0 {
						runtime.Gosched()
					}
					continue
				}
				for {
					ack, err := c.recv(time.Second)
					if err != nil {
						break // lost on loopback: go on with the next one
					}
					if ack.Type == mqttsn.TypePuback && ack.MsgID == id {
						if ack.ReturnCode == mqttsn.Accepted {
							acked.Add(1)
						}
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	r.wall = time.Since(start)
	// Let what is in flight arrive.
	for last, deadline := int64(-1), time.Now().Add(3*time.Second); time.Now().Before(deadline); {
		cur := arrived.Load()
		if cur == last || cur >= sent.Load() {
			break
		}
		last = cur
		time.Sleep(200 * time.Millisecond)
	}
	for _, c := range conns {
		// A DISCONNECT can be lost behind a flood: try again until answered.
		for range 5 {
			if c.send(mqttsn.Packet{Type: mqttsn.TypeDisconnect}) != nil {
				break
			}
			if _, err := c.expect(mqttsn.TypeDisconnect); err == nil {
				break
			}
		}
	}
	r.sent, r.acked, r.arrived = sent.Load(), acked.Load(), arrived.Load()
	return r, nil
}

func ptr[T any](v T) *T { return &v }

// memoryPerClient connects idle clients and returns the heap and RSS
// growth per client, in bytes.
func memoryPerClient(gw *net.UDPAddr, g *mqttsn.Gateway, n int) (heap, rss float64, err error) {
	// Wait for the publish scenarios' clients to be gone.
	for deadline := time.Now().Add(10 * time.Second); g.Stats().ClientsConnected > 0; {
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("%d clients still connected", g.Stats().ClientsConnected)
		}
		time.Sleep(50 * time.Millisecond)
	}
	h0, r0 := settle()
	conns := make([]*snConn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.send(mqttsn.Packet{Type: mqttsn.TypeDisconnect})
			_ = c.c.Close()
		}
	}()
	for i := range n {
		c, err := dialSN(gw)
		if err != nil {
			return 0, 0, err
		}
		conns = append(conns, c)
		if err := c.connect(fmt.Sprintf("idle-%d", i)); err != nil {
			return 0, 0, err
		}
	}
	if got := g.Stats().ClientsConnected; got != int64(n) {
		return 0, 0, fmt.Errorf("%d clients connected, want %d", got, n)
	}
	h1, r1 := settle()
	return float64(h1-h0) / float64(n), float64(r1-r0) / float64(n), nil
}

// settle collects garbage and returns the heap in use and the RSS.
func settle() (heap, rss int64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse), readRSS()
}

// readRSS returns this process's VmRSS in bytes (0 if unknown).
func readRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
