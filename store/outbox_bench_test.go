package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// BenchmarkOutboxAppend measures durable appends of 200-byte messages, one
// per Append call, from 1, 8 and 50 concurrent appenders sharing group
// commits. msgs/s is the durable rate (each Append returned after its fsync);
// fsyncs/s is group commits per second.
func BenchmarkOutboxAppend(b *testing.B) {
	for _, appenders := range []int{1, 8, 50} {
		b.Run(fmt.Sprintf("appenders=%d", appenders), func(b *testing.B) {
			q := openOutboxT(b, OutboxOptions{Dir: b.TempDir()})
			data := make([]byte, 200)
			var left atomic.Int64
			left.Store(int64(b.N))
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			for range appenders {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						if _, err := q.Append(context.Background(), OutboxRecord{Data: data}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			st := q.Stats()
			sec := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.N)/sec, "msgs/s")
			b.ReportMetric(float64(st.Commits)/sec, "fsyncs/s")
			b.ReportMetric(float64(st.Appended)/float64(max(st.Commits, 1)), "msgs/commit")
		})
	}
}

// BenchmarkOutboxDrain measures the sequential drain: Read 1000 at a time and
// Ack them, from an outbox filled beforehand with b.N 200-byte messages.
func BenchmarkOutboxDrain(b *testing.B) {
	q := openOutboxT(b, OutboxOptions{Dir: b.TempDir()})
	data := make([]byte, 200)
	rs := make([]OutboxRecord, 1000)
	for i := range rs {
		rs[i].Data = data
	}
	for n := b.N; n > 0; n -= len(rs) {
		if _, err := q.Append(context.Background(), rs[:min(n, len(rs))]...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	var (
		after uint64
		buf   []OutboxEntry
		seqs  []uint64
		read  int
	)
	for read < b.N {
		var err error
		buf, err = q.Read(after, 1000, buf[:0])
		if err != nil {
			b.Fatal(err)
		}
		if len(buf) == 0 {
			b.Fatalf("drained %d of %d", read, b.N)
		}
		seqs = seqs[:0]
		for _, e := range buf {
			seqs = append(seqs, e.Seq)
		}
		if err := q.Ack(seqs...); err != nil {
			b.Fatal(err)
		}
		read += len(buf)
		after = buf[len(buf)-1].Seq
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
