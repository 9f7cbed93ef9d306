package coap

import (
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/fieldgate/fieldgate/bus"
)

// Kind is what a request asks the gateway to do.
type Kind int

// The kinds of requests, by URL and method.
const (
	// KindPublish is POST or PUT /ps/{topic}, or PUT /mqtt/{topic} (EMQX 4).
	KindPublish Kind = iota + 1
	// KindGet is GET /ps/{filter} (or /mqtt/{filter}): observe
	// (Observe=0), stop observing (Observe=1), or read the retained message.
	KindGet
	// KindConnect is POST /mqtt/connection.
	KindConnect
	// KindHeartbeat is PUT /mqtt/connection.
	KindHeartbeat
	// KindDisconnect is DELETE /mqtt/connection.
	KindDisconnect
	// KindDiscovery is GET /.well-known/core: the gateway's resources in
	// CoRE Link Format (RFC 6690).
	KindDiscovery
)

// maxTopicLength is the longest MQTT topic (a UTF-8 string of at most 65535 bytes).
const maxTopicLength = 65535

// Request is a CoAP request's path and query, parsed. It carries no payload.
type Request struct {
	Kind Kind
	// Topic is the topic name of a publish or the filter of a GET.
	Topic string
	// ClientID, Username, Password and Token come from the query (long or
	// short names: clientid/c, username/u, password/p, token/t).
	ClientID, Username, Password, Token string
	// QoS is the qos (q) query parameter, or -1 when absent.
	QoS int
	// Retain is the retain (r) query parameter; HasRetain says it was given.
	Retain, HasRetain bool
	// Expiry is the expiry query parameter (seconds); HasExpiry says it
	// was given.
	Expiry    time.Duration
	HasExpiry bool
	// Filter is the query of a discovery request (RFC 6690 §4.1, e.g.
	// rt=core.ps or href=/mqtt*), "" for none.
	Filter string
}

// RequestError is a request the gateway refuses, with the CoAP response
// code it answers (4.00, 4.04, 4.05 ...) and a reason for the diagnostic
// payload.
type RequestError struct {
	Code   codes.Code
	Reason string
}

func (e *RequestError) Error() string { return fmt.Sprintf("%v: %s", e.Code, e.Reason) }

func badRequest(format string, args ...any) *RequestError {
	return &RequestError{Code: codes.BadRequest, Reason: fmt.Sprintf(format, args...)}
}

// ParseRequest turns a request's method, Uri-Path segments and Uri-Query
// options into a Request. Segments and query values are percent-decoded.
// It never panics on any input and returns a *RequestError when the
// request is refused.
func ParseRequest(method codes.Code, path, query []string) (Request, error) {
	r := Request{QoS: -1}
	if len(path) == 0 {
		return r, &RequestError{Code: codes.NotFound, Reason: "no path: use /ps/{topic} or /mqtt/connection"}
	}
	if len(path) == 2 && path[0] == ".well-known" && path[1] == "core" {
		if method != codes.GET {
			return r, &RequestError{Code: codes.MethodNotAllowed, Reason: "/.well-known/core accepts GET"}
		}
		r.Kind = KindDiscovery
		if len(query) > 0 {
			r.Filter = query[0] // one filter (RFC 6690 §4.1); others are ignored
		}
		return r, nil
	}
	switch {
	case path[0] == "ps":
		switch method {
		case codes.POST, codes.PUT:
			r.Kind = KindPublish
		case codes.GET:
			r.Kind = KindGet
		default:
			return r, &RequestError{Code: codes.MethodNotAllowed, Reason: "/ps/{topic} accepts POST, PUT and GET"}
		}
	case path[0] == "mqtt" && len(path) == 2 && path[1] == "connection":
		switch method {
		case codes.POST:
			r.Kind = KindConnect
		case codes.PUT:
			r.Kind = KindHeartbeat
		case codes.DELETE:
			r.Kind = KindDisconnect
		default:
			return r, &RequestError{Code: codes.MethodNotAllowed, Reason: "/mqtt/connection accepts POST, PUT and DELETE"}
		}
	case path[0] == "mqtt":
		switch method {
		case codes.PUT, codes.POST:
			r.Kind = KindPublish
		case codes.GET:
			r.Kind = KindGet
		default:
			return r, &RequestError{Code: codes.MethodNotAllowed, Reason: "/mqtt/{topic} accepts PUT, POST and GET"}
		}
	default:
		return r, &RequestError{Code: codes.NotFound, Reason: fmt.Sprintf("unknown path /%s: use /ps/{topic} or /mqtt/connection", truncate(path[0]))}
	}
	if err := r.parseQuery(query); err != nil {
		return r, err
	}
	if r.Kind == KindPublish || r.Kind == KindGet {
		topic, err := topicOf(path[1:])
		if err != nil {
			return r, err
		}
		if err := checkTopic(topic, r.Kind == KindGet); err != nil {
			return r, err
		}
		r.Topic = topic
	}
	switch r.Kind {
	case KindConnect:
		if r.ClientID == "" {
			return r, badRequest("clientid is required")
		}
	case KindHeartbeat, KindDisconnect:
		if r.ClientID == "" || r.Token == "" {
			return r, badRequest("clientid and token are required")
		}
	}
	return r, nil
}

