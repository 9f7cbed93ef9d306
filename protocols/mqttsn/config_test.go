package mqttsn

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateErrors(t *testing.T) {
	c := DefaultConfig()
	c.Address = "1884"
	c.GatewayID = 256
	c.AdvertiseInterval = 15 * time.Minute
	c.AdvertiseAddress = "nowhere"
	c.PredefinedTopics = []PredefinedTopic{{ID: 1, Topic: "a"}, {ID: 1, Topic: "b"}, {ID: 0, Topic: "c/+"}, {ID: 3, Topic: "a"}}
	c.Clients.Allow = []string{"", "a*b"}
	c.Clients.Usernames = []ClientUsername{{ClientID: "x*", Username: ""}}
	c.RetryInterval = 0
	c.RetryCount = -1
	c.MaxInflight = 0
	c.SleepBuffer = 70000
	c.MaxClients = 0
	c.MaxClientsPerAddress = -1
	c.ConnectTimeout = 0
	c.MaxTopics = 0
	c.SessionExpiry = -time.Second
	c.MaxKeepAlive = -time.Second
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	want := []string{
		"address: must be host:port",
		"gateway_id: must be between 0 and 255, got 256",
		"advertise_address: must be host:port",
		"predefined_topics[1].id: duplicate of predefined_topics[0] (1)",
		"predefined_topics[2].id: must be between 1 and 65534",
		"predefined_topics[2].topic: \"c/+\" is a topic name",
		"predefined_topics[3].topic: duplicate of predefined_topics[0] (\"a\")",
		"clients.allow[0]: must not be empty",
		"clients.allow[1]: only a trailing * is supported",
		"clients.usernames[0].username: must not be empty",
		"retry_interval: must be greater than 0",
		"retry_count: must be between 0 and 100, got -1",
		"max_inflight: must be between 1 and 65535, got 0",
		"sleep_buffer: must be between 1 and 65535, got 70000",
		"max_clients: must be between 1",
		"max_clients_per_address: must be between 0 and 1000000, got -1",
		"connect_timeout: must be between 1s and 5m0s, got 0s",
		"max_topics: must be between 1",
		"session_expiry: must be between 0s",
		"max_keepalive: must be 0s (off) or more, got -1s",
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Errorf("%d errors, want %d:\n%v", len(lines), len(want), err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
}

func TestDisabledSkipsAddress(t *testing.T) {
	c := DefaultConfig()
	c.Enabled = false
	c.Address = ""
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestMatchPattern(t *testing.T) {
	for _, tt := range []struct {
		pattern, id string
		want        bool
	}{
		{"*", "x", true}, {"dev-*", "dev-1", true}, {"dev-*", "de", false}, {"dev-1", "dev-1", true}, {"dev-1", "dev-10", false},
	} {
		if got := matchPattern(tt.pattern, tt.id); got != tt.want {
			t.Errorf("matchPattern(%q, %q) = %v", tt.pattern, tt.id, got)
		}
	}
}
