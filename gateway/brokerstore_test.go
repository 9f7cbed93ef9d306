package gateway

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/protocols/mqtt"
	"github.com/fieldgate/fieldgate/store"
)

// TestBrokerStore: the adapter gives the broker the store's data, and a
// missing key as mqtt.ErrNotFound; no store is a nil mqtt.Store.
func TestBrokerStore(t *testing.T) {
	if s := newBrokerStore(nil); s != nil {
		t.Fatalf("newBrokerStore(nil) = %#v, want a nil mqtt.Store", s)
	}
	db, err := store.Open(filepath.Join(t.TempDir(), "broker.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := newBrokerStore(db)

	if _, err := s.Get("clients", []byte("nobody")); !errors.Is(err, mqtt.ErrNotFound) {
		t.Fatalf("Get of a missing key: %v, want mqtt.ErrNotFound", err)
	}
	if err := s.GetFunc("clients", []byte("nobody"), func([]byte) error { return nil }); !errors.Is(err, mqtt.ErrNotFound) {
		t.Fatalf("GetFunc of a missing key: %v, want mqtt.ErrNotFound", err)
	}
	if err := s.Put("clients", []byte("c1"), []byte("v1")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := s.Get("clients", []byte("c1"))
	if err != nil || string(v) != "v1" {
		t.Fatalf("Get c1 = %q, %v; want v1", v, err)
	}
	if err := s.DeletePrefix("clients", []byte("c")); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := s.ForEach("clients", func(_, _ []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d records left after DeletePrefix", n)
	}
}
