package coap

import (
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c := DefaultConfig()
	c.Address = "5683"
	c.NotifyType = "sometimes"
	c.Heartbeat = 0
	c.MaxPayload = 0
	c.DTLS.Enabled = true
	c.DTLS.PSK = []PSK{psk("a", "k"), psk("a", "")}
	c.DTLS.Cert = "/nonexistent.pem"
	c.MaxObservationsPerEndpoint = 0
	c.MaxObservations = -1
	c.ObserveCheck = 25 * time.Hour
	err := c.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"address:", "notify_type:", "heartbeat:", "max_payload:", "dtls.psk[1].identity: duplicate", "dtls.psk[1].key:", "dtls.key: required",
		"max_observations_per_endpoint: must be between 1 and 65535, got 0", "max_observations: must be between 1",
		"observe_check_interval: must be between 1s and 24h0m0s, got 25h0m0s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), `"k"`) {
		t.Errorf("a PSK key is echoed: %v", err)
	}
	c = DefaultConfig()
	c.Enabled = false
	c.Heartbeat = -time.Second
	if err := c.Validate(); err != nil {
		t.Fatalf("disabled section checked: %v", err)
	}
}
