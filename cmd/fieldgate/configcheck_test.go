package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestConfigCheckHugeFile is issue 17's `fieldgate config check` on a
// 100 MB file, which took 43 s and 2.7 GB before refusing it: the binary
// now refuses it by its size, in well under a second, allocating next to
// nothing.
func TestConfigCheckHugeFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "huge.yaml")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("version: 1\nlog:\n  level: info\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(100 << 20); err != nil { // sparse: 100 MiB of zeros
		t.Fatal(err)
	}
	f.Close()

	cmd := exec.Command(binary, "config", "check", path)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	if err == nil {
		t.Fatalf("accepted: %s", out.String())
	}
	want := path + ": config: config file is 100 MiB, larger than the 4 MiB limit\n"
	if out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
	t.Logf("the binary refused it in %v", took)
	if took > 2*time.Second { // a process start included; the read itself takes microseconds
		t.Errorf("took %v", took)
	}

	// The same in this process, to measure memory (a child's max RSS
	// includes its parent's before exec).
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var stdout, stderr bytes.Buffer
	start = time.Now()
	code := configCheck(path, nil, &stdout, &stderr)
	took = time.Since(start)
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("configCheck refused it in %v, %d bytes allocated", took, allocated)
	if code != 1 || stderr.String() != want {
		t.Errorf("configCheck: %d %q", code, stderr.String())
	}
	if allocated > 1<<20 {
		t.Errorf("allocated %d bytes", allocated)
	}
	if took > 500*time.Millisecond {
		t.Errorf("took %v", took)
	}
}

// zeros is an endless stream of zero bytes.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), z.n)
	clear(p[:n])
	z.n -= n
	return int(n), nil
}

// TestConfigCheckHugeStdin: `fieldgate config check -` reads at most the
// limit from a 100 MB stream and refuses it, without holding it.
func TestConfigCheckHugeStdin(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := configCheck("-", &zeros{n: 100 << 20}, &stdout, &stderr)
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	if code != 1 || !strings.Contains(stderr.String(), "larger than the 4 MiB limit") {
		t.Fatalf("code %d, stderr %q", code, stderr.String())
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("refused in %v, %.1f MiB allocated", took, float64(allocated)/(1<<20))
	if allocated > 32<<20 {
		t.Errorf("allocated %d MiB for a 100 MiB stream", allocated>>20)
	}
	if took > 15*time.Second { // 4 MiB read: milliseconds, but -race on a loaded machine is slow
		t.Errorf("took %v", took)
	}
}

// TestConfigCheckLineNumbers: `fieldgate config check` prints every
// problem as FILE:LINE:COL: path: reason (nats-server's form), in the order
// of the file, for parse errors, Validate's errors and Provision's (a
// certificate file that does not exist) alike; "-" names the file <stdin>.
func TestConfigCheckLineNumbers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fieldgate.yaml")
	bad := "version: 1\n" +
		"log:\n" +
		"  level: loud\n" +
		"southbound:\n" +
		"  modbus:\n" +
		"    devices:\n" +
		"      - name: plc\n" +
		"        tcp: {address: \"10.0.0.1:502\"}\n" +
		"        points:\n" +
		"          - {name: t, register: holding, address: 0, type: INT17}\n"
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := configCheck(path, nil, &stdout, &stderr); code != 1 {
		t.Fatalf("exit %d, stdout %q", code, stdout.String())
	}
	want := path + `:3:10: log.level: must be one of debug, info, warn, error, got "loud"` + "\n" +
		path + `:10:60: southbound.modbus.devices[0].points[0].type: must be one of BOOL, BIT, INT16, UINT16, INT32, UINT32, INT64, UINT64, FLOAT32, FLOAT64, STRING, got "INT17"` + "\n"
	if stderr.String() != want {
		t.Errorf("got\n%s\nwant\n%s", stderr.String(), want)
	}

	// The same from stdin, with a parse error.
	stderr.Reset()
	code := configCheck("-", strings.NewReader("version: 1\nbroker:\n  listeners:\n    tcp: {adress: x}\n"), &stdout, &stderr)
	if want := "<stdin>:4:11: broker.listeners.tcp.adress: unknown field\n"; code != 1 || stderr.String() != want {
		t.Errorf("stdin: exit %d, %q, want %q", code, stderr.String(), want)
	}

	// A certificate that is not there: Validate passes, provisioning names
	// the key, the file and the line.
	missing := filepath.Join(dir, "none.pem")
	tlsCfg := "version: 1\nbroker:\n  listeners:\n    tls:\n      enabled: true\n      cert: " + missing + "\n      key: " + missing + "\n"
	if err := os.WriteFile(path, []byte(tlsCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	code = configCheck(path, nil, &stdout, &stderr)
	want = path + ":6:13: broker.listeners.tls.cert: open " + missing + ": no such file or directory\n" +
		path + ":7:12: broker.listeners.tls.key: open " + missing + ": no such file or directory\n"
	if code != 1 || stderr.String() != want {
		t.Errorf("missing cert: exit %d, got\n%s\nwant\n%s", code, stderr.String(), want)
	}
}
