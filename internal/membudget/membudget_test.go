package membudget

import (
	"sync"
	"testing"
)

func TestAccountsShareOneLimit(t *testing.T) {
	b := New(100)
	a, c := b.Account("a"), b.Account("c")
	if b.Account("a") != a {
		t.Fatal("Account: a second call with the same name gave another account")
	}
	if !a.Reserve(60) {
		t.Fatal("a.Reserve(60) refused within the limit")
	}
	if c.Reserve(50) {
		t.Fatal("c.Reserve(50) granted past the shared limit")
	}
	if !c.Reserve(40) {
		t.Fatal("c.Reserve(40) refused at exactly the limit")
	}
	a.Release(60)
	if got := b.Used(); got != 40 {
		t.Fatalf("Used = %d after release, want 40", got)
	}
	st := b.Stats()
	if len(st) != 2 || st[0].Name != "a" || st[1].Name != "c" || st[1].Refused != 1 || st[1].Used != 40 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestNilIsUnlimited(t *testing.T) {
	var b *Budget
	a := b.Account("x")
	if !a.Reserve(1 << 40) {
		t.Fatal("nil account refused")
	}
	a.Release(1 << 40)
	if b.Used() != 0 || b.Limit() != 0 || b.Stats() != nil {
		t.Fatal("nil budget reports something")
	}
}

func TestConcurrentReserveNeverExceeds(t *testing.T) {
	b := New(1000)
	a := b.Account("a")
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				if a.Reserve(7) {
					if u := b.Used(); u > 1000 {
						t.Errorf("Used = %d over the limit", u)
					}
					a.Release(7)
				}
			}
		}()
	}
	wg.Wait()
	if b.Used() != 0 {
		t.Fatalf("Used = %d after all released", b.Used())
	}
}
