// Command fieldgate is the edge gateway's one binary.
//
// Usage:
//
//	fieldgate [run] [-config PATH] [-factory-config PATH] [-data DIR]   run the gateway (the default)
//	fieldgate version                            print version and build details
//	fieldgate config check FILE                  check a config file ("-" = stdin)
//	fieldgate config default                     print the default config, commented
//	fieldgate passwd                             read a password on stdin, print its bcrypt hash
//	fieldgate setup-code [-data DIR] [-console]  print the first-boot setup code
//	fieldgate reset --factory [--yes] [-data DIR] [-config PATH]   wipe config, web login and data
//
// main only parses arguments, sets up logging and signals, and hands over to
// gateway/config and gateway.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/fieldgate/fieldgate/board"
	"github.com/fieldgate/fieldgate/board/appliance"
	"github.com/fieldgate/fieldgate/gateway"
	"github.com/fieldgate/fieldgate/gateway/config"
)

// Set at build time with -ldflags "-X main.version=… -X main.commit=…
// -X main.date=…" (see the Makefile).
var (
	version = "dev"
	commit  = ""
	date    = ""
)

// passwdCost is the bcrypt cost of `fieldgate passwd`.
const passwdCost = 12

const usage = `usage:
  fieldgate [run] [-config PATH] [-factory-config PATH] [-data DIR]
                                               run the gateway (the default)
  fieldgate version                            print version and build details
  fieldgate config check FILE                  check a config file ("-" reads stdin)
  fieldgate config default                     print the default config, commented
  fieldgate passwd                             read a password on stdin, print its bcrypt hash
  fieldgate setup-code [-data DIR] [-console]  print the first-boot setup code (while setup is not done)
  fieldgate reset --factory [--yes] [-data DIR] [-config PATH]
                                               wipe the saved config, web login and all data (gateway stopped)
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run dispatches the subcommand and returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runGateway(args, stderr)
	case "version":
		printVersion(stdout)
		return 0
	case "config":
		return configCmd(args, stdin, stdout, stderr)
	case "passwd":
		return passwd(stdin, stdout, stderr)
	case "reset":
		return resetCmd(args, stdin, stdout, stderr)
	case "setup-code":
		return setupCodeCmd(args, stdout, stderr)
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "fieldgate: unknown command %q\n%s", cmd, usage)
		return 2
	}
}

// runGateway is `fieldgate run`.
func runGateway(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "the saved config: read at start if it exists, written by the page and the API, read on SIGHUP (default: fieldgate.yaml beside the binary)")
	factoryPath := fs.String("factory-config", "", "the factory config, read (never written) while the saved config does not exist (default: none, built-in defaults)")
	dataDir := fs.String("data", "", "data directory, overriding gateway.data_dir")
	watchdog := fs.String("watchdog", "", "hardware watchdog device to feed while healthy (e.g. /dev/watchdog), overriding board.watchdog.device")
	updateMode := fs.String("update", "off", "A/B updates: rauc (RAUC's D-Bus service, through busctl) or off")
	markGoodAfter := fs.Duration("mark-good-after", 10*time.Minute, "with -update rauc: mark the booted slot good once the gateway has been ready this long without a break")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to `FILE` until the gateway stops (for diagnosis)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "fieldgate run: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "fieldgate run: cpu profile: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fieldgate run: unexpected arguments %q\n", fs.Args())
		return 2
	}

	saved := *configPath
	if saved == "" {
		// Where the setup page writes a config when there is none; the next
		// start reads it from there.
		if exe, err := os.Executable(); err == nil {
			saved = filepath.Join(filepath.Dir(exe), "fieldgate.yaml")
		}
	}
	loaded, ok := loadConfig(saved, *factoryPath, stderr)
	if !ok {
		return 1
	}
	override := func(c *config.Config) {
		if *dataDir != "" {
			c.Gateway.DataDir = *dataDir
		}
		if *watchdog != "" {
			c.Board.Watchdog.Device = *watchdog
		}
	}
	override(&loaded.cfg)

	// One gateway per data directory; a factory reset asked for on the page
	// (or cut short by a power cut) is done before anything reads it.
	lock, err := appliance.Lock(loaded.cfg.Gateway.DataDir)
	if err != nil {
		fmt.Fprintf(stderr, "fieldgate run: %v\n", err)
		return 1
	}
	defer lock.Unlock()
	var wiped []string
	if appliance.ResetRequested(loaded.cfg.Gateway.DataDir) {
		if wiped, err = appliance.Wipe(loaded.cfg.Gateway.DataDir, saved); err != nil {
			fmt.Fprintf(stderr, "fieldgate run: factory reset: %v\n", err)
			return 1
		}
		if loaded, ok = loadConfig(saved, *factoryPath, stderr); !ok {
			return 1
		}
		override(&loaded.cfg)
	}
	cfg, path := loaded.cfg, loaded.read

	log := newLogger(cfg.Log, stderr)
	if wiped != nil {
		log.Warn("factory reset done: saved config, web login and data wiped", "data_dir", cfg.Gateway.DataDir, "removed", len(wiped))
	}
	if loaded.warning != "" {
		log.Error(loaded.warning, "path", saved, "renamed_to", saved+".rejected", "factory_config", *factoryPath)
	}
	if cfg.Web.Enabled {
		showSetupCode(cfg.Gateway.DataDir, stderr, log)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	reload := make(chan struct{}, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go forwardReloads(ctx, hup, reload)

	source := path
	if source == "" {
		source = "built-in defaults"
	}
	log.Info("starting", "version", version, "config", source, "saved_config", saved, "data_dir", cfg.Gateway.DataDir)
	// Every socket is a descriptor: the whole hard limit, of which the page
	// may hold at most a quarter (web.max_connections), is the broker's reserve.
	if files, err := board.RaiseFileLimit(); err != nil {
		log.Warn("open file limit not raised", "error", err)
	} else {
		log.Debug("open file limit", "files", files)
	}
	// GOMAXPROCS is the process's, so the process owns its scaler.
	cpus := board.NewCPUScaler(cfg.Board.CPUs, os.Getenv, log.With("part", "cpus"))
	cpusCtx, stopCPUs := context.WithCancel(context.Background())
	cpusDone := make(chan struct{})
	go func() {
		defer close(cpusDone)
		_ = cpus.Run(cpusCtx)
	}()
	defer func() {
		stopCPUs()
		<-cpusDone
	}()
	// A shutdown that always ends: the gateway stops its parts within
	// gateway.stop_budget and abandons the rest; should closing the files
	// after that hang too, the process exits non-zero shortly after.
	finished := make(chan struct{})
	defer close(finished)
	go exitPastBudget(ctx, finished, cfg.Gateway.StopBudget, log)
	updCtx, stopUpdater := context.WithCancel(ctx)
	updater, waitUpdater, err := startUpdater(updCtx, *updateMode, *markGoodAfter, localURL(cfg.Web.Address, "/readyz"), log)
	if err != nil {
		stopUpdater()
		fmt.Fprintf(stderr, "fieldgate run: %v\n", err)
		return 2
	}
	defer func() {
		stopUpdater()
		waitUpdater()
	}()
	err = gateway.Run(ctx, gateway.Options{
		CPUStats:        cpus.Stats,
		ConfigPath:      path,
		ConfigWritePath: saved,
		RequestStop:     stop,
		Updater:         updater,
		Config:          cfg,
		Logger:          log,
		Version:         version,
		Reload:          reload,
		Override:        override,
	})
	if errors.Is(err, gateway.ErrRestart) {
		return restartGateway(log, err) // the page's "Restart now"
	}
	if err != nil {
		log.Error("gateway stopped", "err", err)
		return 1
	}
	if appliance.ResetRequested(cfg.Gateway.DataDir) {
		return factoryRestart(cfg.Gateway.DataDir, saved, lock, log)
	}
	log.Info("stopped")
	return 0
}

// factoryRestart finishes a factory reset asked for on the page: the
// gateway has stopped cleanly, the data directory is wiped, and the
// gateway starts again as on first boot. Under systemd the process exits
// and Restart=always starts it; elsewhere it executes itself again.
func factoryRestart(dataDir, saved string, lock *appliance.DirLock, log *slog.Logger) int {
	removed, err := appliance.Wipe(dataDir, saved)
	if err != nil {
		log.Error("factory reset failed; the next start tries again", "err", err)
		return 1
	}
	log.Warn("factory reset done: saved config, web login and data wiped; starting again", "data_dir", dataDir, "removed", len(removed))
	if os.Getenv("NOTIFY_SOCKET") != "" {
		return 0
	}
	exe, err := os.Executable()
	if err != nil {
		log.Error("factory reset: cannot start again", "err", err)
		return 1
	}
	lock.Unlock()
	err = syscall.Exec(exe, os.Args, os.Environ())
	log.Error("factory reset: cannot start again", "err", err)
	return 1
}

// exitPastBudget exits the process with status 1 when the gateway has not
// finished (closed finished) within budget (0: 10 s) plus 2 s of grace
// after ctx is done.
func exitPastBudget(ctx context.Context, finished <-chan struct{}, budget time.Duration, log *slog.Logger) {
	select {
	case <-ctx.Done():
	case <-finished:
		return
	}
	if budget <= 0 {
		budget = 10 * time.Second
	}
	t := time.NewTimer(budget + 2*time.Second)
	defer t.Stop()
	select {
	case <-t.C:
		log.Error("shutdown exceeded the stop budget; exiting", "budget", budget)
		os.Exit(1)
	case <-finished:
	}
}

// forwardReloads turns SIGHUPs into reload requests; requests that arrive
// while one is pending are merged.
func forwardReloads(ctx context.Context, hup <-chan os.Signal, reload chan<- struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}
}

// newLogger builds the process logger from the config's log section. The
// config is validated, so level and format are known values.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// printVersion is `fieldgate version`.
func printVersion(w io.Writer) {
	c, d := commit, date
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			switch {
			case s.Key == "vcs.revision" && c == "":
				c = s.Value
			case s.Key == "vcs.time" && d == "":
				d = s.Value
			}
		}
	}
	fmt.Fprintf(w, "fieldgate %s\ncommit:  %s\nbuilt:   %s\ngo:      %s %s/%s\n",
		version, orUnknown(c), orUnknown(d), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// configCmd is `fieldgate config check FILE` and `fieldgate config default`.
func configCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 1 && args[0] == "default":
		stdout.Write(config.DefaultYAML)
		return 0
	case len(args) == 2 && args[0] == "check":
		return configCheck(args[1], stdin, stdout, stderr)
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}
}

// configCheck parses, validates and provisions a file ("-" = stdin) and
// prints either "FILE: ok" or every error as "FILE:LINE:COL: path: reason"
// (nats-server's form; "FILE: path: reason" for a field the file does not
// set), in the order of the file. A file larger than config.MaxFileSize is
// refused before it is read.
func configCheck(path string, stdin io.Reader, stdout, stderr io.Writer) int {
	if path == "-" {
		path = "<stdin>"
		data, err := config.ReadAll(stdin)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", path, err)
			return 1
		}
		f, err := config.ParseFile(path, data)
		if err == nil {
			err = f.Check()
		}
		if err != nil {
			printErrors(stderr, path, err)
			return 1
		}
	} else if _, err := config.Load(path); err != nil {
		printErrors(stderr, path, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	return 0
}

// printErrors prints each line of a (joined) config error, prefixed with
// the file it came from unless it names it already (config.Load's errors
// do, with the line and column).
func printErrors(w io.Writer, file string, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		if !strings.HasPrefix(line, file+":") {
			line = file + ": " + line
		}
		fmt.Fprintln(w, line)
	}
}

// passwd is `fieldgate passwd`: the first line of stdin is the password.
func passwd(stdin io.Reader, stdout, stderr io.Writer) int {
	if f, ok := stdin.(*os.File); ok {
		if info, err := f.Stat(); err == nil && info.Mode()&os.ModeCharDevice != 0 {
			fmt.Fprint(stderr, "Password (shown as you type): ")
		}
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintf(stderr, "fieldgate passwd: read password: %v\n", err)
		return 1
	}
	password := strings.TrimRight(line, "\r\n")
	if password == "" {
		fmt.Fprintln(stderr, "fieldgate passwd: empty password refused")
		return 1
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), passwdCost)
	if err != nil {
		fmt.Fprintf(stderr, "fieldgate passwd: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, string(hash))
	return 0
}
