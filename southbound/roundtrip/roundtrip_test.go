package roundtrip

import (
	"testing"
	"time"
)

func TestRoundTripQuantiles(t *testing.T) {
	var r Window
	if p50, p99 := r.Quantiles(); p50 != 0 || p99 != 0 {
		t.Fatalf("empty: %v %v", p50, p99)
	}
	for i := 1; i <= 100; i++ {
		r.Add(time.Duration(i) * time.Millisecond)
	}
	if p50, p99 := r.Quantiles(); p50 != 50*time.Millisecond || p99 != 99*time.Millisecond {
		t.Fatalf("1..100 ms: p50 %v p99 %v", p50, p99)
	}
	for i := 0; i < 256; i++ { // the window forgets the old samples
		r.Add(3 * time.Millisecond)
	}
	if p50, p99 := r.Quantiles(); p50 != 3*time.Millisecond || p99 != 3*time.Millisecond {
		t.Fatalf("after 256 × 3 ms: p50 %v p99 %v", p50, p99)
	}
}
