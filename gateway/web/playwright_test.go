package web

import (
	"os"
	"os/exec"
	"testing"

	"github.com/fieldgate/fieldgate/internal/peertest"
)

// playwrightNode returns the node binary that runs the Playwright scripts in
// e2e/, after checking their peers: Debian's chromium and playwright-core
// from `npm ci`. A missing peer skips the test, or fails it when CI is set
// (internal/peertest); -short skips it.
func playwrightNode(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("short")
	}
	missing := func(what string) {
		t.Helper()
		peertest.Missing(t, what, "apt-get install chromium; cd gateway/web/e2e && npm ci")
	}
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		missing("no /usr/bin/chromium (apt-get install chromium)")
	}
	if _, err := os.Stat("e2e/node_modules/playwright-core"); err != nil {
		missing("no playwright-core (cd gateway/web/e2e && npm ci)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("no node (apt-get install nodejs)")
	}
	return node
}
