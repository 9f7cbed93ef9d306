// Command upstream is pristine upstream mochi-mqtt (the module version in
// third_party/mochi-mqtt-server/patches/UPSTREAM, from the module proxy,
// without fieldgate's patches) on one TCP listener with every client
// allowed and a session queue as long as it allows (65,535): the third broker of cmd/mqttbench. It is its own module so that
// the main module's replace directive (the patched copy) does not apply.
//
// Usage:
//
//	upstream -addr 127.0.0.1:1883
//
// It exits 0 on SIGTERM or SIGINT after closing the server.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:1883", "TCP `address` to listen on")
	flag.Parse()
	if err := run(*addr); err != nil {
		fmt.Fprintln(os.Stderr, "upstream mochi:", err)
		os.Exit(1)
	}
}

func run(addr string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumInflight = 65535 // its most: the queue of 100,000 asks for more
	srv := mqtt.New(&mqtt.Options{Capabilities: caps, Logger: log})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return fmt.Errorf("add allow-all hook: %w", err)
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr})); err != nil {
		return fmt.Errorf("add listener %s: %w", addr, err)
	}
	if err := srv.Serve(); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	<-ctx.Done()
	if err := srv.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}
