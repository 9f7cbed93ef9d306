package modbus

import (
	"fmt"
	"testing"
)

func TestPlan(t *testing.T) {
	sp := func(reg string, addr, n int) span { return span{Register: reg, Address: addr, Count: n} }
	tests := []struct {
		name   string
		spans  []span
		gap    int
		maxReg int
		want   string
	}{
		{"adjacent", []span{sp(RegHolding, 0, 2), sp(RegHolding, 2, 1), sp(RegHolding, 3, 4)}, 0, 125, "[holding 0+7]"},
		{"gap too big", []span{sp(RegHolding, 0, 1), sp(RegHolding, 5, 1)}, 3, 125, "[holding 0+1 holding 5+1]"},
		{"gap within max_gap", []span{sp(RegHolding, 0, 1), sp(RegHolding, 5, 1)}, 4, 125, "[holding 0+6]"},
		{"unsorted and overlapping", []span{sp(RegInput, 10, 2), sp(RegInput, 0, 4), sp(RegInput, 2, 2)}, 10, 125, "[input 0+12]"},
		{"types apart", []span{sp(RegHolding, 0, 1), sp(RegInput, 1, 1), sp(RegCoil, 0, 1), sp(RegCoil, 1, 1)}, 0, 125, "[coil 0+2 holding 0+1 input 1+1]"},
		{"max registers", []span{sp(RegHolding, 0, 100), sp(RegHolding, 100, 25), sp(RegHolding, 125, 1)}, 0, 125, "[holding 0+125 holding 125+1]"},
		{"small max", []span{sp(RegHolding, 0, 2), sp(RegHolding, 2, 2), sp(RegHolding, 4, 2)}, 0, 4, "[holding 0+4 holding 4+2]"},
		{"bits", []span{sp(RegDiscrete, 0, 1), sp(RegDiscrete, 1999, 1), sp(RegDiscrete, 2000, 1)}, 2000, 125, "[discrete 0+2000 discrete 2000+1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range tt.spans {
				tt.spans[i].Index = i
			}
			reqs := plan(tt.spans, tt.maxReg, 2000, tt.gap)
			var got []string
			covered := 0
			for _, r := range reqs {
				got = append(got, fmt.Sprintf("%s %d+%d", r.Register, r.Address, r.Count))
				for _, s := range r.Spans {
					if s.Address < r.Address || s.Address+s.Count > r.Address+r.Count {
						t.Errorf("span %+v outside request %+v", s, r)
					}
					covered++
				}
			}
			if fmt.Sprint(got) != tt.want {
				t.Fatalf("plan = %v, want %s", got, tt.want)
			}
			if covered != len(tt.spans) {
				t.Fatalf("%d spans planned, want %d", covered, len(tt.spans))
			}
		})
	}
}
