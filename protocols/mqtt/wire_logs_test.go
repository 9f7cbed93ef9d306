package mqtt

import (
	"bufio"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
)

// wireMarker is the secret of the hostile session below: alice's password,
// and the payload of every bad packet.
const wireMarker = "S3cr3t-h1a-marker"

// wireSecretForms are the ways a log line has shown wireMarker: as text, as
// the decimal bytes of a %v packet dump (the issue's "payload as decimal
// bytes"), as hex, and as the base64 of a JSON []byte.
func wireSecretForms(s string) []string {
	dec := fmt.Sprint([]byte(s))
	return []string{s, dec[1 : len(dec)-1], hex.EncodeToString([]byte(s)), base64.StdEncoding.EncodeToString([]byte(s))}
}

// wireBadPackets are packets, each of which ends the session that sends it
// after a valid CONNECT, and each carries wireMarker (as password or
// payload).
func wireBadPackets(level byte) map[string][]byte {
	m := []byte(wireMarker)
	badProps := append(secStr("t"), 0, 1)      // QoS 1, packet id 1
	badProps = append(badProps, 2, 0xFF, 0x00) // properties: 2 bytes, id 0xFF does not exist
	badProps = append(badProps, m...)
	out := map[string][]byte{
		// Item 3, first bullet: the second CONNECT printed its password.
		"second CONNECT":     wireConnectPkt(level, "hostile", 60, "alice", wireMarker),
		"wildcard topic":     secPublishPkt(level, "a/#", 0, 0, m),
		"QoS 3 flags":        secPacket(0x36, append(append(secStr("t"), 0, 1), m...)),
		"reserved type":      secPacket(0x00, m),
		"oversized publish":  secPublishPkt(level, "t", 0, 0, []byte(strings.Repeat(wireMarker, 300))),
		"non-minimal length": append([]byte{0x30, 0x80, 0x00}, m...),
	}
	if level == 5 {
		out["bad property"] = secPacket(0x32, badProps)
	} else {
		// a QoS 1 publish whose packet id is cut off
		out["truncated packet id"] = secPacket(0x32, append(secStr(wireMarker), 7))
	}
	return out
}

