package check

import (
	"strings"
	"testing"
)

// TestAddressHosts: a host of digits and dots is an IPv4 address and must
// be one (issue 14: 192.168.1.300:502 was saved); names and IPv6 pass.
func TestAddressHosts(t *testing.T) {
	for _, tt := range []struct {
		addr, err string
	}{
		{"192.168.1.30:502", ""},
		{"plc-4.local:502", ""},
		{"[fe80::1]:502", ""},
		{":1883", ""},
		{"192.168.1.300:502", `"192.168.1.300" is not an IPv4 address`},
		{"10.0.0:502", `"10.0.0" is not an IPv4 address`},
		{"1.2.3.4.5:502", `"1.2.3.4.5" is not an IPv4 address`},
	} {
		var e Errors
		e.Address("address", tt.addr, "10.0.0.5:502")
		got := ""
		if err := e.Err(); err != nil {
			got = err.Error()
		}
		if tt.err == "" && got != "" || tt.err != "" && !strings.Contains(got, tt.err) {
			t.Errorf("Address(%q) = %q, want %q", tt.addr, got, tt.err)
		}
	}
}
