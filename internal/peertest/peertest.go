// Package peertest finds the real peers the integration tests drive
// (mosquitto, coap-client, pymodbus, socat, nats-server, chromium, qemu…).
// A missing peer fails the test with the command that installs it, unless
// the person running the tests asked to skip such tests with SKIP_PEERS=1:
// then the test is skipped and the test summary lists it. A test never
// skips silently because a package was not installed.
package peertest

import (
	"os"
	"os/exec"
	"testing"
)

// Skipping reports whether SKIP_PEERS=1 asks to skip tests whose peer is
// missing.
func Skipping() bool { return os.Getenv("SKIP_PEERS") == "1" }

// Missing fails t, or skips it under SKIP_PEERS=1, because what is missing.
// install says how to get it (for example "apt-get install socat").
func Missing(t testing.TB, what, install string) {
	t.Helper()
	if Skipping() {
		t.Skipf("peer missing, skipped (SKIP_PEERS=1): %s (%s)", what, install)
	}
	t.Fatalf("peer missing: %s; install it with `%s` or run `make deps` as root (SKIP_PEERS=1 skips tests that need a missing peer)", what, install)
}

// Need returns the path of the program name, or fails (skips under
// SKIP_PEERS=1) when it is not on PATH. debPkg is the Debian package that
// has it.
func Need(t testing.TB, name, debPkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, name+" not on PATH", "apt-get install "+debPkg)
	}
	return p
}
