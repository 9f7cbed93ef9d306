package mqtt

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fieldgate/fieldgate/internal/testwait"
	"github.com/fieldgate/fieldgate/store"
)

// allowAllHook lets every client connect and publish or subscribe anything.
type allowAllHook struct{ mochi.HookBase }

func (h *allowAllHook) ID() string { return "allow-all" }

func (h *allowAllHook) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}

func (h *allowAllHook) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }

func (h *allowAllHook) OnACLCheck(*mochi.Client, string, bool) bool { return true }

// persistServer is a bare engine with only the allow-all auth hook and the
// persistence hook, on a TCP listener on a free loopback port.
type persistServer struct {
	srv  *mochi.Server
	db   *store.DB
	addr string
}

func startPersistServer(t *testing.T, path string) *persistServer {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	db, err := store.Open(path, store.Options{Logger: log})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: log})
	if err := srv.AddHook(new(allowAllHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddHook(newPersistHook(testStore(db), log), nil); err != nil {
		t.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "t1", Address: "127.0.0.1:0"})
	if err := srv.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	ps := &persistServer{srv: srv, db: db, addr: tcp.Address()}
	t.Cleanup(ps.close)
	return ps
}

// close stops the engine gracefully, then the store. Idempotent.
func (ps *persistServer) close() {
	if ps.srv == nil {
		return
	}
	_ = ps.srv.Close()
	_ = ps.db.Close()
	ps.srv = nil
}

func (ps *persistServer) sync(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ps.db.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

// persistClient connects a paho v3.1.1 client; msgs receives every publish,
// subscribed or resumed from the session.
func persistClient(t *testing.T, addr, id string, clean bool) (pahov3.Client, chan pahov3.Message) {
	t.Helper()
	msgs := make(chan pahov3.Message, 100)
	opts := pahov3.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(id).
		SetProtocolVersion(4).
		SetCleanSession(clean).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { msgs <- m })
	c := pahov3.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(0)
		}
	})
	return c, msgs
}

func waitToken(t *testing.T, tok pahov3.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: %v", what, tok.Error())
	}
}

// prepareOfflineSession leaves "sub1" offline with a QoS 1 subscription to
// q/#, then publishes n QoS 1 messages for it (all PUBACKed) and a retained
// message on r/1, and a clean-session client subscribes (not persisted).
func prepareOfflineSession(t *testing.T, ps *persistServer, n int) {
	t.Helper()
	sub, _ := persistClient(t, ps.addr, "sub1", false)
	waitToken(t, sub.Subscribe("q/#", 1, nil), "subscribe")
	sub.Disconnect(100)

	eph, _ := persistClient(t, ps.addr, "ephemeral", true)
	waitToken(t, eph.Subscribe("q/#", 1, nil), "subscribe ephemeral")

	pub, _ := persistClient(t, ps.addr, "pub1", true)
	for i := range n {
		waitToken(t, pub.Publish(fmt.Sprintf("q/%d", i), 1, false, fmt.Sprintf("m%d", i)), "publish")
	}
	waitToken(t, pub.Publish("r/1", 1, true, "kept"), "publish retained")
}

