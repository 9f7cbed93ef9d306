// Package membudget is the gateway's global memory budget: one limit on the
// bytes that peers on the network can make the gateway hold (packet bodies
// being read, MQTT-SN and CoAP per-peer state, offline session queues), so
// that no peer, and no crowd of peers, can push a small board into the OOM
// killer.
//
// Each kind of holder takes an Account; every account draws on the same
// Budget, and /metrics shows what each holds and how often it was refused.
// The budget does not measure the heap: it counts what the holders declare,
// which is the memory an attacker controls. A nil *Budget and a nil *Account
// are valid and unlimited, so parts built without one (tests) need no
// special case.
package membudget

import (
	"sort"
	"sync"
	"sync/atomic"
)

// Budget is one limit shared by every Account made from it.
type Budget struct {
	limit int64
	used  atomic.Int64

	mu       sync.Mutex
	accounts map[string]*Account
}

// New returns a Budget of limit bytes; limit <= 0 means unlimited (still
// counted).
func New(limit int64) *Budget {
	return &Budget{limit: limit, accounts: make(map[string]*Account)}
}

// Account returns the account called name (the same one for the same name),
// for example "mqtt_packets" or "mqttsn_sessions".
func (b *Budget) Account(name string) *Account {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	a := b.accounts[name]
	if a == nil {
		a = &Account{name: name, b: b}
		b.accounts[name] = a
	}
	return a
}

// Limit is the budget in bytes (0: unlimited).
func (b *Budget) Limit() int64 {
	if b == nil || b.limit < 0 {
		return 0
	}
	return b.limit
}

// Used is the sum of what every account holds now.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// AccountStats is one account's reading.
type AccountStats struct {
	Name    string
	Used    int64  // bytes held now
	Refused uint64 // reservations refused since start
}

// Stats returns every account's reading, sorted by name.
func (b *Budget) Stats() []AccountStats {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	out := make([]AccountStats, 0, len(b.accounts))
	for _, a := range b.accounts {
		out = append(out, AccountStats{Name: a.name, Used: a.used.Load(), Refused: a.refused.Load()})
	}
	b.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (b *Budget) reserve(n int64) bool {
	for {
		used := b.used.Load()
		if b.limit > 0 && used+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

// Account is one kind of holder's share of a Budget.
type Account struct {
	name    string
	b       *Budget
	used    atomic.Int64
	refused atomic.Uint64
}

// Reserve takes n bytes from the budget, or returns false (and counts a
// refusal) when that would exceed it. A caller that got true must Release
// the same n when it lets the memory go.
func (a *Account) Reserve(n int64) bool {
	if a == nil || n <= 0 {
		return true
	}
	if !a.b.reserve(n) {
		a.refused.Add(1)
		return false
	}
	a.used.Add(n)
	return true
}

// Release gives n bytes, reserved before, back to the budget.
func (a *Account) Release(n int64) {
	if a == nil || n <= 0 {
		return
	}
	a.used.Add(-n)
	a.b.used.Add(-n)
}

// Used is what this account holds now.
func (a *Account) Used() int64 {
	if a == nil {
		return 0
	}
	return a.used.Load()
}
