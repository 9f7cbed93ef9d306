package main

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	seq := func(n int) []time.Duration {
		d := make([]time.Duration, n)
		for i := range d {
			d[i] = time.Duration(i + 1)
		}
		return d
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample p50", []time.Duration{7}, 50, 7},
		{"one sample p99", []time.Duration{7}, 99, 7},
		{"1..100 p50", seq(100), 50, 50},
		{"1..100 p99", seq(100), 99, 99},
		{"1..100 p100", seq(100), 100, 100},
		{"1..1000 p99", seq(1000), 99, 990},
		{"1..1000 p99.9", seq(1000), 99.9, 999},
		{"1..10 p50", seq(10), 50, 5},
		{"1..10 p99 rounds up", seq(10), 99, 10},
		{"1..3 p50 rounds up", seq(3), 50, 2},
		{"tiny p", seq(10), 0.001, 1},
	}
	for _, tt := range tests {
		if got := percentile(tt.sorted, tt.p); got != tt.want {
			t.Errorf("%s: percentile(p=%v) = %d, want %d", tt.name, tt.p, got, tt.want)
		}
	}
}

func TestSortDurations(t *testing.T) {
	d := []time.Duration{3, 1, 2}
	sortDurations(d)
	if d[0] != 1 || d[1] != 2 || d[2] != 3 {
		t.Errorf("sortDurations = %v", d)
	}
}

func TestFormatValue(t *testing.T) {
	tests := []struct {
		kind metricKind
		v    float64
		want string
	}{
		{kindRate, 0, "0"},
		{kindRate, 999.6, "1,000"},
		{kindRate, 1234567, "1,234,567"},
		{kindPercent, 12.345, "12.35 %"},
		{kindMillis, 0.1234, "0.123"},
		{kindMillis, 41.26, "41.3"},
		{kindCPU, 7.25, "7.2 %"},
		{kindKiB, 0.7234, "0.72"},
		{kindCount, 3, "3"},
		{kindMicros, 12.345, "12.3"},
		{kindSeconds, 1.234, "1.23"},
		{kindMiB, 48.26, "48.3"},
		{kindRatio, 1.056, "1.06"},
	}
	for _, tt := range tests {
		if got := formatValue(tt.kind, tt.v); got != tt.want {
			t.Errorf("formatValue(%d, %v) = %q, want %q", tt.kind, tt.v, got, tt.want)
		}
	}
}

func TestRatio(t *testing.T) {
	one, two, zero := 1.0, 2.0, 0.0
	if q := ratio([]*float64{&one, &two}, 0, 1); q == nil || *q != 0.5 {
		t.Errorf("ratio(1, 2) = %v, want 0.5", q)
	}
	if q := ratio([]*float64{&one, nil, &two}, 0, 2); q == nil || *q != 0.5 {
		t.Errorf("ratio(1, -, 2) of the third = %v, want 0.5", q)
	}
	for _, values := range [][]*float64{{&one, &zero}, {nil, &two}, {&one, nil}, {&one}} {
		if q := ratio(values, 0, 1); q != nil {
			t.Errorf("ratio(%v) = %v, want none", values, *q)
		}
	}
}
