package mqttsn

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Ranges accepted by Validate.
const (
	maxRetryCount    = 100
	maxClientsLimit  = 1_000_000
	maxTopicsLimit   = 65000
	maxAdvertise     = math.MaxUint16 * time.Second // ADVERTISE's Duration is uint16 seconds
	maxSessionExpiry = math.MaxUint32 * time.Second
)

// Validate checks the whole section and returns every problem found, joined
// with errors.Join. Each error is one line "path: reason" where path is
// relative to the section (e.g. "predefined_topics[1].id: duplicate of
// predefined_topics[0]"); the gateway config prefixes "mqttsn.". The address
// is checked only when the gateway is enabled.
func (c Config) Validate() error {
	var v validator
	if c.Enabled {
		v.address("address", c.Address)
	}
	v.intRange("gateway_id", c.GatewayID, 0, 255)
	if c.AdvertiseInterval < 0 || c.AdvertiseInterval > maxAdvertise {
		v.addf("advertise_interval", "must be between 0s (off) and %s, got %s", maxAdvertise, c.AdvertiseInterval)
	}
	if c.AdvertiseInterval > 0 {
		v.address("advertise_address", c.AdvertiseAddress)
	}
	ids := make(map[int]int)
	names := make(map[string]int)
	for i, t := range c.PredefinedTopics {
		path := fmt.Sprintf("predefined_topics[%d]", i)
		if t.ID < 1 || t.ID > 0xFFFE {
			v.addf(path+".id", "must be between 1 and 65534 (0 and 65535 are reserved), got %d", t.ID)
		} else if first, dup := ids[t.ID]; dup {
			v.addf(path+".id", "duplicate of predefined_topics[%d] (%d)", first, t.ID)
		} else {
			ids[t.ID] = i
		}
		if reason := topicNameProblem(t.Topic); reason != "" {
			v.addf(path+".topic", "%s", reason)
		} else if first, dup := names[t.Topic]; dup {
			v.addf(path+".topic", "duplicate of predefined_topics[%d] (%q)", first, t.Topic)
		} else {
			names[t.Topic] = i
		}
	}
	for i, p := range c.Clients.Allow {
		v.pattern(fmt.Sprintf("clients.allow[%d]", i), p)
	}
	for i, u := range c.Clients.Usernames {
		path := fmt.Sprintf("clients.usernames[%d]", i)
		v.pattern(path+".client_id", u.ClientID)
		if u.Username == "" {
			v.addf(path+".username", "must not be empty")
		}
	}
	if c.RetryInterval <= 0 {
		v.addf("retry_interval", "must be greater than 0, got %s", c.RetryInterval)
	}
	v.intRange("retry_count", c.RetryCount, 0, maxRetryCount)
	v.intRange("max_inflight", c.MaxInflight, 1, math.MaxUint16)
	v.intRange("sleep_buffer", c.SleepBuffer, 1, math.MaxUint16)
	v.intRange("max_clients", c.MaxClients, 1, maxClientsLimit)
	v.intRange("max_topics", c.MaxTopics, 1, maxTopicsLimit)
	if c.MaxKeepAlive < 0 {
		v.addf("max_keepalive", "must be 0s (off) or more, got %s", c.MaxKeepAlive)
	}
	if c.SessionExpiry < 0 || c.SessionExpiry > maxSessionExpiry {
		v.addf("session_expiry", "must be between 0s and %s, got %s", maxSessionExpiry, c.SessionExpiry)
	}
	return errors.Join(v.errs...)
}

// topicNameProblem says what is wrong with an MQTT topic name, or "".
func topicNameProblem(t string) string {
	switch {
	case t == "":
		return "must not be empty"
	case !utf8.ValidString(t) || strings.ContainsRune(t, 0):
		return fmt.Sprintf("%q must be UTF-8 without NUL characters", t)
	case strings.ContainsAny(t, "+#"):
		return fmt.Sprintf("%q is a topic name: wildcards + and # are not allowed", t)
	case len(t) > math.MaxUint16:
		return fmt.Sprintf("%d bytes long, at most %d allowed", len(t), math.MaxUint16)
	}
	return ""
}

// validator collects "path: reason" errors.
type validator struct {
	errs []error
}

func (v *validator) addf(path, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

func (v *validator) intRange(path string, got, lo, hi int) {
	if got < lo || got > hi {
		v.addf(path, "must be between %d and %d, got %d", lo, hi, got)
	}
}

// address checks "host:port" with a numeric port.
func (v *validator) address(path, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.addf(path, "must be host:port (e.g. \"0.0.0.0:1884\"), got %q", addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.addf(path, "port must be a number between 0 and 65535, got %q", port)
	}
}

// pattern checks a client id pattern: not empty, * only at the end.
func (v *validator) pattern(path, p string) {
	if p == "" {
		v.addf(path, "must not be empty (use \"*\" for every client id)")
		return
	}
	if i := strings.Index(p, "*"); i >= 0 && i != len(p)-1 {
		v.addf(path, "only a trailing * is supported, got %q", p)
	}
}

// matchPattern reports whether a client id matches a pattern of Clients.
func matchPattern(pattern, id string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(id, prefix)
	}
	return pattern == id
}
