package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/fieldgate/fieldgate/bus"
)

// Live view limits: each open view buffers at most liveQueue messages and
// sends at most liveBatch of them every liveTick; the rest are counted as
// dropped and the page says so. This bounds what one browser tab costs
// whatever flows on the bus.
const (
	liveQueue      = 256
	liveBatch      = 50
	liveTick       = 200 * time.Millisecond
	livePayloadMax = 16 << 10
	liveKeepAlive  = 15 * time.Second
)

// liveMessage is one message as the live view shows it.
type liveMessage struct {
	Topic     string    `json:"topic"`
	QoS       byte      `json:"qos"`
	Retain    bool      `json:"retain,omitempty"`
	Origin    string    `json:"origin,omitempty"`
	Time      time.Time `json:"time"`
	Size      int       `json:"size"`
	Text      *string   `json:"text,omitempty"`   // the payload when it is UTF-8
	Base64    []byte    `json:"base64,omitempty"` // otherwise (the page shows hex)
	Truncated bool      `json:"truncated,omitempty"`
}

// liveBatchEvent is one Server-Sent Event.
type liveBatchEvent struct {
	Messages []liveMessage `json:"messages"`
	// Dropped counts messages not shown since the stream opened.
	Dropped int64 `json:"dropped"`
}

// liveStream streams the messages matching ?filter= as Server-Sent Events
// (event "messages", data liveBatchEvent) until the client goes away.
func (s *Server) liveStream(w http.ResponseWriter, r *http.Request) {
	filter := r.URL.Query().Get("filter")
	if filter == "" {
		filter = "#"
	}
	if !bus.ValidFilter(filter) {
		writeFields(w, "invalid filter", FieldError{Field: "filter", Error: fmt.Sprintf("not a valid MQTT topic filter: %q", filter)})
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming not supported")
		return
	}
	select {
	case s.live <- struct{}{}:
		defer func() { <-s.live }()
	default:
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("too many live views open (at most %d)", s.cfg.LiveStreams))
		return
	}
	queue := make(chan bus.Message, liveQueue)
	var dropped atomic.Int64
	unsub, err := s.b.Subscribe(filter, func(m bus.Message) {
		select {
		case queue <- m:
		default:
			dropped.Add(1)
			s.metrics.liveDropped.Inc()
		}
	})
	if err != nil {
		writeError(w, http.StatusBadRequest, "subscribe: "+err.Error())
		return
	}
	defer unsub()
	s.metrics.liveStreams.Inc()
	defer s.metrics.liveStreams.Dec()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 3000\n: live view of "+filter+"\n\n")
	flusher.Flush()

	tick := time.NewTicker(liveTick)
	defer tick.Stop()
	lastSent := time.Now()
	var lastDropped int64
	batch := make([]liveMessage, 0, liveBatch)
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
		batch = batch[:0]
	fill:
		for len(batch) < liveBatch {
			select {
			case m := <-queue:
				batch = append(batch, toLive(m))
			default:
				break fill
			}
		}
		d := dropped.Load()
		if len(batch) == 0 && d == lastDropped {
			if time.Since(lastSent) > liveKeepAlive {
				if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
					return
				}
				flusher.Flush()
				lastSent = time.Now()
			}
			continue
		}
		lastDropped = d
		data, err := json.Marshal(liveBatchEvent{Messages: batch, Dropped: d})
		if err != nil {
			return
		}
		if _, err := fmt.Fprintf(w, "event: messages\ndata: %s\n\n", data); err != nil {
			return
		}
		flusher.Flush()
		lastSent = time.Now()
	}
}

func toLive(m bus.Message) liveMessage {
	lm := liveMessage{Topic: m.Topic, QoS: m.QoS, Retain: m.Retain, Origin: m.Origin, Time: m.Time, Size: len(m.Payload)}
	p := m.Payload
	if len(p) > livePayloadMax {
		p, lm.Truncated = p[:livePayloadMax], true
	}
	if utf8.Valid(p) {
		t := string(p)
		lm.Text = &t
	} else {
		lm.Base64 = p
	}
	return lm
}
