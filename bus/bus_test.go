package bus

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		// MQTT 3.1.1 §4.7.1.2 and MQTT 5 §4.7.1.2: multi-level wildcard.
		{"sport/tennis/player1/#", "sport/tennis/player1", true},
		{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
		{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
		{"sport/#", "sport", true},
		{"sport/#", "sports", false},
		{"#", "sport/tennis", true},
		{"#", "/", true},
		{"#", "a", true},
		{"a/b/#", "a", false},
		// §4.7.1.3: single-level wildcard.
		{"sport/tennis/+", "sport/tennis/player1", true},
		{"sport/tennis/+", "sport/tennis/player2", true},
		{"sport/tennis/+", "sport/tennis/player1/ranking", false},
		{"sport/+", "sport", false},
		{"sport/+", "sport/", true},
		{"+/+", "/finance", true},
		{"/+", "/finance", true},
		{"+", "/finance", false},
		{"+", "finance", true},
		{"a/+/c", "a//c", true},
		{"+/tennis/#", "sport/tennis/player1", true},
		// §4.7.2: topics beginning with $.
		{"#", "$SYS/uptime", false},
		{"+/monitor/Clients", "$SYS/monitor/Clients", false},
		{"$SYS/#", "$SYS/monitor/Clients", true},
		{"$SYS/monitor/+", "$SYS/monitor/Clients", true},
		// Plain names.
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/b", "a/B", false},
		{"/", "/", true},
		{"a/", "a", false},
	}
	for _, tt := range tests {
		if got := Match(tt.filter, tt.topic); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
		}
	}
}

func TestValidFilter(t *testing.T) {
	tests := []struct {
		filter string
		want   bool
	}{
		{"sport/tennis/player1", true},
		{"sport/tennis/#", true},
		{"#", true},
		{"+", true},
		{"+/tennis/#", true},
		{"sport/+/player1", true},
		{"/", true},
		{"/finance", true},
		{"$SYS/#", true},
		{"", false},
		{"sport/tennis#", false},
		{"sport/tennis/#/ranking", false},
		{"#/", false},
		{"sport+", false},
		{"sport/+x", false},
		{"++", false},
	}
	for _, tt := range tests {
		if got := ValidFilter(tt.filter); got != tt.want {
			t.Errorf("ValidFilter(%q) = %v, want %v", tt.filter, got, tt.want)
		}
	}
}

func TestRefusalOf(t *testing.T) {
	if RefusalOf(nil) != nil {
		t.Error("RefusalOf(nil) != nil")
	}
	wrapped := errors.Join(errors.New("context"), ErrQuotaExceeded)
	if got := RefusalOf(wrapped); got != ErrQuotaExceeded {
		t.Errorf("RefusalOf(wrapped quota) = %v", got)
	}
	if got := RefusalOf(errors.New("disk on fire")); got != ErrUnavailable {
		t.Errorf("RefusalOf(other) = %v", got)
	}
}

// recorder collects the topics a handler saw.
type recorder struct {
	mu     sync.Mutex
	topics []string
}

func (r *recorder) handle(m Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.topics = append(r.topics, m.Topic)
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.topics)
}

func TestMemorySubscribe(t *testing.T) {
	ctx := context.Background()
	b := NewMemory(nil)
	var all, temps recorder
	unsubAll, err := b.Subscribe("#", all.handle)
	if err != nil {
		t.Fatal(err)
	}
	unsubTemps, err := b.Subscribe("sensors/+/temp", temps.handle)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"sensors/a/temp", "sensors/a/hum", "$SYS/uptime", "sensors/b/temp"} {
		if err := b.Publish(ctx, Message{Topic: topic}); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := all.got(), []string{"sensors/a/temp", "sensors/a/hum", "sensors/b/temp"}; !slices.Equal(got, want) {
		t.Errorf("# got %q, want %q", got, want)
	}
	if got, want := temps.got(), []string{"sensors/a/temp", "sensors/b/temp"}; !slices.Equal(got, want) {
		t.Errorf("sensors/+/temp got %q, want %q", got, want)
	}

	unsubTemps()
	unsubTemps() // twice is harmless
	if err := b.Publish(ctx, Message{Topic: "sensors/c/temp"}); err != nil {
		t.Fatal(err)
	}
	if got := temps.got(); len(got) != 2 {
		t.Errorf("unsubscribed handler still called: %q", got)
	}
	if got := all.got(); len(got) != 4 {
		t.Errorf("remaining handler not called: %q", got)
	}
	unsubAll()
}

