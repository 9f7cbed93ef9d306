package store

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// BenchmarkPut measures enqueue-and-commit throughput with parallel writers
// (use -cpu to vary them): each Put is a distinct key with a 200-byte value,
// and the timer includes the final Sync, so ops/s is the durable rate.
func BenchmarkPut(b *testing.B) {
	for _, maxPending := range []int{1_000, DefaultMaxPending, 100_000} {
		b.Run(fmt.Sprintf("maxpending=%d", maxPending), func(b *testing.B) { benchPut(b, maxPending) })
	}
}

func benchPut(b *testing.B, maxPending int) {
	db, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{MaxPending: maxPending})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	value := make([]byte, 200)
	var next atomic.Uint64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		key := make([]byte, 8)
		for pb.Next() {
			binary.BigEndian.PutUint64(key, next.Add(1))
			if err := db.Put("bench", key, value); err != nil {
				b.Error(err)
				return
			}
		}
	})
	if err := db.Sync(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	st := db.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(float64(st.Ops)/float64(max(st.Commits, 1)), "ops/commit")
}

// BenchmarkPutDelete is the broker's inflight pattern: a record written and
// deleted shortly after (a QoS 1 message acknowledged quickly).
func BenchmarkPutDelete(b *testing.B) {
	db, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	value := make([]byte, 200)
	var next atomic.Uint64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		key := make([]byte, 8)
		for pb.Next() {
			binary.BigEndian.PutUint64(key, next.Add(1))
			_ = db.Put("bench", key, value)
			_ = db.Delete("bench", key)
		}
	})
	if err := db.Sync(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	st := db.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
	b.ReportMetric(float64(st.Ops)/float64(max(st.Commits, 1)), "ops/commit")
}
