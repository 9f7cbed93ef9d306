// Command coapbench measures the CoAP gateway on loopback: an in-process
// broker and gateway, several go-coap clients publishing NON and CON
// requests, one MQTT (bus) subscriber counting what arrives. It prints a
// table of publishes per second.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/protocols/coap"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

func main() {
	clients := flag.Int("clients", 8, "concurrent CoAP clients")
	dur := flag.Duration("duration", 3*time.Second, "duration of each run")
	flag.Parse()
	if err := run(*clients, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "coapbench:", err)
		os.Exit(1)
	}
}

func run(clients int, dur time.Duration) error {
	log := slog.New(slog.DiscardHandler)
	bcfg := mqtt.DefaultConfig()
	bcfg.Listeners.TCP.Address = "127.0.0.1:0"
	bcfg.Listeners.TLS.Enabled = false
	bcfg.Listeners.WebSocket.Enabled = false
	b, err := mqtt.New(bcfg, mqtt.Options{Logger: log})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { _ = b.Run(ctx) })
	defer wg.Wait()
	ccfg := coap.DefaultConfig()
	ccfg.Address = "127.0.0.1:0"
	g, err := coap.New(ccfg, b, log)
	if err != nil {
		return err
	}
	wg.Go(func() { _ = g.Run(ctx) })
	var received atomic.Int64
	unsub, err := b.Subscribe("bench/#", func(bus.Message) { received.Add(1) })
	if err != nil {
		return err
	}
	defer unsub()

	fmt.Printf("%-15s %8s %12s %12s %10s\n", "type", "clients", "sent/s", "received/s", "errors")
	for _, typ := range []message.Type{message.NonConfirmable, message.Confirmable} {
		received.Store(0)
		var sent, failed atomic.Int64
		deadline := time.Now().Add(dur)
		var cw sync.WaitGroup
		for i := range clients {
			cw.Go(func() {
				cc, err := udp.Dial(g.Addr().String())
				if err != nil {
					failed.Add(1)
					return
				}
				defer cc.Close()
				path := fmt.Sprintf("/ps/bench/%d", i)
				payload := []byte(`{"v":21.5}`)
				for time.Now().Before(deadline) {
					rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
					req, err := cc.NewPostRequest(rctx, path, message.AppJSON, bytes.NewReader(payload))
					if err == nil {
						req.SetType(typ)
						r, err2 := cc.Do(req)
						cc.ReleaseMessage(req)
						if err2 != nil {
							err = err2
						} else {
							cc.ReleaseMessage(r)
						}
					}
					rcancel()
					if err != nil {
						failed.Add(1)
						continue
					}
					sent.Add(1)
				}
			})
		}
		cw.Wait()
		secs := dur.Seconds()
		fmt.Printf("%-15s %8d %12.0f %12.0f %10d\n", typ, clients, float64(sent.Load())/secs, float64(received.Load())/secs, failed.Load())
	}
	cancel()
	return nil
}
