package web

import (
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fieldgate/fieldgate/bus"
)

// The Live page's test-publish box: an admin types a topic and a payload
// and the gateway publishes it on its own broker, as a client would, to
// check a subscriber, a forward rule or a device's set topic.

// maxTestPayload bounds a test message's payload.
const maxTestPayload = 64 << 10

// publishRequest is one test message.
type publishRequest struct {
	Topic   string `json:"topic"`
	Payload string `json:"payload"`
	QoS     int    `json:"qos"`
	Retain  bool   `json:"retain"`
}

// publishRoutes are the test-publish routes, added to the API's.
func (s *Server) publishRoutes() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{"POST /api/v1/publish": s.testPublish}
}

// checkPublish names every field of req that cannot be published.
func checkPublish(req publishRequest) []FieldError {
	var errs []FieldError
	switch {
	case req.Topic == "":
		errs = append(errs, FieldError{Field: "topic", Error: "type a topic, e.g. plant/line1/test"})
	case strings.ContainsAny(req.Topic, "+#"):
		errs = append(errs, FieldError{Field: "topic", Error: "a topic to publish to has no wildcards (+ or #)"})
	case strings.HasPrefix(req.Topic, "$"):
		errs = append(errs, FieldError{Field: "topic", Error: "topics starting with $ belong to the gateway"})
	case len(req.Topic) > 1024 || !utf8.ValidString(req.Topic) || strings.ContainsRune(req.Topic, 0):
		errs = append(errs, FieldError{Field: "topic", Error: "at most 1024 bytes of text"})
	}
	if len(req.Payload) > maxTestPayload {
		errs = append(errs, FieldError{Field: "payload", Error: "at most 64 KiB"})
	}
	if req.QoS < 0 || req.QoS > 2 {
		errs = append(errs, FieldError{Field: "qos", Error: "0, 1 or 2"})
	}
	return errs
}

func (s *Server) testPublish(w http.ResponseWriter, r *http.Request) {
	var req publishRequest
	if !readJSON(w, r, &req) {
		return
	}
	if errs := checkPublish(req); len(errs) > 0 {
		writeFields(w, "not published", errs...)
		return
	}
	m := bus.Message{Topic: req.Topic, Payload: []byte(req.Payload), QoS: byte(req.QoS), Retain: req.Retain, Origin: "$web", Time: time.Now()}
	if err := s.b.Publish(r.Context(), m); err != nil {
		writeError(w, http.StatusServiceUnavailable, "not published: "+err.Error())
		return
	}
	s.log.Info("web: test message published", "topic", req.Topic, "bytes", len(req.Payload), "address", clientAddr(r))
	writeJSON(w, http.StatusOK, map[string]bool{"published": true})
}
