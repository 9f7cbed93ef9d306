package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// binary is the fieldgate binary built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "fieldgate-cmd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "fieldgate")
	build := exec.Command("go", "build", "-o", binary,
		"-ldflags", "-X main.version=v9.9.9-test -X main.commit=abc123 -X main.date=2030-01-02T03:04:05Z", ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build fieldgate:", err)
		return 1
	}
	return m.Run()
}

// fieldgate runs the binary with stdin and returns its output and exit code.
func fieldgate(t *testing.T, stdin []byte, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("run fieldgate %q: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

func TestVersion(t *testing.T) {
	out, _, code := fieldgate(t, nil, "version")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"v9.9.9-test", "abc123", "2030-01-02T03:04:05Z", runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}
}

func TestConfigDefaultChecksOK(t *testing.T) {
	def, _, code := fieldgate(t, nil, "config", "default")
	if code != 0 || !strings.Contains(def, "version: 1") {
		t.Fatalf("config default: exit %d\n%s", code, def)
	}
	out, errOut, code := fieldgate(t, []byte(def), "config", "check", "-")
	if code != 0 || strings.TrimSpace(out) != "<stdin>: ok" {
		t.Errorf("config check -: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

func TestConfigCheckFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("version: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, code := fieldgate(t, nil, "config", "check", good)
	if code != 0 || strings.TrimSpace(out) != good+": ok" {
		t.Errorf("good file: exit %d, output %q", code, out)
	}

	bad := filepath.Join(dir, "bad.yaml")
	data := "version: 1\nlog:\n  level: loud\nbroker:\n  limits:\n    max_packet_size: 5\n"
	if err := os.WriteFile(bad, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := fieldgate(t, nil, "config", "check", bad)
	if code != 1 {
		t.Errorf("bad file: exit %d, want 1", code)
	}
	want := []string{
		bad + ":3:10: log.level: must be one of debug, info, warn, error, got \"loud\"",
		bad + ":6:22: broker.limits.max_packet_size: must be between 16 and 268435456, got 5",
	}
	for _, w := range want {
		if !strings.Contains(errOut, w+"\n") {
			t.Errorf("output lacks %q:\n%s", w, errOut)
		}
	}
	if n := strings.Count(errOut, "\n"); n != len(want) {
		t.Errorf("%d lines, want %d:\n%s", n, len(want), errOut)
	}

	_, errOut, code = fieldgate(t, nil, "config", "check", filepath.Join(dir, "none.yaml"))
	if code != 1 || !strings.Contains(errOut, "none.yaml") {
		t.Errorf("missing file: exit %d, output %q", code, errOut)
	}
}

func TestPasswd(t *testing.T) {
	out, errOut, code := fieldgate(t, []byte("correct horse\nsecond line\n"), "passwd")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	hash := []byte(strings.TrimSpace(out))
	if err := bcrypt.CompareHashAndPassword(hash, []byte("correct horse")); err != nil {
		t.Errorf("hash %q does not verify: %v", hash, err)
	}
	if cost, err := bcrypt.Cost(hash); err != nil || cost != passwdCost {
		t.Errorf("cost = %d, %v; want %d", cost, err, passwdCost)
	}

	for _, in := range []string{"", "\n", "\r\n"} {
		if _, _, code := fieldgate(t, []byte(in), "passwd"); code != 1 {
			t.Errorf("passwd with input %q: exit %d, want 1", in, code)
		}
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("version: 1\nbrokr: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := fieldgate(t, nil, "run", "-config", bad)
	if code != 1 || !strings.Contains(errOut, bad+":2:1: brokr: unknown field") {
		t.Errorf("exit %d, output %q", code, errOut)
	}
	// Flags without the subcommand mean run.
	if _, _, code := fieldgate(t, nil, "-config", bad); code != 1 {
		t.Errorf("implicit run: exit %d, want 1", code)
	}
}

func TestUnknownCommand(t *testing.T) {
	_, errOut, code := fieldgate(t, nil, "frobnicate")
	if code != 2 || !strings.Contains(errOut, "usage:") {
		t.Errorf("exit %d, output %q", code, errOut)
	}
}
