package gateway

import (
	"context"
	"encoding"
	"errors"
	"fmt"

	"github.com/fieldgate/fieldgate/protocols/mqtt"
	"github.com/fieldgate/fieldgate/store"
)

// brokerStore gives the broker the store through the small interface the
// broker defines (mqtt.Store), so protocols/mqtt never imports store. The
// one translation is the error for a missing key.
type brokerStore struct{ db *store.DB }

var _ mqtt.Store = brokerStore{}

// newBrokerStore returns db as an mqtt.Store (nil when db is nil, so the
// broker keeps its state in memory only).
func newBrokerStore(db *store.DB) mqtt.Store {
	if db == nil {
		return nil
	}
	return brokerStore{db: db}
}

// Get implements mqtt.Store.
func (s brokerStore) Get(bucket string, key []byte) ([]byte, error) {
	v, err := s.db.Get(bucket, key)
	return v, brokerNotFound(err)
}

// GetFunc implements mqtt.Store.
func (s brokerStore) GetFunc(bucket string, key []byte, fn func(value []byte) error) error {
	return brokerNotFound(s.db.GetFunc(bucket, key, fn))
}

// ForEach implements mqtt.Store.
func (s brokerStore) ForEach(bucket string, fn func(key, value []byte) error) error {
	return s.db.ForEach(bucket, fn)
}

// Put implements mqtt.Store.
func (s brokerStore) Put(bucket string, key, value []byte) error {
	return s.db.Put(bucket, key, value)
}

// PutMarshaler implements mqtt.Store.
func (s brokerStore) PutMarshaler(bucket string, key []byte, v encoding.BinaryMarshaler) error {
	return s.db.PutMarshaler(bucket, key, v)
}

// Delete implements mqtt.Store.
func (s brokerStore) Delete(bucket string, key []byte) error { return s.db.Delete(bucket, key) }

// DeletePrefix implements mqtt.Store.
func (s brokerStore) DeletePrefix(bucket string, prefix []byte) error {
	return s.db.DeletePrefix(bucket, prefix)
}

// Sync implements mqtt.Store.
func (s brokerStore) Sync(ctx context.Context) error { return s.db.Sync(ctx) }

// brokerNotFound turns the store's missing-key error into the broker's.
func brokerNotFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %w", mqtt.ErrNotFound, err)
	}
	return err
}