// checkRestored reconnects sub1 to a server that restored the store and
// expects the n queued messages and the retained one.
func checkRestored(t *testing.T, ps *persistServer, n int) {
	t.Helper()
	if _, ok := ps.srv.Clients.Get("sub1"); !ok {
		t.Fatal("session sub1 not restored")
	}
	if _, ok := ps.srv.Clients.Get("ephemeral"); ok {
		t.Error("clean session restored")
	}
	sub, msgs := persistClient(t, ps.addr, "sub1", false)
	var got []string
	deadline := time.After(5 * time.Second)
	for len(got) < n {
		select {
		case m := <-msgs:
			got = append(got, m.Topic()+"="+string(m.Payload()))
		case <-deadline:
			t.Fatalf("got %d of %d queued messages: %v", len(got), n, got)
		}
	}
	sort.Strings(got)
	for i := range n {
		want := fmt.Sprintf("q/%d=m%d", i, i)
		if !containsStr(got, want) {
			t.Errorf("missing %s in %v", want, got)
		}
	}

	retained := make(chan pahov3.Message, 1)
	waitToken(t, sub.Subscribe("r/#", 1, func(_ pahov3.Client, m pahov3.Message) { retained <- m }), "subscribe r/#")
	select {
	case m := <-retained:
		if !m.Retained() || string(m.Payload()) != "kept" {
			t.Errorf("retained message = %q retained=%v", m.Payload(), m.Retained())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("retained message not restored")
	}
}

func containsStr(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestPersistGracefulRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.db")
	const n = 20
	a := startPersistServer(t, path)
	prepareOfflineSession(t, a, n)
	a.close()

	b := startPersistServer(t, path)
	checkRestored(t, b, n)

	// Once delivered and acknowledged, nothing stays in flight: the
	// client's PUBACKs arrive and each deletes its record.
	b.waitInflightEmpty(t)
}

// waitInflightEmpty waits (waitFor) until the store holds no inflight
// record: every delivered message has been acknowledged and its record
// deleted and committed.
func (ps *persistServer) waitInflightEmpty(t *testing.T) {
	t.Helper()
	testwait.NoError(t, waitFor, func() error {
		ps.sync(t)
		left := 0
		if err := ps.db.ForEach(inflightBucket, func(k, v []byte) error { left++; return nil }); err != nil {
			return fmt.Errorf("read the inflight records: %w", err)
		}
		if left != 0 {
			return fmt.Errorf("%d inflight records left after delivery", left)
		}
		return nil
	})
}

// TestPersistCrash copies the store file while the first server still runs
// (as a kill -9 would leave it after the Sync) and starts a second server on
// the copy.
func TestPersistCrash(t *testing.T) {
	dir := t.TempDir()
	const n = 20
	a := startPersistServer(t, filepath.Join(dir, "broker.db"))
	prepareOfflineSession(t, a, n)
	a.sync(t)
	data, err := os.ReadFile(filepath.Join(dir, "broker.db"))
	if err != nil {
		t.Fatal(err)
	}
	crashed := filepath.Join(dir, "crashed.db")
	if err := os.WriteFile(crashed, data, 0o600); err != nil {
		t.Fatal(err)
	}

	b := startPersistServer(t, crashed)
	checkRestored(t, b, n)
}

// TestPersistHotPath checks what reaches the store: nothing for QoS 0, for
// clean sessions or for the inline client; session records are removed with
// the session.
func TestPersistHotPath(t *testing.T) {
	ps := startPersistServer(t, filepath.Join(t.TempDir(), "broker.db"))
	sub, msgs := persistClient(t, ps.addr, "online", false)
	waitToken(t, sub.Subscribe("h/#", 1, nil), "subscribe")
	eph, _ := persistClient(t, ps.addr, "eph", true)
	waitToken(t, eph.Subscribe("h/#", 1, nil), "subscribe")
	if err := ps.srv.Subscribe("h/#", 1, func(*mochi.Client, packets.Subscription, packets.Packet) {}); err != nil {
		t.Fatal(err)
	}
	pub, _ := persistClient(t, ps.addr, "pub", true)
	ps.sync(t)
	before := ps.db.Stats()

	for i := range 200 {
		waitToken(t, pub.Publish("h/0", 0, false, fmt.Sprintf("x%d", i)), "publish qos0")
	}
	for range 200 {
		select {
		case <-msgs:
		case <-time.After(5 * time.Second):
			t.Fatal("QoS 0 messages not delivered")
		}
	}
	ps.sync(t)
	if after := ps.db.Stats(); after.Enqueued != before.Enqueued {
		t.Errorf("200 QoS 0 publishes enqueued %d store operations, want 0", after.Enqueued-before.Enqueued)
	}

	for i := range 200 {
		waitToken(t, pub.Publish("h/1", 1, false, strings.Repeat("y", 1000)+fmt.Sprint(i)), "publish qos1")
	}
	for range 200 {
		<-msgs
	}
	// Count the deletes too: wait until every PUBACK has removed its record.
	ps.waitInflightEmpty(t)
	st := ps.db.Stats()
	t.Logf("200 QoS 1 messages to one persistent subscriber: %d ops enqueued, %d written in %d commits, %d value bytes",
		st.Enqueued-before.Enqueued, st.Ops-before.Ops, st.Commits-before.Commits, st.Bytes-before.Bytes)
	if st.Enqueued-before.Enqueued > 600 { // per message: queued, its packet id, its PUBACK
		t.Errorf("clean-session or inline subscribers reached the store: %d ops", st.Enqueued-before.Enqueued)
	}

	// The records of "online" go away with a clean reconnect.
	sub.Disconnect(100)
	persistClient(t, ps.addr, "online", true)
	ps.sync(t)
	for _, bucket := range []string{clientsBucket, subsBucket, inflightBucket} {
		if err := ps.db.ForEach(bucket, func(k, v []byte) error {
			if strings.HasPrefix(string(k), "online") {
				t.Errorf("record %s/%q left after a clean start", bucket, k)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPersistInflightOrder: the store gives a session's queued messages back
// in queue order, across a packet id wrap and within the same second, after
// records written before the order was stored (which come first).
func TestPersistInflightOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.db")
	db, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	h := newPersistHook(testStore(db), nil)
	cl := &mochi.Client{ID: "c"}
	cl.Properties.ProtocolVersion = 4 // clean session false: persisted
	h.putClient(cl)

	// A record of an older version: no sequence.
	legacy := storedMessage("c", packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "t", PacketID: 9, Created: 1000})
	legacy.T = storage.InflightKey
	h.put(inflightBucket, inflightKey("c", 9, false), legacy)

	ids := []uint16{65534, 65535, 1, 2, 3}
	for _, id := range ids {
		h.OnQosPublish(cl, packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			TopicName:   "t", Payload: []byte{byte(id)}, PacketID: id, Created: 1000, // all in the same second
		}, 1000, 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.Sync(ctx); err != nil {
		t.Fatal(err)
	}

	h2 := newPersistHook(testStore(db), nil)
	if _, err := h2.StoredClients(); err != nil {
		t.Fatal(err)
	}
	msgs, err := h2.StoredInflightMessages()
	if err != nil {
		t.Fatal(err)
	}
	var got []uint16
	for _, m := range msgs {
		got = append(got, m.PacketID)
	}
	if want := append([]uint16{9}, ids...); !slices.Equal(got, want) {
		t.Errorf("restored packet ids %v, want queue order %v", got, want)
	}
	if last, n := h.seq.Load(), h2.nextSeq(); n <= last {
		t.Errorf("sequence after load %d not beyond the stored ones (%d)", n, last)
	}
}
