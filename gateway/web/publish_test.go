package web

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"

	"github.com/fieldgate/fieldgate/bus"
)

// Publish hands the message to the fake's subscribers.
func (f *fakeBackend) Publish(_ context.Context, m bus.Message) error {
	f.publish(m)
	return nil
}

// TestTestPublish: the Live page's test message reaches a subscriber; a
// topic with wildcards, a $ topic or an oversized payload is refused with
// the field named, and nothing is published; it needs the admin.
func TestTestPublish(t *testing.T) {
	h := start(t, testConfig(), nil)
	c := h.setUp()
	var mu sync.Mutex
	var got []bus.Message
	unsub, err := h.b.Subscribe("plant/#", func(m bus.Message) { mu.Lock(); got = append(got, m); mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	big := make([]byte, maxTestPayload+1)
	for i := range big {
		big[i] = 'x'
	}
	for _, bad := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"topic": "plant/#", "payload": "1"}, "topic"},
		{map[string]any{"topic": "", "payload": "1"}, "topic"},
		{map[string]any{"topic": "$fieldgate/x", "payload": "1"}, "topic"},
		{map[string]any{"topic": "plant/a", "payload": string(big)}, "payload"},
		{map[string]any{"topic": "plant/a", "qos": 3}, "qos"},
	} {
		code, body, _ := c.do("POST", "/api/v1/publish", bad.body)
		fields, _ := body["fields"].([]any)
		if code != 400 || len(fields) == 0 || fields[0].(map[string]any)["field"] != bad.field {
			t.Errorf("%v: %d %v, want 400 naming %s", bad.body["topic"], code, body, bad.field)
		}
	}
	noCSRF := *c
	noCSRF.csrf = ""
	if code, _, _ := noCSRF.do("POST", "/api/v1/publish", map[string]any{"topic": "plant/a", "payload": "1"}); code != 403 {
		t.Errorf("publish without CSRF: %d", code)
	}
	if code, body, _ := c.do("POST", "/api/v1/publish", map[string]any{"topic": "plant/line1/test", "payload": `{"v":21.5}`, "qos": 1}); code != 200 || body["published"] != true {
		t.Fatalf("publish: %d %v", code, body)
	}
	deadline := time.Now().Add(5 * time.Second)
	testwait.Until(time.Until(deadline), func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].Topic != "plant/line1/test" || string(got[0].Payload) != `{"v":21.5}` || got[0].QoS != 1 || got[0].Origin != "$web" {
		t.Fatalf("subscriber got %+v, want the one good message", got)
	}
}
