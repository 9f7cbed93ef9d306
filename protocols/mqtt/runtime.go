package mqtt

import (
	"fmt"
	"hash/fnv"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/bus"
)

// runtimeConfig is the broker config compiled for the hot path. It is
// replaced whole on reload (an atomic pointer swap), so a connection sees
// either the old or the new rules, never a mix.
type runtimeConfig struct {
	listeners   Listeners
	sysInterval time.Duration
	limits      Limits
	queueQoS0   bool

	allowAnonymous bool
	anonListeners  map[string]bool   // nil: every listener
	anonDenyPub    []string          // filters anonymous clients never publish to
	users          map[string][]byte // username → bcrypt hash
	login          loginPolicy

	acl       []aclRule
	aclGrant  uint64 // names the ACL rules in subscriptions' read grants (aclFingerprint)
	rewrite   []rewriteRule
	autoSub   []AutoSubscription
	bannedIDs map[string]bool
	bannedUsr map[string]bool
	bannedNet []*net.IPNet
}

type aclRule struct {
	username, clientID string
	topic              string
	publish, subscribe bool
	allow              bool
}

type rewriteRule struct {
	publish, subscribe bool
	source             string
	re                 *regexp.Regexp
	dest               string
}

// compile turns a Config into a runtimeConfig. Config.Validate has already
// reported user errors with their paths; errors here are a safety net.
func compile(cfg Config) (*runtimeConfig, error) {
	rt := &runtimeConfig{
		listeners:      cfg.Listeners,
		sysInterval:    cfg.SysInterval,
		limits:         cfg.Limits,
		queueQoS0:      cfg.QueueQoS0,
		allowAnonymous: cfg.Auth.AllowAnonymous,
		users:          make(map[string][]byte, len(cfg.Auth.Users)),
		login:          newLoginPolicy(cfg.Auth),
		autoSub:        cfg.AutoSubscribe,
		bannedIDs:      make(map[string]bool),
		bannedUsr:      make(map[string]bool),
	}
	for _, u := range cfg.Auth.Users {
		rt.users[u.Username] = []byte(u.PasswordHash.Reveal())
	}
	if len(cfg.Auth.AnonymousListeners) > 0 {
		rt.anonListeners = make(map[string]bool, len(cfg.Auth.AnonymousListeners))
		for _, l := range cfg.Auth.AnonymousListeners {
			rt.anonListeners[l] = true
		}
	}
	rt.anonDenyPub = append([]string(nil), cfg.Auth.AnonymousDenyPublish...)
	for i, r := range cfg.ACL {
		pub, sub, err := actionOf(r.Action)
		if err != nil {
			return nil, fmt.Errorf("mqtt: acl[%d]: %w", i, err)
		}
		rt.acl = append(rt.acl, aclRule{
			username: r.Username, clientID: r.ClientID, topic: r.Topic,
			publish: pub, subscribe: sub, allow: r.Permission == "allow",
		})
	}
	rt.aclGrant = aclFingerprint(rt.acl)
	for i, r := range cfg.Rewrite {
		pub, sub, err := actionOf(r.Action)
		if err != nil {
			return nil, fmt.Errorf("mqtt: rewrite[%d]: %w", i, err)
		}
		re, err := regexp.Compile(r.Regex)
		if err != nil {
			return nil, fmt.Errorf("mqtt: rewrite[%d].regex: %w", i, err)
		}
		rt.rewrite = append(rt.rewrite, rewriteRule{publish: pub, subscribe: sub, source: r.Source, re: re, dest: r.Dest})
	}
	for _, id := range cfg.Banned.ClientIDs {
		rt.bannedIDs[id] = true
	}
	for _, u := range cfg.Banned.Usernames {
		rt.bannedUsr[u] = true
	}
	for i, c := range cfg.Banned.CIDRs {
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			return nil, fmt.Errorf("mqtt: banned.cidrs[%d]: %w", i, err)
		}
		rt.bannedNet = append(rt.bannedNet, n)
	}
	return rt, nil
}

