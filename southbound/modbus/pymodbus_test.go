package modbus

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldgate/fieldgate/internal/peertest"
	"github.com/fieldgate/fieldgate/internal/testwait"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// TestPymodbusThroughBroker polls Debian's python3-pymodbus server through
// the real broker: an MQTT client (paho.golang) sees the readings and sets a
// register, and the next poll reads the new value back.
func TestPymodbusThroughBroker(t *testing.T) {
	const python = "/usr/bin/python3" // Debian's, with python3-pymodbus
	if err := exec.Command(python, "-c", "import pymodbus.server").Run(); err != nil {
		peertest.Missing(t, fmt.Sprintf("pymodbus's server module under %s (%v)", python, err),
			"apt-get install python3-pymodbus python3-serial-asyncio")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	addr := freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	srv := exec.CommandContext(ctx, python, "testdata/pymodbus_server.py", port)
	srv.Stderr = testWriter{t}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	waitDial(t, ctx, addr)

	// The real broker.
	bcfg := mqtt.DefaultConfig()
	bcfg.Listeners.TCP.Address = "127.0.0.1:0"
	bcfg.Listeners.TLS.Enabled = false
	bcfg.Listeners.WebSocket.Enabled = false
	// This test writes set-points as an anonymous client: the default
	// that refuses anonymous writes to southbound/+/+/set is lifted here
	// (protocols/mqtt tests that default).
	bcfg.Auth.AnonymousDenyPublish = nil
	broker, err := mqtt.New(bcfg, mqtt.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	bctx, bcancel := context.WithCancel(context.Background())
	bdone := make(chan struct{})
	go func() { defer close(bdone); _ = broker.Run(bctx) }()
	t.Cleanup(func() { bcancel(); <-bdone })
	var brokerAddr string
	testwait.For(t, time.Until(deadlineOf(ctx)), "the broker's address", func() bool {
		brokerAddr = broker.Addr("tcp")
		return brokerAddr != "" && !strings.HasSuffix(brokerAddr, ":0")
	})

	cfg := DefaultConfig()
	cfg.QoS = 1
	cfg.Devices = []Device{tcpDevice("py", addr,
		Point{Name: "temp", Register: RegHolding, Address: 0, Type: TypeFloat32, Unit: "°C"},
		Point{Name: "sp", Register: RegHolding, Address: 10, Type: TypeUint16, Writable: true, ReadBack: true},
		Point{Name: "relay", Register: RegCoil, Address: 3, Writable: true},
		Point{Name: "in", Register: RegInput, Address: 5, Type: TypeUint16},
		Point{Name: "flag", Register: RegHolding, Address: 20, Type: TypeBit, Bit: 2, Writable: true, ReadBack: true},
		Point{Name: "word", Register: RegHolding, Address: 20, Type: TypeUint16},
	)}
	cfg.Devices[0].Timeout = time.Second
	cfg.Devices[0].PollGroups[0].Interval = 100 * time.Millisecond
	s := newService(t, cfg, broker, Options{})
	runService(t, s)

	// An MQTT client.
	conn, err := net.Dial("tcp", brokerAddr)
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan *paho.Publish, 1000)
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case msgs <- pr.Packet:
			default:
			}
			return true, nil
		}}})
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "modbus-test", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "southbound/py/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	wait := func(what, topic, contains string) {
		t.Helper()
		for {
			select {
			case p := <-msgs:
				if p.Topic == topic && strings.Contains(string(p.Payload), contains) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no %s (%s containing %s)", what, topic, contains)
			}
		}
	}
	wait("retained online status", "southbound/py/status", `"state":"online"`)
	wait("temperature", "southbound/py/temp", `"v":21.5,"q":"good","unit":"°C"`)
	wait("input register", "southbound/py/in", `"v":7,"q":"good"`)

	if _, err := c.Publish(ctx, &paho.Publish{Topic: "southbound/py/sp/set", QoS: 1, Payload: []byte(`{"id":"x1","v":4321}`)}); err != nil {
		t.Fatal(err)
	}
	wait("set result", "southbound/py/sp/set/result", `{"id":"x1","ok":true,"err":null,"v":4321}`)
	wait("new value polled", "southbound/py/sp", `"v":4321,"q":"good"`)
	if _, err := c.Publish(ctx, &paho.Publish{Topic: "southbound/py/relay/set", QoS: 1, Payload: []byte(`true`)}); err != nil {
		t.Fatal(err)
	}
	wait("coil result", "southbound/py/relay/set/result", `"ok":true`)
	wait("coil polled", "southbound/py/relay", `"v":true`)
	if _, err := c.Publish(ctx, &paho.Publish{Topic: "southbound/py/in/set", QoS: 1, Payload: []byte(`{"id":2,"v":1}`)}); err != nil {
		t.Fatal(err)
	}
	wait("refusal", "southbound/py/in/set/result", `"ok":false,"err":"point in is not writable"`)

	// One bit of a register, with Mask Write Register (function 22, the
	// default bit_writes): bit 2 set, the other bits of 0x8001 kept.
	wait("word before", "southbound/py/word", `"v":32769,"q":"good"`)
	if _, err := c.Publish(ctx, &paho.Publish{Topic: "southbound/py/flag/set", QoS: 1, Payload: []byte(`{"id":"b","v":true}`)}); err != nil {
		t.Fatal(err)
	}
	wait("bit result", "southbound/py/flag/set/result", `{"id":"b","ok":true,"err":null,"v":true}`)
	wait("word after", "southbound/py/word", `"v":32773,"q":"good"`)
}

func waitDial(t *testing.T, ctx context.Context, addr string) {
	t.Helper()
	testwait.NoError(t, time.Until(deadlineOf(ctx)), func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return fmt.Errorf("pymodbus server on %s did not start: %w", addr, err)
		}
		return c.Close()
	})
}

// deadlineOf is ctx's deadline, or a minute from now when it has none.
func deadlineOf(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(time.Minute)
}
