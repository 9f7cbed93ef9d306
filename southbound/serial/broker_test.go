package serial

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldgate/fieldgate/internal/testwait"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// startBroker runs the real local broker on a loopback port, stopped at
// test end, and returns it once its TCP listener has an address.
func startBroker(t *testing.T) *mqtt.Broker {
	t.Helper()
	cfg := mqtt.DefaultConfig()
	cfg.Listeners.TCP.Address = "127.0.0.1:0"
	cfg.Listeners.TLS.Enabled = false
	cfg.Listeners.WebSocket.Enabled = false
	b, err := mqtt.New(cfg, mqtt.Options{Logger: testLogger(t).With("part", "broker")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	testwait.NoError(t, waitFor, func() error {
		if _, port, err := net.SplitHostPort(b.Addr("tcp")); err != nil || port == "0" {
			return fmt.Errorf("broker listener has no address: %q", b.Addr("tcp"))
		}
		return nil
	})
	return b
}

// TestReadingsThroughRealBroker runs a sensor publishing into the real
// broker and checks what an MQTT 5 client subscribed to the topics gets,
// including the retained status it finds when it subscribes late.
func TestReadingsThroughRealBroker(t *testing.T) {
	line := newFakeLine(t)
	broker := startBroker(t)
	cfg := testConfig(Sensor{Name: "gps", Port: line.path, Parser: "nmea"})
	cfg.QoS = 1
	s := startService(t, cfg, broker)
	waitStats(t, s, "online", func(st SensorStats) bool { return st.Online })

	conn, err := net.DialTimeout("tcp", broker.Addr("tcp"), waitFor)
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan *paho.Publish, 100)
	c := paho.NewClient(paho.ClientConfig{
		ClientID: "serial-test",
		Conn:     conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				select {
				case msgs <- pr.Packet:
				default:
					t.Error("message channel full")
				}
				return true, nil
			},
		},
		OnClientError: func(error) {},
		PacketTimeout: waitFor,
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "serial-test", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "southbound/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	next := func() *paho.Publish {
		t.Helper()
		select {
		case p := <-msgs:
			return p
		case <-time.After(waitFor):
			t.Fatal("no MQTT message within", waitFor)
			return nil
		}
	}
	// The status was published before we subscribed: it comes retained.
	p := next()
	var st statusMsg
	if err := json.Unmarshal(p.Payload, &st); err != nil || p.Topic != "southbound/gps/status" || !p.Retain || st.Status != StatusOnline {
		t.Fatalf("first message %s %s retain %v, want the retained online status", p.Topic, p.Payload, p.Retain)
	}

	line.write(t, "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n")
	p = next()
	var r reading
	if err := json.Unmarshal(p.Payload, &r); err != nil {
		t.Fatalf("reading %s: %v", p.Payload, err)
	}
	if p.Topic != "southbound/gps" || p.QoS != 1 || r.Q != "good" || r.V["altitude"] != 545.4 {
		t.Errorf("reading on %s QoS %d: %s", p.Topic, p.QoS, p.Payload)
	}
	if age := time.Since(time.UnixMilli(r.TS)); age < 0 || age > time.Minute {
		t.Errorf("reading ts %d is %s old", r.TS, age)
	}
}
