package mqtt

import "testing"

// TestACLDollarTopics: with the rules the Paho suites are run under (deny
// subscribe test/nosubscribe, allow # all), a client may publish to
// "$TopicA/B" — a rule means the same topics for reading and writing, and
// the read check already lets `#` cover "$TopicA/B" — but never to $SYS or
// to the gateway's own $fieldgate/ topics (the watchdog's bus probe), with
// or without ACL rules.
func TestACLDollarTopics(t *testing.T) {
	withRules := DefaultConfig()
	withRules.ACL = []ACLRule{
		{Topic: "test/nosubscribe", Action: "subscribe", Permission: "deny"},
		{Topic: "#", Action: "all", Permission: "allow"},
	}
	for _, tc := range []struct {
		name  string
		cfg   Config
		topic string
		want  bool
	}{
		{"rules: $ topic", withRules, "$TopicA/B", true},
		{"rules: plain topic", withRules, "TopicA/B", true},
		{"rules: $SYS", withRules, "$SYS/broker/x", false},
		{"rules: $sys any case", withRules, "$sys/x", false},
		{"rules: the bus probe", withRules, "$fieldgate/probe", false},
		{"no rules: $ topic", DefaultConfig(), "$TopicA/B", true},
		{"no rules: the bus probe", DefaultConfig(), "$fieldgate/probe", false},
		{"no rules: the will sink", DefaultConfig(), willSink, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := secCompile(t, tc.cfg).aclAllows("u", "c", tc.topic, true); got != tc.want {
				t.Fatalf("publish to %q allowed = %v, want %v", tc.topic, got, tc.want)
			}
		})
	}
}
