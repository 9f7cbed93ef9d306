package opcua

import (
	"slices"
	"time"
)

// roundTrips keeps the round-trip times of a server's last answered
// transactions, for the median and 99th percentile shown per server.
type roundTrips struct {
	samples [256]time.Duration
	n       int // samples written, ever
}

func (r *roundTrips) add(d time.Duration) {
	r.samples[r.n%len(r.samples)] = d
	r.n++
}

// quantiles returns the median and the 99th percentile (nearest rank) of
// the kept samples; zeros when there are none.
func (r *roundTrips) quantiles() (p50, p99 time.Duration) {
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
