package coap

import (
	"fmt"
	"strings"
	"testing"

	"github.com/fieldgate/fieldgate/internal/secret"
)

// psk is a PSK entry for tests.
func psk(identity, key string) PSK {
	return PSK{Identity: identity, Key: secret.New(key)}
}

// TestPSKKeyNeverShown checks that a PSK's key is neither in validation
// errors nor in the formatted config.
func TestPSKKeyNeverShown(t *testing.T) {
	c := DefaultConfig()
	c.DTLS.Enabled = true
	c.DTLS.PSK = []PSK{psk("a", "very-secret-psk"), psk("a", "very-secret-psk")}
	err := c.Validate()
	if err == nil {
		t.Fatal("duplicate identity accepted")
	}
	for _, s := range []string{err.Error(), fmt.Sprintf("%v %+v %#v %s", c, c, c, c.DTLS.PSK)} {
		if strings.Contains(s, "very-secret-psk") {
			t.Errorf("key shown: %s", s)
		}
	}
}
