// Package roundtrip keeps the round-trip times of a southbound device's
// last answered transactions, for the median and 99th percentile shown per
// device on the page and /metrics (Modbus devices, OPC UA servers).
package roundtrip

import (
	"slices"
	"time"
)

// Window holds the last 256 round-trip times. The zero Window is empty and
// ready; it is not safe for concurrent use (its owner's lock guards it).
type Window struct {
	samples [256]time.Duration
	n       int // samples written, ever
}

// Add records one round trip.
func (r *Window) Add(d time.Duration) {
	r.samples[r.n%len(r.samples)] = d
	r.n++
}

// Quantiles returns the median and the 99th percentile (nearest rank) of
// the kept samples; zeros when there are none.
func (r *Window) Quantiles() (p50, p99 time.Duration) {
	k := min(r.n, len(r.samples))
	if k == 0 {
		return 0, 0
	}
	s := slices.Clone(r.samples[:k])
	slices.Sort(s)
	rank := func(q float64) time.Duration {
		i := int(q*float64(k)+0.999999) - 1 // nearest rank, 1-based → 0-based
		return s[max(0, min(i, k-1))]
	}
	return rank(0.50), rank(0.99)
}
