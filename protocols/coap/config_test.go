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
	c.DTLS.PSK = []PSK{{Identity: "a", Key: "k"}, {Identity: "a", Key: ""}}
	c.DTLS.Cert = "/nonexistent.pem"
	err := c.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"address:", "notify_type:", "heartbeat:", "max_payload:", "dtls.psk[1].identity: duplicate", "dtls.psk[1].key:", "dtls.key: required"} {
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
