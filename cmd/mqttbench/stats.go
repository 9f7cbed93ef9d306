package main

import (
	"slices"
	"time"
)

// sortDurations sorts d in place, ascending.
func sortDurations(d []time.Duration) {
	slices.Sort(d)
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest sample that at least p percent of the
// samples are less than or equal to. It returns 0 for no samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// rank = ceil(p/100 * n), computed in integers to avoid float surprises
	// such as 0.99*100 = 98.99999.
	perMillion := int64(p*10000 + 0.5)
	rank := int((perMillion*int64(n) + 999999) / 1000000)
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}