func actionOf(a string) (publish, subscribe bool, err error) {
	switch a {
	case "publish":
		return true, false, nil
	case "subscribe":
		return false, true, nil
	case "all", "both", "":
		return true, true, nil
	}
	return false, false, fmt.Errorf("action %q: want publish, subscribe or all", a)
}

// idMatch matches a username or client id pattern: "" and "*" match anyone,
// a trailing * matches a prefix, anything else matches exactly.
func idMatch(pattern, value string) bool {
	switch {
	case pattern == "" || pattern == "*":
		return true
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(value, pattern[:len(pattern)-1])
	}
	return pattern == value
}

// aclAllows evaluates the ACL for a publish (topic name), or a subscribe
// or read (topic filter or name, see aclSubscribe). Rules are matched in
// order and the first match decides; with no rules everything is allowed,
// with rules what none allows is denied.
func (rt *runtimeConfig) aclAllows(username, clientID, topic string, publish bool) bool {
	if !publish {
		allow, _ := rt.aclSubscribe(username, clientID, topic)
		return allow
	}
	if strings.HasPrefix(topic, reservedPrefix) || isSysTopic(topic) {
		return false // the gateway's own topics (the bus probe, the will sink) and $SYS
	}
	if username == "" {
		for _, f := range rt.anonDenyPub {
			if filterCovers(f, topic) {
				return false // auth.anonymous_deny_publish: southbound writes need a user
			}
		}
	}
	if len(rt.acl) == 0 {
		return true
	}
	for _, r := range rt.acl {
		if !r.publish || !idMatch(r.username, username) || !idMatch(r.clientID, clientID) {
			continue
		}
		// Rules match topic names level by level, as the read check does
		// (filterCovers): `#` covers "$TopicA/B" too. MQTT's own rule that a
		// wildcard does not match a leading "$" is for subscriptions; for
		// permissions the same rule set must mean the same topics whether
		// they are read or written. $SYS (refused before the ACL) and
		// reservedPrefix are never writable by clients.
		if filterCovers(expandPlaceholders(r.topic, username, clientID), topic) {
			return r.allow
		}
	}
	return false
}

// AnonymousListenerNames are the names auth.anonymous_listeners knows.
var AnonymousListenerNames = []string{"tcp", "tls", "websocket", "quic", "mqttsn", "coap"}

// anonymousOn reports whether anonymous clients may connect through the
// listener with id (the engine's ids: tcp, tls, ws, wss, quic, and the
// in-process families mqttsn and coap).
func (rt *runtimeConfig) anonymousOn(id string) bool {
	if rt.anonListeners == nil {
		return true
	}
	if id == "ws" || id == "wss" {
		id = "websocket"
	}
	return rt.anonListeners[id]
}

// reservedPrefix starts the topics only the gateway's own parts publish
// ($fieldgate/probe, the will sink): no client may publish there, whatever
// the ACL says, so the watchdog's bus probe cannot be faked.
const reservedPrefix = "$fieldgate/"

// aclSubscribe decides a subscription to filter, as mosquitto does: it is
// refused only when no topic the filter matches may be read. Rules with the
// subscribe action are read in order, as for one topic: a rule whose filter
// covers the whole requested filter decides for every topic that no earlier
// rule took; one that overlaps it only partly decides for that part, and the
// walk goes on; the default deny (once any rule exists) takes what is left.
// The result:
//   - allow false: every topic is denied (SUBACK 0x87);
//   - allow true, check false: every topic is readable, no per-message check;
//   - allow true, check true: some topics are denied, so each message must
//     pass the read check at delivery (OnDeliveryACLCheck).
//
// For a topic name (no wildcards) a rule either covers it or does not
// overlap it, so this is also the read check of one topic.
func (rt *runtimeConfig) aclSubscribe(username, clientID, filter string) (allow, check bool) {
	if len(rt.acl) == 0 {
		return true, false
	}
	var partAllow, partDeny bool
	for _, r := range rt.acl {
		if !r.subscribe || !idMatch(r.username, username) || !idMatch(r.clientID, clientID) {
			continue
		}
		if username == "" && strings.Contains(r.topic, "%u") {
			continue // matches no topic of an anonymous client (expandPlaceholders)
		}
		rf := expandPlaceholders(r.topic, username, clientID)
		switch {
		case filterCovers(rf, filter):
			if r.allow {
				return true, partDeny
			}
			return partAllow, partAllow
		case filterOverlaps(rf, filter):
			if r.allow {
				partAllow = true
			} else {
				partDeny = true
			}
		}
	}
	return partAllow, partAllow
}

