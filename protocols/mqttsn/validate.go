package mqttsn

import (
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fieldgate/fieldgate/internal/check"
)

// Ranges accepted by Validate.
const (
	maxRetryCount     = 100
	maxClientsLimit   = 1_000_000
	maxTopicsLimit    = 65000
	maxAdvertise      = math.MaxUint16 * time.Second // ADVERTISE's Duration is uint16 seconds
	maxSessionExpiry  = math.MaxUint32 * time.Second
	maxConnectTimeout = 5 * time.Minute
)

// Validate checks the whole section and returns every problem found, joined
// with errors.Join. Each error is one line "path: reason" where path is
// relative to the section (e.g. "predefined_topics[1].id: duplicate of
// predefined_topics[0]"); the gateway config prefixes "mqttsn.". The address
// is checked only when the gateway is enabled.
func (c Config) Validate() error {
	var v validator
	if c.Enabled {
		v.Address("address", c.Address, "0.0.0.0:1884")
	}
	v.IntRange("gateway_id", c.GatewayID, 0, 255)
	if c.AdvertiseInterval < 0 || c.AdvertiseInterval > maxAdvertise {
		v.Addf("advertise_interval", "must be between 0s (off) and %s, got %s", maxAdvertise, c.AdvertiseInterval)
	}
	if c.AdvertiseInterval > 0 {
		v.Address("advertise_address", c.AdvertiseAddress, "0.0.0.0:1884")
	}
	ids := make(map[int]int)
	names := make(map[string]int)
	for i, t := range c.PredefinedTopics {
		path := fmt.Sprintf("predefined_topics[%d]", i)
		if t.ID < 1 || t.ID > 0xFFFE {
			v.Addf(path+".id", "must be between 1 and 65534 (0 and 65535 are reserved), got %d", t.ID)
		} else if first, dup := ids[t.ID]; dup {
			v.Addf(path+".id", "duplicate of predefined_topics[%d] (%d)", first, t.ID)
		} else {
			ids[t.ID] = i
		}
		if reason := topicNameProblem(t.Topic); reason != "" {
			v.Addf(path+".topic", "%s", reason)
		} else if first, dup := names[t.Topic]; dup {
			v.Addf(path+".topic", "duplicate of predefined_topics[%d] (%q)", first, t.Topic)
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
			v.Addf(path+".username", "must not be empty")
		}
	}
	if c.RetryInterval <= 0 {
		v.Addf("retry_interval", "must be greater than 0, got %s", c.RetryInterval)
	}
	v.IntRange("retry_count", c.RetryCount, 0, maxRetryCount)
	v.IntRange("max_inflight", c.MaxInflight, 1, math.MaxUint16)
	v.IntRange("sleep_buffer", c.SleepBuffer, 1, math.MaxUint16)
	v.IntRange("max_clients", c.MaxClients, 1, maxClientsLimit)
	v.IntRange("max_clients_per_address", c.MaxClientsPerAddress, 0, maxClientsLimit)
	if c.ConnectTimeout < time.Second || c.ConnectTimeout > maxConnectTimeout {
		v.Addf("connect_timeout", "must be between 1s and %s, got %s", maxConnectTimeout, c.ConnectTimeout)
	}
	v.IntRange("max_topics", c.MaxTopics, 1, maxTopicsLimit)
	if c.MaxKeepAlive < 0 {
		v.Addf("max_keepalive", "must be 0s (off) or more, got %s", c.MaxKeepAlive)
	}
	if c.SessionExpiry < 0 || c.SessionExpiry > maxSessionExpiry {
		v.Addf("session_expiry", "must be between 0s and %s, got %s", maxSessionExpiry, c.SessionExpiry)
	}
	return v.Err()
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
	check.Errors
}

// pattern checks a client id pattern: not empty, * only at the end.
func (v *validator) pattern(path, p string) {
	if p == "" {
		v.Addf(path, "must not be empty (use \"*\" for every client id)")
		return
	}
	if i := strings.Index(p, "*"); i >= 0 && i != len(p)-1 {
		v.Addf(path, "only a trailing * is supported, got %q", p)
	}
}

// matchPattern reports whether a client id matches a pattern of Clients.
func matchPattern(pattern, id string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(id, prefix)
	}
	return pattern == id
}
