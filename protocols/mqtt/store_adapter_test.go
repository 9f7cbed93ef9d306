package mqtt

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/fieldgate/fieldgate/store"
)

// testStore adapts fieldgate's store to Store for the tests, as the gateway
// does (gateway/brokerstore.go): nil stays a nil Store, and a missing key is
// ErrNotFound.
func testStore(db *store.DB) Store {
	if db == nil {
		return nil
	}
	return testStoreAdapter{db}
}

type testStoreAdapter struct{ *store.DB }

func (s testStoreAdapter) Get(bucket string, key []byte) ([]byte, error) {
	v, err := s.DB.Get(bucket, key)
	return v, testNotFound(err)
}

func (s testStoreAdapter) GetFunc(bucket string, key []byte, fn func([]byte) error) error {
	return testNotFound(s.DB.GetFunc(bucket, key, fn))
}

func testNotFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

// TestStoreNotFound: on an empty store the persistence hook finds nothing
// and reports no error (the adapter's ErrNotFound is recognised).
func TestStoreNotFound(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "broker.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	h := newPersistHook(testStore(db), nil)
	info, err := h.StoredSysInfo()
	if err != nil {
		t.Fatalf("StoredSysInfo on an empty store: %v", err)
	}
	if info.Uptime != 0 {
		t.Fatalf("StoredSysInfo on an empty store: %+v", info)
	}
	if _, err := testStore(db).Get("nothing", []byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing key: %v, want ErrNotFound", err)
	}
}
