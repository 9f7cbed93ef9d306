package mqtt

import (
	"context"
	"encoding"
	"errors"
)

// ErrNotFound is the error (possibly wrapped) a Store's Get and GetFunc
// return for a key, or a bucket, that does not exist.
var ErrNotFound = errors.New("mqtt: stored key not found")

// Store is the durable key-value store the broker keeps its state in
// (sessions, subscriptions, retained, inflight and delayed messages, $SYS
// counters). The composition root passes one (fieldgate's store, through a
// small adapter for ErrNotFound); the broker never opens or closes it.
//
// Writes may be applied asynchronously in order (group commit); Sync returns
// once everything written before it is durable. Values passed to a Put are
// not retained by the caller afterwards; values given to the callbacks of
// GetFunc and ForEach are valid only during the call.
type Store interface {
	// Get returns a copy of the value of key in bucket, or ErrNotFound.
	Get(bucket string, key []byte) ([]byte, error)
	// GetFunc calls fn with the value of key in bucket, or returns
	// ErrNotFound.
	GetFunc(bucket string, key []byte, fn func(value []byte) error) error
	// ForEach calls fn for every key and value of bucket in key order; an
	// error from fn stops it and is returned.
	ForEach(bucket string, fn func(key, value []byte) error) error
	// Put sets key in bucket to value.
	Put(bucket string, key, value []byte) error
	// PutMarshaler sets key in bucket to the encoding of v.
	PutMarshaler(bucket string, key []byte, v encoding.BinaryMarshaler) error
	// Delete removes key from bucket.
	Delete(bucket string, key []byte) error
	// DeletePrefix removes every key of bucket that starts with prefix.
	DeletePrefix(bucket string, prefix []byte) error
	// Sync waits until every write made before it is durable, or ctx ends.
	Sync(ctx context.Context) error
}
