// Command modbusbench measures the Modbus poller under load: N simulated
// Modbus TCP devices (simonvetter/modbus servers on loopback, run in a child
// process so that their cost is not counted) with P points each, polled at a
// fixed interval into the real broker, with an MQTT client subscribed to the
// readings. It prints the process's CPU use (getrusage), allocations per
// poll, poll start jitter and register-to-subscriber latency beside the
// targets.
//
//	modbusbench [-devices 50] [-points 100] [-interval 1s] [-duration 20s]
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/paho"
	smodbus "github.com/simonvetter/modbus"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
	"github.com/fieldgate/fieldgate/southbound/modbus"
)

// Targets from issue 4.
const (
	targetJitterP99 = 20 * time.Millisecond
	targetCPU       = 25.0 // % of one core
)

func main() {
	devices := flag.Int("devices", 50, "simulated Modbus TCP devices")
	points := flag.Int("points", 100, "points per device (one is the simulator's clock)")
	interval := flag.Duration("interval", time.Second, "poll interval")
	duration := flag.Duration("duration", 20*time.Second, "measured time")
	simulate := flag.Int("simulate", 0, "internal: run this many simulators and print their addresses")
	flag.Parse()
	if *simulate > 0 {
		if err := runSimulators(*simulate); err != nil {
			log.Fatal(err)
		}
		return
	}
	if err := run(*devices, *points, *interval, *duration); err != nil {
		fmt.Fprintln(os.Stderr, "modbusbench:", err)
		os.Exit(1)
	}
}

// simBank answers every read: input registers 0-3 hold the time of the
// answer (UnixMicro, UINT64 big-endian), every other register its address.
type simBank struct{}

func (simBank) HandleCoils(*smodbus.CoilsRequest) ([]bool, error) {
	return nil, smodbus.ErrIllegalFunction
}
func (simBank) HandleDiscreteInputs(*smodbus.DiscreteInputsRequest) ([]bool, error) {
	return nil, smodbus.ErrIllegalFunction
}
func (simBank) HandleHoldingRegisters(req *smodbus.HoldingRegistersRequest) ([]uint16, error) {
	return regs(req.Addr, req.Quantity), nil
}
func (simBank) HandleInputRegisters(req *smodbus.InputRegistersRequest) ([]uint16, error) {
	out := regs(req.Addr, req.Quantity)
	if req.Addr == 0 && req.Quantity >= 4 {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(time.Now().UnixMicro()))
		for i := range 4 {
			out[i] = binary.BigEndian.Uint16(b[2*i:])
		}
	}
	return out, nil
}

func regs(addr, n uint16) []uint16 {
	out := make([]uint16, n)
	for i := range out {
		out[i] = addr + uint16(i)
	}
	return out
}

