package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/board/appliance"
	"github.com/fieldgate/fieldgate/board/update"
	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/gateway/web"
)

// imageDataDir is the data partition of the appliance image: the default
// data directory of `fieldgate reset` and `fieldgate setup-code`, which a
// technician types on the board.
const imageDataDir = "/var/lib/fieldgate"

// loadedConfig is the config a start reads, and where it came from.
type loadedConfig struct {
	cfg config.Config
	// read is the file read ("" = built-in defaults).
	read string
	// write is the saved config: where the page, the API and a reload
	// write and read it from now on.
	write string
	// warning, if not "", is logged once the logger exists.
	warning string
}

// loadConfig applies the config rule of `fieldgate run`:
//
//   - saved (-config PATH; default fieldgate.yaml beside the binary) is
//     the gateway's own config: read at start when it exists, written by
//     the page and the API, read again on SIGHUP;
//   - factory (-factory-config PATH) is read, never written, while saved
//     does not exist (a new device, or after a factory reset);
//   - with neither file, the built-in defaults.
//
// A saved config that no longer loads (say, written by a newer version
// before a rollback) is renamed to PATH.rejected and the factory config is
// used, so that the page stays reachable; without a factory config it is
// an error, as is a factory config that does not load.
func loadConfig(saved, factory string, stderr io.Writer) (loadedConfig, bool) {
	out := loadedConfig{cfg: config.Default(), write: saved}
	if saved != "" {
		if _, err := os.Stat(saved); err == nil {
			cfg, err := config.Load(saved)
			if err == nil {
				out.cfg, out.read = cfg, saved
				return out, true
			}
			if factory == "" {
				printErrors(stderr, saved, err)
				return out, false
			}
			printErrors(stderr, saved, err)
			rejected := saved + ".rejected"
			if rerr := os.Rename(saved, rejected); rerr != nil {
				fmt.Fprintf(stderr, "fieldgate run: %v\n", rerr)
				return out, false
			}
			out.warning = "the saved config does not load: it was renamed and the factory config is used; fix it and save again on the page"
		}
	}
	if factory != "" {
		cfg, err := config.Load(factory)
		if err != nil {
			printErrors(stderr, factory, err)
			return out, false
		}
		out.cfg, out.read = cfg, factory
	}
	return out, true
}

// showSetupCode makes the first-boot setup code (while the setup is not
// done) and shows it where only someone with the device sees it: the
// terminal the gateway runs in (`make run`) and the serial console when
// this process may write it. Under the unit the console is not writable
// (DevicePolicy=closed): its ExecStartPost runs `fieldgate setup-code
// -console` as root instead, and the journal has the page's log line.
func showSetupCode(dataDir string, stderr io.Writer, log *slog.Logger) {
	if !web.SetupPending(dataDir) {
		return
	}
	code, _, err := appliance.EnsureSetupCode(dataDir)
	if err != nil {
		log.Error("first boot: no setup code", "err", err)
		return
	}
	banner := appliance.SetupBanner(code)
	if f, ok := stderr.(*os.File); ok {
		if info, err := f.Stat(); err == nil && info.Mode()&os.ModeCharDevice != 0 {
			fmt.Fprint(stderr, banner)
		}
	}
	if err := appliance.WriteConsole(appliance.Console, banner); err != nil {
		log.Debug("setup code not written to the console", "err", err)
	}
}

// startUpdater makes the updater of `-update rauc` (RAUC over D-Bus with
// busctl; "" or "off": none) and runs its mark-good loop: the booted slot
// is marked good once the page's /readyz (readyURL) has answered 200 at
// every check for markAfter. wait waits for the loop to end after ctx.
func startUpdater(ctx context.Context, mode string, markAfter time.Duration, readyURL string, log *slog.Logger) (u web.Updater, wait func(), err error) {
	switch mode {
	case "", "off":
		return nil, func() {}, nil
	case "rauc":
	default:
		return nil, nil, fmt.Errorf("-update: %q is not rauc or off", mode)
	}
	m := update.NewManager(update.Busctl{}, log.With("part", "update"), nil)
	client := &http.Client{Timeout: 5 * time.Second}
	healthy := func() bool {
		resp, err := client.Get(readyURL)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.RunMarkGood(ctx, healthy, markAfter, 10*time.Second)
	}()
	return m, func() { <-done }, nil
}

// localURL turns a listen address (":80", "0.0.0.0:8080") into a URL on
// this host.
func localURL(addr, path string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + path
}

// resetCmd is `fieldgate reset --factory [--yes] [-data DIR] [-config PATH]`.
// It refuses while a gateway holds the data directory: the running
// gateway is stopped by its owner (`systemctl stop fieldgate`), or reset
// from the page, which stops it cleanly itself. Under systemd a killed
// gateway would only be restarted.
func resetCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reset", flag.ContinueOnError)
	fs.SetOutput(stderr)
	factory := fs.Bool("factory", false, "wipe the saved config, the web login and tokens, and all data (required)")
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	dataDir := fs.String("data", imageDataDir, "data directory")
	saved := fs.String("config", "", "saved config (default: DIR/config/fieldgate.yaml)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if !*factory || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: fieldgate reset --factory [--yes] [-data DIR] [-config PATH]")
		return 2
	}
	if *saved == "" {
		*saved = appliance.SavedConfig(*dataDir)
	}
	if _, err := os.Stat(*dataDir); err != nil {
		fmt.Fprintf(stderr, "fieldgate reset: %v\n", err)
		return 1
	}
	lock, err := appliance.Lock(*dataDir)
	if errors.Is(err, appliance.ErrLocked) {
		fmt.Fprintf(stderr, "fieldgate reset: the gateway is running (%v).\nStop it first (systemctl stop fieldgate), or use the factory reset on the setup page, which stops and restarts it.\n", err)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "fieldgate reset: %v\n", err)
		return 1
	}
	defer lock.Unlock()
	if !*yes {
		fmt.Fprintf(stdout, "This wipes the saved config (%s), the web admin password and tokens, and all data in %s (outbox included).\nType \"reset\" to go on: ", *saved, *dataDir)
		line, _ := bufio.NewReader(stdin).ReadString('\n')
		if strings.TrimSpace(line) != "reset" {
			fmt.Fprintln(stderr, "fieldgate reset: not confirmed; nothing changed")
			return 1
		}
	}
	removed, err := appliance.Wipe(*dataDir, *saved)
	for _, r := range removed {
		fmt.Fprintf(stdout, "removed %s\n", r)
	}
	if err != nil {
		fmt.Fprintf(stderr, "fieldgate reset: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "factory reset done: the next start is a first boot (new setup code)")
	return 0
}

// setupCodeCmd is `fieldgate setup-code [-data DIR] [-console]`: it prints
// the first-boot setup code while the setup is not done, and with -console
// writes it to the serial console too (the unit runs it as root after the
// gateway is ready). Without a code it says so and exits 0.
func setupCodeCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("setup-code", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", imageDataDir, "data directory")
	console := fs.Bool("console", false, "also write the code to "+appliance.Console)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	code, err := appliance.ReadSetupCode(*dataDir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintln(stderr, "no setup code: the first-boot setup is done (or the gateway has not started yet)")
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "fieldgate setup-code: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, code)
	if *console {
		if err := appliance.WriteConsole(appliance.Console, appliance.SetupBanner(code)); err != nil {
			fmt.Fprintf(stderr, "fieldgate setup-code: %v\n", err)
		}
	}
	return 0
}