func TestMemoryStampsTime(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	b := NewMemory(func() time.Time { return at })
	var got Message
	if _, err := b.Subscribe("t", func(m Message) { got = m }); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(context.Background(), Message{Topic: "t", Payload: []byte("x"), QoS: 1, Origin: "test"}); err != nil {
		t.Fatal(err)
	}
	if !got.Time.Equal(at) || string(got.Payload) != "x" || got.QoS != 1 || got.Origin != "test" {
		t.Errorf("got %+v", got)
	}
}

func TestMemoryTap(t *testing.T) {
	ctx := context.Background()
	b := NewMemory(nil)
	var order []string
	if _, err := b.Subscribe("up/#", func(m Message) { order = append(order, "sub "+m.Topic) }); err != nil {
		t.Fatal(err)
	}
	removeTap, err := b.Tap("up/#", func(m Message) error {
		order = append(order, "tap "+m.Topic)
		if m.Topic == "up/full" {
			return ErrQuotaExceeded
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	if err := b.Publish(ctx, Message{Topic: "up/ok", QoS: 1}); err != nil {
		t.Fatalf("accepted publish: %v", err)
	}
	err = b.Publish(ctx, Message{Topic: "up/full", QoS: 1})
	if !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("refused publish returned %v, want ErrQuotaExceeded", err)
	}
	if r := RefusalOf(err); r.Code != 0x97 {
		t.Errorf("refusal code = %#x", r.Code)
	}
	if err := b.Publish(ctx, Message{Topic: "other"}); err != nil {
		t.Fatal(err)
	}
	want := []string{"tap up/ok", "sub up/ok", "tap up/full"}
	if !slices.Equal(order, want) {
		t.Errorf("order %q, want %q", order, want)
	}

	removeTap()
	if err := b.Publish(ctx, Message{Topic: "up/full"}); err != nil {
		t.Errorf("publish after removing the tap: %v", err)
	}
}

func TestMemoryTapsRunInOrderAndStopAtFirstRefusal(t *testing.T) {
	b := NewMemory(nil)
	var calls []int
	for i := range 3 {
		if _, err := b.Tap("#", func(Message) error {
			calls = append(calls, i)
			if i == 1 {
				return ErrUnavailable
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Publish(context.Background(), Message{Topic: "x"}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("err = %v", err)
	}
	if !slices.Equal(calls, []int{0, 1}) {
		t.Errorf("taps called %v, want [0 1]", calls)
	}
}

func TestMemoryRejects(t *testing.T) {
	b := NewMemory(nil)
	if _, err := b.Subscribe("a/#/b", func(Message) {}); err == nil {
		t.Error("Subscribe accepted an invalid filter")
	}
	if _, err := b.Subscribe("a", nil); err == nil {
		t.Error("Subscribe accepted a nil handler")
	}
	if _, err := b.Tap("", func(Message) error { return nil }); err == nil {
		t.Error("Tap accepted an empty filter")
	}
	for _, m := range []Message{{Topic: ""}, {Topic: "a/+"}, {Topic: "a/#"}, {Topic: "a", QoS: 3}} {
		if err := b.Publish(context.Background(), m); err == nil {
			t.Errorf("Publish(%+v) succeeded", m)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Publish(ctx, Message{Topic: "a"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Publish on a cancelled context = %v", err)
	}
}

// TestMemoryHandlerMayUseBus checks that handlers can subscribe, unsubscribe
// and publish from inside a delivery without deadlocking.
func TestMemoryHandlerMayUseBus(t *testing.T) {
	ctx := context.Background()
	b := NewMemory(nil)
	var echoed recorder
	if _, err := b.Subscribe("echo", echoed.handle); err != nil {
		t.Fatal(err)
	}
	var unsub func()
	unsub, err := b.Subscribe("ping", func(m Message) {
		unsub()
		if err := b.Publish(ctx, Message{Topic: "echo"}); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := b.Publish(ctx, Message{Topic: "ping"}); err != nil {
			t.Fatal(err)
		}
	}
	if got := echoed.got(); len(got) != 1 {
		t.Errorf("echo received %d times, want 1", len(got))
	}
}

func TestMemoryConcurrent(t *testing.T) {
	ctx := context.Background()
	b := NewMemory(nil)
	var n recorder
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			unsub, err := b.Subscribe("c/#", n.handle)
			if err != nil {
				t.Error(err)
				return
			}
			for range 100 {
				if err := b.Publish(ctx, Message{Topic: "c/x"}); err != nil {
					t.Error(err)
				}
			}
			if i%2 == 0 {
				unsub()
			}
		})
	}
	wg.Wait()
	if len(n.got()) == 0 {
		t.Error("no deliveries")
	}
}
