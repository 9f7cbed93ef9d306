package uplink

import (
	"bytes"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range []record{
		{Topic: "a", QoS: 0},
		{Topic: "gateways/gw1/sensors/t", Payload: []byte(`{"v":21.5}`), QoS: 1, Retain: true},
		{Topic: "x/y", Payload: bytes.Repeat([]byte{0, 0xff}, 40000), QoS: 1},
	} {
		got, err := decodeRecord(r.encode())
		if err != nil {
			t.Fatalf("%+v: %v", r.Topic, err)
		}
		if got.Topic != r.Topic || got.QoS != r.QoS || got.Retain != r.Retain || !bytes.Equal(got.Payload, r.Payload) {
			t.Fatalf("round trip: got %+v, want %+v", got, r)
		}
	}
}

func TestDecodeRecordRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":          nil,
		"short":          {1, 0},
		"version":        {2, 0, 1, 'a'},
		"qos 2":          {1, 2, 1, 'a'},
		"unknown flag":   {1, 8, 1, 'a'},
		"empty topic":    {1, 0, 0, 'a'},
		"topic too long": {1, 0, 5, 'a'},
		"wildcard":       {1, 0, 1, '#'},
	} {
		if _, err := decodeRecord(b); err == nil {
			t.Errorf("%s: accepted % x", name, b)
		}
	}
}

// FuzzDecodeRecord: outbox records come back from disk, possibly damaged;
// decoding never panics, and what decodes re-encodes to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(record{Topic: "gateways/gw1/t", Payload: []byte("21.5"), QoS: 1}.encode())
	f.Add(record{Topic: "a", Retain: true}.encode())
	f.Add([]byte{1, 1, 0x80, 0x80, 0x04})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		if again := r.encode(); !bytes.Equal(again, b) && len(b) < 1<<16 {
			// Non-minimal uvarints decode but re-encode shorter: only the
			// decoded values must agree.
			r2, err := decodeRecord(again)
			if err != nil || r2.Topic != r.Topic || !bytes.Equal(r2.Payload, r.Payload) || r2.QoS != r.QoS || r2.Retain != r.Retain {
				t.Fatalf("re-encode differs: %+v vs %+v (%v)", r, r2, err)
			}
		}
	})
}

func TestExpand(t *testing.T) {
	for _, c := range []struct{ tmpl, filter, topic, want string }{
		{"gateways/{gateway_id}/{topic}", "sensors/#", "sensors/a/t", "gateways/gw1/sensors/a/t"},
		{"site/{suffix}", "sensors/#", "sensors/a/t", "site/a/t"},
		{"site/{suffix}", "sensors/+/t", "sensors/a/t", "site/a/t"},
		{"fixed/topic", "#", "x", "fixed/topic"},
		{"up/{suffix}", "sensors/t", "sensors/t", "up/t"},
		{"cmd/{suffix}", "commands/gw1/#", "commands/gw1/pump/set", "cmd/pump/set"},
		{"cmd/{suffix}", "commands/gw1/#", "commands/gw1", "cmd"},
	} {
		if got := expand(c.tmpl, "gw1", c.filter, c.topic); got != c.want {
			t.Errorf("expand(%q, %q, %q) = %q, want %q", c.tmpl, c.filter, c.topic, got, c.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	c := DefaultConfig()
	c.Enabled = true
	c.Transport = "udp"
	c.Servers = []Server{{Host: "", QUICPort: 70000}}
	c.Forward = []ForwardRule{{Filter: "a/#/b", RemoteTopic: "x/{nope}", QoS: 2}}
	c.Downlink = []DownlinkRule{{Filter: "c/#", LocalTopic: "", QoS: 0}}
	c.Outbox.Policy = "keep"
	c.Inflight = 0
	c.MinClock = "yesterday"
	c.KeepAlive = 120 * 1e9
	c.QUIC.IdleTimeout = 60 * 1e9
	err := c.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"transport: must be one of", "servers[0].host: must not be empty", "servers[0].quic_port: must be between",
		"forward[0].filter", "forward[0].remote_topic: unknown placeholder {nope}", "forward[0].qos",
		"downlink[0].local_topic: must not be empty", "outbox.policy", "inflight", "min_clock", "quic.idle_timeout: must be at least 1.5",
	} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}