// runSimulators starts n servers, prints one address per line, then waits
// for stdin to close.
func runSimulators(n int) error {
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr := l.Addr().String()
		_ = l.Close()
		srv, err := smodbus.NewServer(&smodbus.ServerConfiguration{URL: "tcp://" + addr, MaxClients: 4,
			Logger: log.New(io.Discard, "", 0)}, simBank{})
		if err != nil {
			return err
		}
		if err := srv.Start(); err != nil {
			return fmt.Errorf("simulator on %s: %w", addr, err)
		}
		fmt.Println(addr)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

func run(nDev, nPoints int, interval, duration time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Simulators in a child process.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	sim := exec.CommandContext(ctx, self, "-simulate", fmt.Sprint(nDev))
	stdin, _ := sim.StdinPipe()
	stdout, _ := sim.StdoutPipe()
	sim.Stderr = os.Stderr
	if err := sim.Start(); err != nil {
		return fmt.Errorf("start simulators: %w", err)
	}
	defer func() { _ = stdin.Close(); _ = sim.Wait() }()
	var addrs []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "ready" {
		addrs = append(addrs, sc.Text())
	}
	if len(addrs) != nDev {
		return fmt.Errorf("simulators: got %d addresses, want %d", len(addrs), nDev)
	}

	// The real broker.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	bcfg := mqtt.DefaultConfig()
	bcfg.Listeners.TCP.Address = "127.0.0.1:0"
	bcfg.Listeners.TLS.Enabled = false
	bcfg.Listeners.WebSocket.Enabled = false
	broker, err := mqtt.New(bcfg, mqtt.Options{Logger: logger})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { _ = broker.Run(ctx) })
	brokerAddr := ""
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if a := broker.Addr("tcp"); a != "" && !strings.HasSuffix(a, ":0") {
			brokerAddr = a
			break
		}
	}
	if brokerAddr == "" {
		return fmt.Errorf("broker has no TCP address")
	}

	// An MQTT subscriber measuring register → subscriber latency.
	var mu sync.Mutex
	var latencies []time.Duration
	measuring := false
	conn, err := net.Dial("tcp", brokerAddr)
	if err != nil {
		return err
	}
	client := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			now := time.Now()
			var p struct {
				V uint64 `json:"v"`
			}
			if json.Unmarshal(pr.Packet.Payload, &p) == nil && p.V > 0 {
				mu.Lock()
				if measuring {
					latencies = append(latencies, now.Sub(time.UnixMicro(int64(p.V))))
				}
				mu.Unlock()
			}
			return true, nil
		}}})
	if _, err := client.Connect(ctx, &paho.Connect{ClientID: "modbusbench", CleanStart: true, KeepAlive: 30}); err != nil {
		return fmt.Errorf("mqtt connect: %w", err)
	}
	defer func() { _ = client.Disconnect(&paho.Disconnect{}) }()
	if _, err := client.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "southbound/+/clock", QoS: 0}}}); err != nil {
		return fmt.Errorf("mqtt subscribe: %w", err)
	}

	// The devices.
	cfg := modbus.DefaultConfig()
	for i, addr := range addrs {
		d := modbus.Device{Name: fmt.Sprintf("dev%02d", i), TCP: &modbus.TCP{Address: addr}, UnitID: 1,
			PollGroups: []modbus.PollGroup{{Name: "all", Interval: interval}}}
		d.Points = append(d.Points, modbus.Point{Name: "clock", Register: modbus.RegInput, Address: 0, Type: modbus.TypeUint64})
		for p := 1; p < nPoints; p++ {
			d.Points = append(d.Points, modbus.Point{Name: fmt.Sprintf("p%03d", p), Register: modbus.RegHolding,
				Address: 2 * p, Type: modbus.TypeInt32, Scale: 0.5, Unit: "W"})
		}
		cfg.Devices = append(cfg.Devices, d)
	}
	var jitter, took []time.Duration
	polls, failed := 0, 0
	svc, err := modbus.New(cfg, bus.Bus(broker), modbus.Options{Logger: logger, OnPoll: func(pi modbus.PollInfo) {
		mu.Lock()
		defer mu.Unlock()
		if !measuring {
			return
		}
		polls++
		if pi.Err != nil {
			failed++
		}
		jitter = append(jitter, pi.Started.Sub(pi.Scheduled))
		took = append(took, pi.Took)
	}})
	if err != nil {
		return err
	}
	wg.Go(func() { _ = svc.Run(ctx) })

	// Warm up for two intervals, then measure.
	time.Sleep(2 * interval)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	ru0 := rusage()
	t0 := time.Now()
	mu.Lock()
	measuring = true
	mu.Unlock()
	time.Sleep(duration)
	mu.Lock()
	measuring = false
	mu.Unlock()
	wall := time.Since(t0)
	ru1 := rusage()
	runtime.ReadMemStats(&ms1)
	cancel()

	mu.Lock()
	defer mu.Unlock()
	cpu := float64(ru1-ru0) / float64(wall) * 100
	allocs := float64(ms1.Mallocs-ms0.Mallocs) / float64(max(polls, 1))
	jp50, jp99 := pct(jitter, 50), pct(jitter, 99)
	lp50, lp99 := pct(latencies, 50), pct(latencies, 99)
	fmt.Printf("modbusbench: %d devices x %d points, every %s, measured %s (simulators in a child process, not counted)\n",
		nDev, nPoints, interval, wall.Round(time.Millisecond))
	fmt.Printf("polls %d (failed %d), values published %d, latency samples %d\n\n", polls, failed, polls*nPoints, len(latencies))
	fmt.Printf("%-38s %14s %14s %s\n", "metric", "measured", "target", "")
	row := func(name, got, target string, ok bool) {
		verdict := ""
		if target != "-" {
			verdict = "FAIL"
			if ok {
				verdict = "ok"
			}
		}
		fmt.Printf("%-38s %14s %14s %s\n", name, got, target, verdict)
	}
	row("CPU, % of one core (gateway process)", fmt.Sprintf("%.1f%%", cpu), fmt.Sprintf("< %.0f%%", targetCPU), cpu < targetCPU)
	row("allocations per poll (100 points)", fmt.Sprintf("%.0f", allocs), "-", true)
	row("poll start jitter p50", jp50.Round(time.Microsecond).String(), "-", true)
	row("poll start jitter p99", jp99.Round(time.Microsecond).String(), "< "+targetJitterP99.String(), jp99 < targetJitterP99)
	row("poll duration p50", pct(took, 50).Round(time.Microsecond).String(), "-", true)
	row("poll duration p99", pct(took, 99).Round(time.Microsecond).String(), "-", true)
	row("register -> MQTT subscriber p50", lp50.Round(time.Microsecond).String(), "-", true)
	row("register -> MQTT subscriber p99", lp99.Round(time.Microsecond).String(), "-", true)
	return nil
}

// rusage is the process's user + system CPU time.
func rusage() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pct is the p-th percentile of d (0 when empty).
func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}
