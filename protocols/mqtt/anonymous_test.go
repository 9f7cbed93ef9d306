package mqtt

import (
	"strings"
	"testing"
)

// TestAnonymousRules: on defaults anonymous clients may not publish the
// southbound write commands (whatever the ACL says) but may publish the
// rest; users may; anonymous_listeners limits where anonymous clients
// connect, and bad values are refused with their path.
func TestAnonymousRules(t *testing.T) {
	cfg := DefaultConfig()
	rt, err := compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, topic string
		want        bool
	}{
		{"", "southbound/plc1/valve/set", false},
		{"", "southbound/plc1/valve", true},
		{"", "southbound/plc1/valve/set/result", true},
		{"", "sensors/boiler/temp", true},
		{"ops", "southbound/plc1/valve/set", true},
	} {
		if got := rt.aclAllows(c.user, "c1", c.topic, true); got != c.want {
			t.Errorf("publish %q as %q: %v, want %v", c.topic, c.user, got, c.want)
		}
	}
	// An ACL allowing everything does not open the set topics to anonymous
	// clients.
	cfg.ACL = []ACLRule{{Topic: "#", Action: "all", Permission: "allow"}}
	if rt, _ = compile(cfg); rt.aclAllows("", "c1", "southbound/plc1/valve/set", true) {
		t.Error("ACL allow-all opened the set topics to anonymous clients")
	}
	for _, id := range []string{"tcp", "ws", "wss", "quic", "mqttsn", "coap"} {
		if !rt.anonymousOn(id) {
			t.Errorf("defaults: anonymous refused on %s", id)
		}
	}
	cfg.Auth.AnonymousListeners = []string{"websocket", "mqttsn"}
	rt, _ = compile(cfg)
	for id, want := range map[string]bool{"tcp": false, "ws": true, "wss": true, "quic": false, "mqttsn": true, "coap": false} {
		if rt.anonymousOn(id) != want {
			t.Errorf("anonymous on %s: %v, want %v", id, !want, want)
		}
	}
	cfg.Auth.AnonymousListeners = []string{"telnet"}
	cfg.Auth.AnonymousDenyPublish = []string{"a/#/b"}
	err = cfg.Validate()
	for _, want := range []string{"auth.anonymous_listeners[0]", "auth.anonymous_deny_publish[0]"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validation lacks %s: %v", want, err)
		}
	}
}
