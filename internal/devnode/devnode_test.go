package devnode

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 30 * time.Second}
	var waits []time.Duration
	for range 8 {
		waits = append(waits, b.Wait())
	}
	nominal := []time.Duration{1, 2, 4, 8, 16, 30, 30, 30}
	for i, w := range waits {
		n := nominal[i] * time.Second
		if w < n*8/10 || w > n*12/10 {
			t.Errorf("wait %d = %s, want %s ±20%%", i, w, n)
		}
	}
	b.Reset()
	if w := b.Wait(); w > 1200*time.Millisecond {
		t.Errorf("after reset: %s", w)
	}
}

func TestIdentityFollowsLinks(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, "by-id")
	if Identity(link) != "" {
		t.Fatal("a missing path has an identity")
	}
	if err := os.Symlink(a, link); err != nil {
		t.Fatal(err)
	}
	first := Identity(link)
	if first == "" || first != Identity(a) {
		t.Fatalf("Identity(link) = %q, Identity(a) = %q", first, Identity(a))
	}
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(b, link); err != nil {
		t.Fatal(err)
	}
	if got := Identity(link); got == first || got == "" {
		t.Fatalf("the link moved to another node but its identity stayed %q", got)
	}
}
