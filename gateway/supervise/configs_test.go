package supervise

import (
	"sync"
	"testing"
)

// TestConfigs: the running and the desired config change together; readers
// racing a writer (run with -race) always see a pair that was set.
func TestConfigs(t *testing.T) {
	type cfg struct{ A, B int }
	c := NewConfigs(cfg{1, 1})
	if r, d := c.Both(); r != d || r.A != 1 {
		t.Fatalf("new: %v %v", r, d)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range 1000 {
			c.Set(cfg{i, i}, cfg{i, i + 1})
		}
	}()
	go func() {
		defer wg.Done()
		for range 1000 {
			r, d := c.Both()
			if d.B != r.A+1 && !(r.A == 1 && d.B == 1) {
				t.Errorf("torn pair: running %v, desired %v", r, d)
				return
			}
			_ = c.Running()
			_ = c.Desired()
		}
	}()
	wg.Wait()
	if r, d := c.Running(), c.Desired(); r.A != 999 || d.B != 1000 {
		t.Fatalf("last: %v %v", r, d)
	}
}
