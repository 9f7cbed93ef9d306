package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

func TestQueueOrderLimitAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	q, err := db.OpenQueue("rules.http.r1.0", 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := q.Peek(); ok || err != nil {
		t.Fatalf("empty queue: peek ok=%v err=%v", ok, err)
	}
	for i := range 3 {
		if err := q.Push(fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Push([]byte("m3")); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("push past max: %v, want ErrQueueFull", err)
	}
	// read back before any commit: Peek waits for it
	b, ok, err := q.Peek()
	if err != nil || !ok || string(b) != "m0" {
		t.Fatalf("peek = %q %v %v, want m0", b, ok, err)
	}
	if err := q.Pop(); err != nil {
		t.Fatal(err)
	}
	if err := db.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	q, err = db.OpenQueue("rules.http.r1.0", 3)
	if err != nil {
		t.Fatal(err)
	}
	if q.Len() != 2 {
		t.Fatalf("after reopen Len = %d, want 2", q.Len())
	}
	for _, want := range []string{"m1", "m2"} {
		b, ok, err := q.Peek()
		if err != nil || !ok || string(b) != want {
			t.Fatalf("peek = %q %v %v, want %s", b, ok, err, want)
		}
		if err := q.Pop(); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Push([]byte("m4")); err != nil {
		t.Fatal(err)
	}
	if b, _, _ := q.Peek(); string(b) != "m4" {
		t.Fatalf("peek after reuse = %q, want m4", b)
	}
	if _, err := db.OpenQueue("x", 0); err == nil {
		t.Fatal("max 0 accepted")
	}
}
