package modbus

import (
	"cmp"
	"slices"
)

// span is one point to read: its register type, first address and how
// many registers (or bits) it covers. Index is the caller's.
type span struct {
	Index    int
	Register string
	Address  int
	Count    int
}

// request is one read the planner chose: Count registers (or bits) of
// Register from Address, covering Spans.
type request struct {
	Register string
	Address  int
	Count    int
	Spans    []span
}

// plan merges spans into as few reads as possible: spans of the same
// register type whose gap is at most maxGap unused registers (or bits) share
// a read, as long as the read covers at most maxRegs registers (maxBits for
// coils and discrete inputs). Overlapping spans share a read. Spans must
// each fit in one read (validation guarantees it). The result is sorted by
// register type and address, so a plan is deterministic.
func plan(spans []span, maxRegs, maxBits, maxGap int) []request {
	sorted := slices.Clone(spans)
	slices.SortFunc(sorted, func(a, b span) int {
		return cmp.Or(cmp.Compare(a.Register, b.Register), cmp.Compare(a.Address, b.Address),
			cmp.Compare(a.Count, b.Count), cmp.Compare(a.Index, b.Index))
	})
	var out []request
	for _, s := range sorted {
		limit := maxRegs
		if s.Register == RegCoil || s.Register == RegDiscrete {
			limit = maxBits
		}
		if n := len(out); n > 0 {
			r := &out[n-1]
			end := r.Address + r.Count
			newEnd := max(end, s.Address+s.Count)
			if r.Register == s.Register && s.Address <= end+maxGap && newEnd-r.Address <= limit {
				r.Count = newEnd - r.Address
				r.Spans = append(r.Spans, s)
				continue
			}
		}
		out = append(out, request{Register: s.Register, Address: s.Address, Count: s.Count, Spans: []span{s}})
	}
	return out
}
