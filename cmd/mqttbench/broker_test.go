package main

import (
	"errors"
	"strings"
	"testing"
)

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 4}
	for _, s := range []string{"ab", "cdef", "ghijkl", "m"} {
		if n, err := tb.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if got := tb.String(); got != "jklm" {
		t.Errorf("String() = %q, want the last 4 bytes %q", got, "jklm")
	}
}

func TestBrokerConfigs(t *testing.T) {
	if got, want := mosquittoConfig(1234), "listener 1234 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n"; got != want {
		t.Errorf("mosquittoConfig = %q, want %q", got, want)
	}
	got := fieldgateConfig("/tmp/d", "127.0.0.1:1234")
	for _, want := range []string{
		"version: 1\n",
		"  data_dir: \"/tmp/d\"\n",
		"    tcp: {enabled: true, address: \"127.0.0.1:1234\"}\n",
		"    websocket: {enabled: false}\n",
		"    max_connections: 20000\n",
		"    max_connections_per_address: 0\n",
		"    max_queued: 100000\n",
		"web: {enabled: false}\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("fieldgateConfig lacks %q:\n%s", want, got)
		}
	}
}

func TestStartErrorNamesLastOutputLine(t *testing.T) {
	err := &startError{label: "fieldgate", err: errors.New("exit status 1"), output: "starting\nconfig: web: unknown key\n\n"}
	if got, want := err.Error(), "start fieldgate: exit status 1: config: web: unknown key"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