// TestWireBadPacketLogs: a hostile session sends malformed and refused
// packets carrying a secret (in the password of a second CONNECT and in
// payloads) over every transport, then 1,000 bad packets from one client
// id. Everything logged, at every level and in text and JSON, must be free
// of the secret, and the flood must leave only a handful of lines at the
// default level (info).
func TestWireBadPacketLogs(t *testing.T) {
	var text, jsonOut wireLog
	log := slog.New(slog.NewMultiHandler(
		slog.NewTextHandler(&text, &slog.HandlerOptions{Level: slog.LevelDebug}),
		slog.NewJSONHandler(&jsonOut, &slog.HandlerOptions{Level: slog.LevelDebug}),
	))
	hash := secHash(t, wireMarker)
	tb, pki := wireStart(t, log, nil, func(c *Config) {
		c.Auth.Users = []User{{Username: "alice", PasswordHash: hash}}
		c.Limits.MaxPacketSize = 4096
		c.Limits.MaxConnectionsPerAddress = 0 // the flood reconnects quickly
	})

	// session connects as alice and sends bad; the broker must close it.
	session := func(t *testing.T, transport string, level byte, id string, bad []byte) {
		t.Helper()
		c := wireDial(t, tb, pki, transport)
		r := bufio.NewReader(c)
		wireConnect(t, c, r, level, id, 60, "alice", wireMarker)
		_, _ = c.Write(bad) // may fail: the broker refuses some at their header
		wireClosed(t, c, wireWait)
		_ = c.Close()
	}

	for _, transport := range []string{"tcp", "tls", "ws", "quic"} {
		for _, level := range []byte{4, 5} {
			for name, bad := range wireBadPackets(level) {
				t.Run(fmt.Sprintf("%s/v%d/%s", transport, level, name), func(t *testing.T) {
					session(t, transport, level, secID("bad"), bad)
				})
			}
		}
	}
	// A wrong password (the secret with one more character) and a CONNECT
	// cut off inside its password.
	c := wireDial(t, tb, pki, "tcp")
	_, _ = c.Write(wireConnectPkt(4, "guess", 60, "alice", wireMarker+"!"))
	wireClosed(t, c, wireWait)
	c = wireDial(t, tb, pki, "tcp")
	cut := wireConnectPkt(5, "cut", 60, "alice", wireMarker)
	_, _ = c.Write(append(cut[:len(cut)-4:len(cut)-4], 0xC0, 0x00))
	_ = c.Close()

	// The engine logs each kind of bad packet, with type and sizes.
	secEventually(t, wireWait, "bad packets logged", func() bool {
		s := text.String()
		return strings.Contains(s, "error processing packet") && strings.Contains(s, "packet.type=Connect") &&
			strings.Contains(s, "malformed packet") && strings.Contains(s, "packet.payload_length=")
	})

	// The flood: 1,000 bad packets from one client id, on a fresh broker
	// (the one above has used up the engine's overall allowance of lines).
	tb.stop()
	flood, _ := wireStart(t, log, nil, func(c *Config) {
		c.Auth.Users = []User{{Username: "alice", PasswordHash: hash}}
		c.Limits.MaxPacketSize = 4096
		c.Limits.MaxConnectionsPerAddress = 0 // the flood reconnects quickly
	})
	secEventually(t, wireWait, "second broker started", func() bool {
		return strings.Count(text.String(), "mochi mqtt server started") == 2
	})
	before := wireLevelLines(text.String(), slog.LevelInfo)
	kinds := wireBadPackets(4)
	names := make([]string, 0, len(kinds))
	for name := range kinds {
		names = append(names, name)
	}
	start := time.Now()
	const floodN = 1000
	for i := range floodN {
		c, err := net.DialTimeout("tcp", flood.Addr("tcp"), wireWait)
		if err != nil {
			t.Fatalf("flood dial %d: %v", i, err)
		}
		r := bufio.NewReader(c)
		// Anonymous (allowed): a bcrypt check per round would only slow
		// the test down; the bad packets carry the secret all the same.
		wireConnect(t, c, r, 4, "hostile", 60, "", "")
		_, _ = c.Write(kinds[names[i%len(names)]])
		_ = c.SetReadDeadline(time.Now().Add(wireWait))
		for {
			if _, err := r.ReadByte(); err != nil {
				break
			}
		}
		_ = c.Close()
	}
	// The last session's logs: wait until its connection is gone and the
	// log has been quiet for 100 ms.
	lastLen, quietSince := -1, time.Now()
	testwait.For(t, wireWait, "the flood's last session to end and the log to go quiet", func() bool {
		n := len(text.String())
		if n != lastLen || flood.Info().ClientsConnected > 0 {
			lastLen, quietSince = n, time.Now()
			return false
		}
		return time.Since(quietSince) >= 100*time.Millisecond
	})
	after := wireLevelLines(text.String(), slog.LevelInfo)
	flooded := after[len(before):]
	t.Logf("%d bad packets from one client in %s: %d lines at info or above:\n%s",
		floodN, time.Since(start).Round(time.Millisecond), len(flooded), strings.Join(flooded, "\n"))
	if len(flooded) > 5 {
		t.Fatalf("%d bad packets from one client logged %d lines at info or above, want at most 5", floodN, len(flooded))
	}

	flood.stop()
	all := text.String() + jsonOut.String()
	for _, form := range append(wireSecretForms(wireMarker), hash.Reveal()) {
		if i := strings.Index(all, form); i >= 0 {
			lo := strings.LastIndexByte(all[:i], '\n') + 1
			hi := i + strings.IndexByte(all[i:], '\n')
			t.Fatalf("the secret (as %q) is in the log:\n%s", form, all[lo:max(hi, i+len(form))])
		}
	}
	t.Logf("%d log lines (debug and above, text), none with the secret; the bad-packet lines:\n%s",
		strings.Count(text.String(), "\n"), strings.Join(wireGrep(text.String(), "packet.type="), "\n"))
}

// wireLevelLines returns the text-handler lines at level or above.
func wireLevelLines(out string, level slog.Level) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		for _, lv := range []slog.Level{slog.LevelInfo, slog.LevelWarn, slog.LevelError} {
			if lv >= level && strings.Contains(l, " level="+lv.String()+" ") {
				lines = append(lines, l)
				break
			}
		}
	}
	return lines
}

// wireGrep returns the lines of out that contain s.
func wireGrep(out, s string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			lines = append(lines, l)
		}
	}
	return lines
}
