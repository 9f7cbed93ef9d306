// Command fieldgate is the edge gateway's one binary.
//
// Usage:
//
//	fieldgate [run] [-config PATH] [-data DIR]   run the gateway (the default)
//	fieldgate version                            print version and build details
//	fieldgate config check FILE                  check a config file ("-" = stdin)
//	fieldgate config default                     print the default config, commented
//	fieldgate passwd                             read a password on stdin, print its bcrypt hash
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
  fieldgate [run] [-config PATH] [-data DIR]   run the gateway (the default)
  fieldgate version                            print version and build details
  fieldgate config check FILE                  check a config file ("-" reads stdin)
  fieldgate config default                     print the default config, commented
  fieldgate passwd                             read a password on stdin, print its bcrypt hash
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
	configPath := fs.String("config", "", "config file (default: fieldgate.yaml beside the binary if it exists, else built-in defaults)")
	dataDir := fs.String("data", "", "data directory, overriding gateway.data_dir")
	watchdog := fs.String("watchdog", "", "hardware watchdog device to feed while healthy (e.g. /dev/watchdog), overriding board.watchdog.device")
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

	path := *configPath
	if path == "" {
		path = besideBinary("fieldgate.yaml")
	}
	cfg := config.Default()
	if path != "" {
		var err error
		if cfg, err = config.Load(path); err != nil {
			printErrors(stderr, path, err)
			return 1
		}
	}
	override := func(c *config.Config) {
		if *dataDir != "" {
			c.Gateway.DataDir = *dataDir
		}
		if *watchdog != "" {
			c.Board.Watchdog.Device = *watchdog
		}
	}
	override(&cfg)

	log := newLogger(cfg.Log, stderr)
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
	log.Info("starting", "version", version, "config", source, "data_dir", cfg.Gateway.DataDir)
	// Every socket is a descriptor: the whole hard limit, of which the page
	// may hold at most a quarter (web.max_connections), is the broker's reserve.
	if files, err := board.RaiseFileLimit(); err != nil {
		log.Warn("open file limit not raised", "error", err)
	} else {
		log.Debug("open file limit", "files", files)
	}
	writePath := path
	if writePath == "" {
		// Where the setup page writes a config when there is none; the next
		// start reads it from there.
		if exe, err := os.Executable(); err == nil {
			writePath = filepath.Join(filepath.Dir(exe), "fieldgate.yaml")
		}
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
	err := gateway.Run(ctx, gateway.Options{
		CPUStats:        cpus.Stats,
		ConfigPath:      path,
		ConfigWritePath: writePath,
		Config:          cfg,
		Logger:          log,
		Version:         version,
		Reload:          reload,
		Override:        override,
	})
	if err != nil {
		log.Error("gateway stopped", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
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

// besideBinary returns the path of name in the executable's directory if
// such a file exists, else "".
func besideBinary(name string) string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	p := filepath.Join(filepath.Dir(exe), name)
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
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

// configCheck parses and validates a file ("-" = stdin) and prints either
// "FILE: ok" or every error as "FILE: path: reason". A file larger than
// config.MaxFileSize is refused before it is read.
func configCheck(path string, stdin io.Reader, stdout, stderr io.Writer) int {
	if path == "-" {
		data, err := config.ReadAll(stdin)
		if err != nil {
			fmt.Fprintf(stderr, "<stdin>: %v\n", err)
			return 1
		}
		c, err := config.Parse(data)
		if err == nil {
			err = c.Validate()
		}
		path = "<stdin>"
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

// printErrors prints each line of a (joined) config error prefixed with the
// file it came from.
func printErrors(w io.Writer, file string, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(w, "%s: %s\n", file, line)
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