// aclFingerprint names a set of ACL rules: a subscription granted whole
// under them carries it as its read grant, which stays valid across a
// reload that keeps the same rules. It is never 0 (0 means no grant).
func aclFingerprint(rules []aclRule) uint64 {
	h := fnv.New64a()
	for _, r := range rules {
		fmt.Fprintf(h, "%q %q %q %t %t %t\n", r.username, r.clientID, r.topic, r.publish, r.subscribe, r.allow)
	}
	if sum := h.Sum64(); sum != 0 {
		return sum
	}
	return 1
}

// expandPlaceholders replaces %u with the username and %c with the client id.
// An empty username never matches a %u rule: it becomes a level no topic has.
func expandPlaceholders(topic, username, clientID string) string {
	if !strings.Contains(topic, "%") {
		return topic
	}
	if username == "" {
		username = "\x00"
	}
	return strings.NewReplacer("%u", username, "%c", clientID).Replace(topic)
}

// filterCovers reports whether every topic matched by sub is matched by rule.
func filterCovers(rule, sub string) bool {
	rl := strings.Split(rule, "/")
	sl := strings.Split(sub, "/")
	for i, r := range rl {
		if r == "#" {
			return true
		}
		if i >= len(sl) {
			return false
		}
		s := sl[i]
		switch {
		case s == "#":
			return false
		case r == "+":
			continue
		case s == "+" || r != s:
			return false
		}
	}
	return len(rl) == len(sl)
}

// filterOverlaps reports whether some topic is matched by both filters.
func filterOverlaps(a, b string) bool {
	al := strings.Split(a, "/")
	bl := strings.Split(b, "/")
	for i := 0; ; i++ {
		if i == len(al) || i == len(bl) {
			// One filter ended; a/# also matches a, its parent level.
			switch {
			case len(al) == len(bl):
				return true
			case i < len(al):
				return al[i] == "#"
			default:
				return bl[i] == "#"
			}
		}
		x, y := al[i], bl[i]
		if x == "#" || y == "#" {
			return true
		}
		if x != "+" && y != "+" && x != y {
			return false
		}
	}
}

// rewriteTopic applies the first matching rewrite rule for the action.
func (rt *runtimeConfig) rewriteTopic(topic string, publish bool) string {
	for _, r := range rt.rewrite {
		if publish && !r.publish || !publish && !r.subscribe {
			continue
		}
		if publish && !bus.Match(r.source, topic) || !publish && !filterCovers(r.source, topic) {
			continue
		}
		m := r.re.FindStringSubmatchIndex(topic)
		if m == nil {
			continue
		}
		return string(r.re.ExpandString(nil, r.dest, topic, m))
	}
	return topic
}

// topicWithinLimits checks the configured maximum levels and length.
func (rt *runtimeConfig) topicWithinLimits(topic string) bool {
	l := rt.limits
	if l.MaxTopicLength > 0 && len(topic) > l.MaxTopicLength {
		return false
	}
	if l.MaxTopicLevels > 0 && strings.Count(topic, "/")+1 > l.MaxTopicLevels {
		return false
	}
	return true
}

// banned reports whether a client id or username is on the banned lists.
func (rt *runtimeConfig) banned(clientID, username string) bool {
	return rt.bannedIDs[clientID] || (username != "" && rt.bannedUsr[username])
}

// bannedIP reports whether ip is in a banned network.
func (rt *runtimeConfig) bannedIP(ip net.IP) bool {
	for _, n := range rt.bannedNet {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}