// topicOf joins the percent-decoded path segments after the prefix.
func topicOf(segs []string) (string, error) {
	if len(segs) == 0 {
		return "", badRequest("missing topic: use /ps/{topic}")
	}
	var b strings.Builder
	for i, s := range segs {
		if i > 0 {
			b.WriteByte('/')
		}
		if strings.IndexByte(s, '%') >= 0 {
			d, err := url.PathUnescape(s)
			if err != nil {
				return "", badRequest("bad percent-encoding in path segment %q", truncate(s))
			}
			s = d
		}
		b.WriteString(s)
		if b.Len() > maxTopicLength {
			return "", badRequest("topic longer than %d bytes", maxTopicLength)
		}
	}
	return b.String(), nil
}

// checkTopic checks a topic name, or with filter a topic filter.
func checkTopic(t string, filter bool) error {
	switch {
	case t == "":
		return badRequest("empty topic")
	case !utf8.ValidString(t) || strings.ContainsRune(t, 0):
		return badRequest("topic must be UTF-8 without NUL characters")
	case filter && !bus.ValidFilter(t):
		return badRequest("invalid topic filter %q: + and # must fill a whole level, # only last", truncate(t))
	case !filter && strings.ContainsAny(t, "+#"):
		return badRequest("wildcards + and # are not allowed in a topic to publish to")
	case !filter && len(t) >= len(sysPrefix) && strings.EqualFold(t[:len(sysPrefix)], sysPrefix):
		// The broker keeps $SYS to itself (any case); refused here at once
		// rather than left to a broker that may never acknowledge it.
		return &RequestError{Code: codes.Forbidden, Reason: "$SYS topics are the broker's: publishing to them is not allowed"}
	}
	return nil
}

// sysPrefix starts the broker's own topics.
const sysPrefix = "$SYS"

// parseQuery reads the known parameters; unknown ones are ignored (newer
// clients send more than we know). A parameter given twice is refused.
func (r *Request) parseQuery(query []string) error {
	seen := make(map[string]bool, len(query))
	for _, q := range query {
		k, v, _ := strings.Cut(q, "=")
		if strings.IndexByte(v, '%') >= 0 {
			d, err := url.PathUnescape(v)
			if err != nil {
				return badRequest("bad percent-encoding in query parameter %q", truncate(k))
			}
			v = d
		}
		name := canonical(k)
		if name == "" {
			continue
		}
		if seen[name] {
			return badRequest("query parameter %s given twice", name)
		}
		seen[name] = true
		switch name {
		case "clientid":
			r.ClientID = v
		case "username":
			r.Username = v
		case "password":
			r.Password = v
		case "token":
			r.Token = v
		case "qos":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 2 {
				return badRequest("qos must be 0, 1 or 2, got %q", truncate(v))
			}
			r.QoS = n
		case "retain":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return badRequest("retain must be true or false, got %q", truncate(v))
			}
			r.Retain, r.HasRetain = b, true
		case "expiry":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n > math.MaxUint32 {
				return badRequest("expiry must be seconds between 0 and %d, got %q", uint32(math.MaxUint32), truncate(v))
			}
			r.Expiry, r.HasExpiry = time.Duration(n)*time.Second, true
		}
	}
	if len(r.ClientID) > maxTopicLength || len(r.Username) > maxTopicLength || len(r.Password) > maxTopicLength {
		return badRequest("clientid, username and password are at most %d bytes", maxTopicLength)
	}
	if !utf8.ValidString(r.ClientID) || !utf8.ValidString(r.Username) {
		return badRequest("clientid and username must be UTF-8")
	}
	return nil
}

// canonical maps a query key (long or EMQX short name) to its long name,
// or "" for an unknown key.
func canonical(k string) string {
	switch k {
	case "clientid", "c":
		return "clientid"
	case "username", "u":
		return "username"
	case "password", "p":
		return "password"
	case "token", "t":
		return "token"
	case "qos", "q":
		return "qos"
	case "retain", "r":
		return "retain"
	case "expiry":
		return "expiry"
	}
	return ""
}

// truncate shortens untrusted text quoted in diagnostics and logs.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
