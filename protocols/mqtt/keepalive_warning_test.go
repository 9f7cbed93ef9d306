package mqtt

import (
	"bufio"
	"log/slog"
	"strings"
	"testing"
)

// Issue 12, item 6: the engine warned "below minimum" for a keep alive of 5
// seconds, the minimum itself.
func TestKeepaliveWarningOnlyBelowMinimum(t *testing.T) {
	t.Parallel()
	var logs wireLog
	tb, pki := wireStart(t, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})), nil, nil)
	for _, tc := range []struct {
		id        string
		keepalive uint16
		level     byte
	}{
		{"ka5-v5", 5, 5},
		{"ka5-v4", 5, 4},
		{"ka60", 60, 5},
		{"ka0", 0, 4},
		{"ka4", 4, 5},
	} {
		c := wireDial(t, tb, pki, "tcp")
		wireConnect(t, c, bufio.NewReader(c), tc.level, tc.id, tc.keepalive, "", "")
	}
	var warned []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "below minimum") {
			warned = append(warned, line)
		}
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "client=ka4 ") || !strings.Contains(warned[0], "keepalive=4 ") || !strings.Contains(warned[0], "minimum=5") {
		t.Errorf("keep alive warnings: %q, want one for client ka4 (keepalive=4, minimum=5)", warned)
	}
}
