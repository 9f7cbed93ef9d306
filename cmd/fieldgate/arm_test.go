package main

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/peertest"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// armTargets are the ARM builds `make cross` ships, and the qemu-user
// emulator that runs each (Debian's qemu-user-static).
var armTargets = []struct {
	name, goarch, goarm, qemu string
	machine                   elf.Machine
}{
	{name: "armv7", goarch: "arm", goarm: "7", qemu: "qemu-arm-static", machine: elf.EM_ARM},
	{name: "arm64", goarch: "arm64", qemu: "qemu-aarch64-static", machine: elf.EM_AARCH64},
}

// requireTool returns the path of a peer program; it skips the test when
// the program is missing, except under CI where that is a failure.
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	return peertest.Need(t, name, pkg)
}

// TestARMBinariesUnderQEMU runs the linux/arm (GOARM=7) and linux/arm64
// binaries under qemu-user: they must be static ELF files for the right
// machine, print their version, and serve a broker round trip with
// mosquitto_pub/mosquitto_sub on loopback. It uses the binaries of `make
// cross` when FIELDGATE_DIST names their directory (make test does that),
// else builds them. Sizes and idle RSS under emulation are logged (-v).
func TestARMBinariesUnderQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("emulated ARM run skipped in -short mode")
	}
	pub := requireTool(t, "mosquitto_pub", "mosquitto-clients")
	sub := requireTool(t, "mosquitto_sub", "mosquitto-clients")
	for _, target := range armTargets {
		t.Run(target.name, func(t *testing.T) {
			qemu := requireTool(t, target.qemu, "qemu-user-static")
			bin, stamped := armBinary(t, target.name, target.goarch, target.goarm)
			checkStaticELF(t, bin, target.machine)

			out, err := exec.Command(qemu, bin, "version").CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s version: %v\n%s", target.qemu, bin, err, out)
			}
			for _, want := range []string{stamped, "linux/" + target.goarch} {
				if !strings.Contains(string(out), want) {
					t.Errorf("version output lacks %q:\n%s", want, out)
				}
			}
			t.Logf("version under %s:\n%s", target.qemu, out)
			brokerRoundTrip(t, qemu, bin, pub, sub)
		})
	}
}

// armBinary returns the binary for name from $FIELDGATE_DIST, or builds it,
// and the version string stamped into it ("" = any).
func armBinary(t *testing.T, name, goarch, goarm string) (path, version string) {
	t.Helper()
	if dir := os.Getenv("FIELDGATE_DIST"); dir != "" {
		path = filepath.Join(dir, "fieldgate-linux-"+name)
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("FIELDGATE_DIST is set but: %v (run make cross)", err)
		}
		return path, ""
	}
	path = filepath.Join(t.TempDir(), "fieldgate-linux-"+name)
	build := exec.Command("go", "build", "-trimpath", "-o", path,
		"-ldflags", "-s -w -X main.version=v9.9.9-arm -X main.commit=abc123 -X main.date=2030-01-02T03:04:05Z", ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOARM="+goarm)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	return path, "v9.9.9-arm"
}

// checkStaticELF checks the machine and that there is no dynamic loader.
func checkStaticELF(t *testing.T, path string, machine elf.Machine) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("%s: machine %v, want %v", path, f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s: dynamically linked (%v)", path, p.Type)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d bytes (%.1f MiB), static %v", filepath.Base(path), st.Size(), float64(st.Size())/(1<<20), f.Machine)
}

// brokerRoundTrip starts the gateway under qemu on a loopback port, sends a
// retained QoS 1 message with mosquitto_pub and reads it back with
// mosquitto_sub, measures the idle RSS, then stops it with SIGTERM.
func brokerRoundTrip(t *testing.T, qemu, bin, pub, sub string) {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	cfg := fmt.Sprintf(`version: 1
gateway:
  data_dir: %q
web:
  enabled: false
mqttsn:
  enabled: false
coap:
  enabled: false
broker:
  listeners:
    tcp:
      address: "127.0.0.1:%d"
    websocket:
      enabled: false
`, filepath.Join(dir, "data"), port)
	cfgPath := filepath.Join(dir, "fieldgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	gw := exec.Command(qemu, bin, "run", "-config", cfgPath)
	gw.Stdout, gw.Stderr = &logs, &logs
	start := time.Now()
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- gw.Wait() }()
	defer func() {
		if gw.ProcessState == nil {
			gw.Process.Kill()
			<-done
		}
	}()

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	listening := testwait.Until(60*time.Second, func() bool {
		select {
		case err := <-done:
			t.Fatalf("gateway exited before listening: %v\n%s", err, logs.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if !listening {
		t.Fatalf("gateway not listening on %s after 60 s\n%s", addr, logs.String())
	}
	t.Logf("listening after %s under emulation", time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := strconv.Itoa(port)
	payload := "arm round trip " + filepath.Base(bin)
	if out, err := exec.CommandContext(ctx, pub, "-h", "127.0.0.1", "-p", p, "-V", "mqttv5", "-q", "1", "-r",
		"-t", "test/arm", "-m", payload).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s\n%s", err, out, logs.String())
	}
	out, err := exec.CommandContext(ctx, sub, "-h", "127.0.0.1", "-p", p, "-V", "mqttv311", "-q", "1",
		"-t", "test/arm", "-C", "1", "-W", "30").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != payload {
		t.Fatalf("mosquitto_sub: %v, got %q, want %q\n%s", err, out, payload, logs.String())
	}

	if rss, err := vmRSS(gw.Process.Pid); err == nil {
		t.Logf("idle RSS under emulation (qemu + gateway): %d KiB (%.1f MiB)", rss, float64(rss)/1024)
	}

	if err := gw.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("gateway exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("gateway did not stop within 30 s of SIGTERM\n%s", logs.String())
	}
}

// freePort returns a TCP port that was free on loopback a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// vmRSS reads the resident set of a process in KiB.
func vmRSS(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}
