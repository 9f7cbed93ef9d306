package mqtt

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestRecordSeq: the queue order of a stored inflight record is read from
// the end of its encoding without decoding it, whatever its topic and
// properties hold, and records from before the sequence existed read as 0.
func TestRecordSeq(t *testing.T) {
	cases := []struct {
		name  string
		topic string
		user  []packets.UserProperty
		seq   uint64
	}{
		{"plain", "q/big", nil, 1_700_000_000_000_000_000},
		{"zero (older versions)", "q/a", nil, 0},
		{"max", "q/a", nil, math.MaxUint64},
		{"topic mimics the field", `x","fg_seq":9}`, nil, 42},
		{"user property mimics the field", "q", []packets.UserProperty{{Key: "fg_seq", Val: `"fg_seq":7}`}}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := inflightRecord{Message: storage.Message{TopicName: tc.topic, Payload: []byte("p"), Properties: storage.MessageProperties{User: tc.user}}, Seq: tc.seq}
			v, err := r.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			got, ok := recordSeq(v)
			if !ok || got != tc.seq {
				t.Fatalf("recordSeq(%s) = %d, %v; want %d", v, got, ok, tc.seq)
			}
		})
	}
	for _, bad := range []string{"", "{", "[1]", `{"fg_seq":99999999999999999999999}`} {
		if _, ok := recordSeq([]byte(bad)); ok {
			t.Errorf("recordSeq(%q) accepted", bad)
		}
	}
}

// FuzzRecordSeq: recordSeq never panics on stored bytes, and on every
// record the hook writes it agrees with the JSON decoder.
func FuzzRecordSeq(f *testing.F) {
	f.Add("q/big", []byte("payload"), uint64(1), []byte(`{"fg_seq":5}`))
	f.Add(`"fg_seq":1}`, []byte{}, uint64(0), []byte("}"))
	f.Fuzz(func(t *testing.T, topic string, payload []byte, seq uint64, raw []byte) {
		recordSeq(raw) // any stored bytes: no panic
		r := inflightRecord{Message: storage.Message{TopicName: topic, Payload: payload, Client: topic}, Seq: seq}
		v, err := r.MarshalBinary()
		if err != nil {
			return
		}
		var back inflightRecord
		if err := json.Unmarshal(v, &back); err != nil {
			t.Fatalf("own encoding does not decode: %v", err)
		}
		if got, ok := recordSeq(v); !ok || got != back.Seq {
			t.Fatalf("recordSeq = %d, %v; decoder says %d", got, ok, back.Seq)
		}
	})
}
