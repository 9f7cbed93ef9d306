package mqtt

import (
	"bufio"
	"context"
	"encoding"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"
	"github.com/fieldgate/fieldgate/store"
)

// countingStore is a Store that counts the writes per bucket and the Syncs.
type countingStore struct {
	Store
	mu     sync.Mutex
	writes map[string]int
	syncs  int
}

func (s *countingStore) count(bucket string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes[bucket]++
}

func (s *countingStore) Put(bucket string, key, value []byte) error {
	s.count(bucket)
	return s.Store.Put(bucket, key, value)
}

func (s *countingStore) PutMarshaler(bucket string, key []byte, v encoding.BinaryMarshaler) error {
	s.count(bucket)
	return s.Store.PutMarshaler(bucket, key, v)
}

func (s *countingStore) Delete(bucket string, key []byte) error {
	s.count(bucket)
	return s.Store.Delete(bucket, key)
}

func (s *countingStore) DeletePrefix(bucket string, prefix []byte) error {
	s.count(bucket)
	return s.Store.DeletePrefix(bucket, prefix)
}

func (s *countingStore) Sync(ctx context.Context) error {
	s.mu.Lock()
	s.syncs++
	s.mu.Unlock()
	return s.Store.Sync(ctx)
}

// snapshot returns the writes per bucket and the Syncs so far.
func (s *countingStore) snapshot() (map[string]int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := make(map[string]int, len(s.writes))
	for k, v := range s.writes {
		w[k] = v
	}
	return w, s.syncs
}

// TestPersistCleanSessionChurnNoWrites (issue 18, item 4): 100 clean-session
// connect/disconnect cycles of MQTT 3.1.1 (clean session) and 100 of MQTT 5
// (clean start, no session expiry) write nothing to the store, so the store
// commits (and fsyncs) nothing for them; $SYS counters, written at most once
// a minute, are the only allowed writes. A persistent session connecting
// afterwards is still written.
func TestPersistCleanSessionChurnNoWrites(t *testing.T) {
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	db, err := store.Open(filepath.Join(t.TempDir(), "broker.db"), store.Options{Logger: log})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	cs := &countingStore{Store: testStore(db), writes: make(map[string]int)}
	b, err := New(testConfig(), Options{Logger: log, Store: cs, Version: "test"})
	if err != nil {
		_ = db.Close()
		t.Fatalf("new broker: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = db.Close()
	})
	addr := ""
	testwait.For(t, 10*time.Second, "broker listening", func() bool {
		addr = b.Addr("tcp")
		return addr != "" && addr != "127.0.0.1:0"
	})

	cycle := func(level byte, id string) {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, wireWait)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		wireConnect(t, c, bufio.NewReader(c), level, id, 60, "", "")
		if _, err := c.Write([]byte{0xe0, 0}); err != nil { // DISCONNECT
			t.Fatalf("write DISCONNECT: %v", err)
		}
		// The broker closes the connection after DISCONNECT: the
		// disconnect hooks have run once the read sees EOF.
		_ = c.SetReadDeadline(time.Now().Add(wireWait))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("client %s: data after DISCONNECT", id)
		}
	}

	clientsBefore := b.srv.Clients.Len()
	before, _ := cs.snapshot()
	commitsBefore := db.Stats().Commits
	for i := range 100 {
		cycle(4, "churn-v3-"+strconv.Itoa(i%10)) // ids reused, as devices do
		cycle(5, "churn-v5-"+strconv.Itoa(i))
	}
	// The engine forgets a session after its disconnect hooks ran.
	testwait.For(t, 10*time.Second, "all sessions gone", func() bool {
		return b.srv.Clients.Len() == clientsBefore
	})
	syncCtx, syncCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer syncCancel()
	if err := db.Sync(syncCtx); err != nil {
		t.Fatal(err)
	}
	after, _ := cs.snapshot()
	sysWrites := after[sysInfoBucket] - before[sysInfoBucket]
	for bucket, n := range after {
		if bucket != sysInfoBucket && n != before[bucket] {
			t.Errorf("200 clean-session connect/disconnect cycles wrote %d times to bucket %s, want 0", n-before[bucket], bucket)
		}
	}
	commits := db.Stats().Commits - commitsBefore
	t.Logf("200 clean-session cycles: %d store commits (%d $SYS counter writes)", commits, sysWrites)
	if commits > uint64(sysWrites) {
		t.Errorf("200 clean-session cycles made %d store commits (fsyncs), want at most %d ($SYS counters)", commits, sysWrites)
	}

	// A persistent session (clean session false) is still written.
	c, err := net.DialTimeout("tcp", addr, wireWait)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	pkt := wireConnectPkt(4, "keeper", 60, "", "")
	pkt[9] &^= 0x02 // connect flags: clean session off
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	if _, body, err := secReadPkt(bufio.NewReader(c)); err != nil || len(body) < 2 || body[1] != 0 {
		t.Fatalf("CONNACK of the persistent session: % x %v", body, err)
	}
	testwait.For(t, 10*time.Second, "persistent session stored", func() bool {
		_, err := db.Get(clientsBucket, []byte("keeper"))
		return err == nil
	})
}
