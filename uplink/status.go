package uplink

import (
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Status is what the bridge reports about itself (web page, $SYS, logs).
type Status struct {
	// State is disabled, starting, waiting for the clock, connecting,
	// connected, backoff or stopped.
	State     string    `json:"state"`
	Connected bool      `json:"connected"`
	Transport string    `json:"transport,omitempty"`
	Server    string    `json:"server,omitempty"`
	Since     time.Time `json:"since,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	// LastErrorAt is when LastError happened.
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Forwarded counts messages the cloud acknowledged.
	Forwarded int64 `json:"forwarded"`
	// Downlinked counts cloud messages published locally.
	Downlinked int64 `json:"downlinked"`
	// Refused counts QoS 1/2 publishes refused (0x97) because the outbox
	// was full (refuse_new) or failing.
	Refused int64 `json:"refused"`
	// QoS0Dropped counts QoS 0 messages the outbox could not take.
	QoS0Dropped int64 `json:"qos0_dropped"`
	Reconnects  int64 `json:"reconnects"`
	// BadRecords counts undecodable outbox records (skipped and deleted).
	BadRecords int64 `json:"bad_records"`
}

// Status returns a snapshot of the bridge's state and counters.
func (b *Bridge) Status() Status {
	b.stateMu.Lock()
	st := b.state
	b.stateMu.Unlock()
	st.Forwarded = b.stats.forwarded.Load()
	st.Downlinked = b.stats.downlinked.Load()
	st.Refused = b.stats.refused.Load()
	st.QoS0Dropped = b.stats.qos0Dropped.Load()
	st.Reconnects = b.stats.reconnects.Load()
	st.BadRecords = b.stats.badRecords.Load()
	return st
}

func (b *Bridge) setState(f func(*Status)) {
	b.stateMu.Lock()
	f(&b.state)
	b.stateMu.Unlock()
	b.progress.Store(time.Now().UnixNano())
}

// Progress returns when the bridge's state last changed or the cloud last
// acknowledged messages, or the zero time before either happened.
func (b *Bridge) Progress() time.Time {
	n := b.progress.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// noStore is a paho message store that keeps nothing: the outbox already
// holds every message until its PUBACK, and resends after a reconnect are
// the drain loop's job. (paho's default memory store costs ~13% and
// duplicates the outbox.)
type noStore struct{}

func (noStore) Open()                             {}
func (noStore) Put(string, packets.ControlPacket) {}
func (noStore) Get(string) packets.ControlPacket  { return nil }
func (noStore) All() []string                     { return nil }
func (noStore) Del(string)                        {}
func (noStore) Close()                            {}
func (noStore) Reset()                            {}
