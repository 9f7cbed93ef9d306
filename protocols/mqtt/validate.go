package mqtt

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	"github.com/fieldgate/fieldgate/bus"
	"github.com/fieldgate/fieldgate/internal/check"
)

// Ranges accepted by Validate. They are wide on purpose: they catch typos
// and nonsense, not unusual but legitimate setups.
const (
	minPacketSize    = 16
	maxPacketSize    = 268435456 // the MQTT maximum (256 MiB)
	maxConnections   = 10_000_000
	maxReceive       = 65535 // MQTT 5 receive maximum is a uint16
	maxQueued        = 10_000_000
	maxQueuedBytes   = 1 << 30
	maxBurst         = 10_000_000
	maxTopicLevels   = 65535
	maxTopicLength   = 65535 // MQTT strings are at most 65535 bytes
	maxKeepalive     = 65535 * time.Second
	maxExpiry        = math.MaxUint32 * time.Second // MQTT 5 expiry intervals are uint32 seconds
	maxLoginFailures = 1_000_000
	// maxAccountBlock bounds how long an account's throttle may last: a
	// lockout by others must end.
	maxAccountBlock = time.Hour
)

// Validate checks the whole broker section and returns every problem found,
// joined with errors.Join. Each error is one line "path: reason" where path
// is relative to the section (e.g. "listeners.tls.cert: open server.pem: no
// such file or directory"); the gateway config prefixes "broker.".
//
// A listener that is not enabled is not checked. Validate reads no file:
// the certificate, key and CA files are read by Provision.
func (c Config) Validate() error {
	var v validator
	c.Listeners.validate(&v)
	c.Auth.validate(&v)
	for i, r := range c.ACL {
		r.validate(&v, fmt.Sprintf("acl[%d]", i))
	}
	c.Limits.validate(&v)
	v.nonNegative("sys_interval", c.SysInterval)
	for i, s := range c.AutoSubscribe {
		path := fmt.Sprintf("auto_subscribe[%d]", i)
		v.filter(path+".topic", s.Topic, true)
		v.IntRange(path+".qos", s.QoS, 0, 2)
	}
	for i, r := range c.Rewrite {
		r.validate(&v, fmt.Sprintf("rewrite[%d]", i))
	}
	c.Banned.validate(&v)
	return v.Err()
}

// validator collects "path: reason" errors.
type validator struct {
	check.Errors
}

func (v *validator) rate(path string, got float64) {
	if math.IsNaN(got) || math.IsInf(got, 0) || got < 0 {
		v.Addf(path, "must be a number >= 0 (0 = no limit), got %v", got)
	}
}

func (v *validator) nonNegative(path string, d time.Duration) {
	if d < 0 {
		v.Addf(path, "must not be negative, got %s", d)
	}
}

func (v *validator) positive(path string, d time.Duration) {
	if d <= 0 {
		v.Addf(path, "must be greater than 0, got %s", d)
	}
}

func (v *validator) durationRange(path string, d, hi time.Duration) {
	if d < 0 || d > hi {
		v.Addf(path, "must be between 0s and %s, got %s", hi, d)
	}
}

// filter checks an MQTT topic filter. With placeholders, %u and %c are
// accepted and stand for a username or client id.
func (v *validator) filter(path, f string, placeholders bool) {
	if f == "" {
		v.Addf(path, "must not be empty")
		return
	}
	check := f
	if placeholders {
		check = strings.NewReplacer("%u", "u", "%c", "c").Replace(f)
	}
	switch {
	case !utf8.ValidString(f) || strings.ContainsRune(f, 0):
		v.Addf(path, "%q is not a valid topic filter: must be UTF-8 without NUL characters", f)
	case len(f) > maxTopicLength:
		v.Addf(path, "topic filter is %d bytes long, at most %d allowed", len(f), maxTopicLength)
	case !bus.ValidFilter(check):
		v.Addf(path, "%q is not a valid topic filter (+ and # must fill a whole level, # only last)", f)
	}
}

func (l Listeners) validate(v *validator) {
	if l.TCP.Enabled {
		v.Address("listeners.tcp.address", l.TCP.Address, ":1883")
	}
	if l.TLS.Enabled {
		v.Address("listeners.tls.address", l.TLS.Address, ":1883")
		if l.TLS.Cert == "" {
			v.Addf("listeners.tls.cert", "required when the TLS listener is enabled")
		}
		if l.TLS.Key == "" {
			v.Addf("listeners.tls.key", "required when the TLS listener is enabled")
		}
		l.TLS.TLSFiles.validate(v, "listeners.tls")
	}
	if l.WebSocket.Enabled {
		ws := l.WebSocket
		v.Address("listeners.websocket.address", ws.Address, ":1883")
		if !strings.HasPrefix(ws.Path, "/") {
			v.Addf("listeners.websocket.path", "must start with /, got %q", ws.Path)
		}
		switch {
		case ws.Cert != "" && ws.Key == "":
			v.Addf("listeners.websocket.key", "required when cert is set (WSS needs both)")
		case ws.Cert == "" && ws.Key != "":
			v.Addf("listeners.websocket.cert", "required when key is set (WSS needs both)")
		}
		if ws.Cert == "" && ws.Key == "" && (ws.ClientCA != "" || ws.RequireClientCert || ws.CNAsUsername) {
			v.Addf("listeners.websocket", "client certificate options need cert and key (WSS)")
		}
		ws.TLSFiles.validate(v, "listeners.websocket")
	}
	if q := l.QUIC; q.Enabled {
		v.Address("listeners.quic.address", q.Address, ":1883")
		if q.Cert == "" && q.Key == "" && (l.TLS.Cert == "" || l.TLS.Key == "") {
			v.Addf("listeners.quic.cert", "required when the QUIC listener is enabled (or set listeners.tls.cert and key)")
		}
		if q.IdleTimeout < time.Second {
			v.Addf("listeners.quic.idle_timeout", "must be at least 1s, got %s", q.IdleTimeout)
		}
		if q.Cert != "" || q.Key != "" {
			q.TLSFiles.validate(v, "listeners.quic")
		}
	}
}

// validate checks the TLS settings of an enabled listener, without
// reading its files (provision does).
func (t TLSFiles) validate(v *validator, path string) {
	v.OneOf(path+".min_version", t.MinVersion, "1.2", "1.3")
	if t.ClientCA == "" && t.RequireClientCert {
		v.Addf(path+".require_client_cert", "needs client_ca to verify client certificates")
	}
	if t.ClientCA == "" && t.CNAsUsername {
		v.Addf(path+".cn_as_username", "needs client_ca to verify client certificates")
	}
}

// Provision reads the certificate, key and CA files of the enabled
// listeners and checks that they load: each file a readable regular file,
// the pair matching, the CA bundle holding certificates. It runs after
// Validate (which reads no file) when the gateway starts or applies a
// config. Each error is one line "path: reason" relative to the section,
// naming the file (e.g. "listeners.tls.cert: open server.pem: no such file
// or directory"), joined.
func (c Config) Provision() error {
	var v validator
	l := c.Listeners
	if l.TLS.Enabled {
		l.TLS.TLSFiles.provision(&v, "listeners.tls")
	}
	if l.WebSocket.Enabled {
		l.WebSocket.TLSFiles.provision(&v, "listeners.websocket")
	}
	if q := l.QUIC; q.Enabled {
		switch {
		case q.Cert != "" || q.Key != "":
			q.TLSFiles.provision(&v, "listeners.quic")
		case !l.TLS.Enabled:
			// QUIC borrows the TLS listener's certificate.
			l.TLS.TLSFiles.provision(&v, "listeners.tls")
		}
	}
	return v.Err()
}

// provision reads the TLS files of an enabled listener.
func (t TLSFiles) provision(v *validator, path string) {
	certOK := t.Cert != "" && v.Readable(path+".cert", t.Cert)
	keyOK := t.Key != "" && v.Readable(path+".key", t.Key)
	if certOK && keyOK {
		if _, err := tls.LoadX509KeyPair(t.Cert, t.Key); err != nil {
			v.Addf(path+".cert", "cannot load %s with key %s: %v", t.Cert, t.Key, err)
		}
	}
	if t.ClientCA != "" && v.Readable(path+".client_ca", t.ClientCA) {
		pem, err := os.ReadFile(t.ClientCA)
		if err != nil {
			v.Add(path+".client_ca", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			v.Addf(path+".client_ca", "no PEM certificate found in %s", t.ClientCA)
		}
	}
}

func (a Auth) validate(v *validator) {
	seen := make(map[string]int, len(a.Users))
	for i, u := range a.Users {
		path := fmt.Sprintf("auth.users[%d]", i)
		if u.Username == "" {
			v.Addf(path+".username", "must not be empty")
		} else if first, dup := seen[u.Username]; dup {
			v.Addf(path+".username", "duplicate of auth.users[%d] (%q)", first, u.Username)
		} else {
			seen[u.Username] = i
		}
		switch {
		case u.PasswordHash.IsZero():
			v.Addf(path+".password_hash", "must not be empty (make one with `fieldgate passwd`)")
		default:
			// The hash is a secret too: never echo it back.
			if _, err := bcrypt.Cost([]byte(u.PasswordHash.Reveal())); err != nil {
				v.Addf(path+".password_hash", "not a bcrypt hash (make one with `fieldgate passwd`)")
			}
		}
	}
	for i, l := range a.AnonymousListeners {
		v.OneOf(fmt.Sprintf("auth.anonymous_listeners[%d]", i), l, AnonymousListenerNames...)
	}
	for i, f := range a.AnonymousDenyPublish {
		v.filter(fmt.Sprintf("auth.anonymous_deny_publish[%d]", i), f, true)
	}
	v.IntRange("auth.max_failures", a.MaxFailures, 1, maxLoginFailures)
	v.positive("auth.failure_window", a.FailureWindow)
	v.nonNegative("auth.block_for", a.BlockFor)
	v.IntRange("auth.account_max_failures", a.AccountMaxFailures, 1, maxLoginFailures)
	v.durationRange("auth.account_block_for", a.AccountBlockFor, maxAccountBlock)
	v.durationRange("auth.account_block_max", a.AccountBlockMax, maxAccountBlock)
	if a.AccountBlockMax < a.AccountBlockFor {
		v.Addf("auth.account_block_max", "must be at least auth.account_block_for (%s), got %s", a.AccountBlockFor, a.AccountBlockMax)
	}
}

func (r ACLRule) validate(v *validator, path string) {
	v.filter(path+".topic", r.Topic, true)
	v.OneOf(path+".action", r.Action, "publish", "subscribe", "all")
	v.OneOf(path+".permission", r.Permission, "allow", "deny")
	for _, p := range []struct{ field, pattern string }{{"username", r.Username}, {"client_id", r.ClientID}} {
		if i := strings.Index(p.pattern, "*"); i >= 0 && i != len(p.pattern)-1 {
			v.Addf(path+"."+p.field, "only a trailing * is supported, got %q", p.pattern)
		}
	}
}

func (l Limits) validate(v *validator) {
	v.IntRange("limits.max_packet_size", l.MaxPacketSize, minPacketSize, maxPacketSize)
	v.IntRange("limits.max_connections", l.MaxConnections, 1, maxConnections)
	v.IntRange("limits.max_connections_per_address", l.MaxConnectionsPerAddress, 0, maxConnections)
	v.IntRange("limits.receive_maximum", l.ReceiveMaximum, 1, maxReceive)
	v.IntRange("limits.max_inflight", l.MaxInflight, 1, maxReceive)
	v.IntRange("limits.max_queued", l.MaxQueued, 1, maxQueued)
	if l.MaxQueuedBytes != 0 && (l.MaxQueuedBytes < int64(l.MaxPacketSize) || l.MaxQueuedBytes > maxQueuedBytes) {
		v.Addf("limits.max_queued_bytes", "must be 0 (no limit) or from limits.max_packet_size (%d) to %d, got %d", l.MaxPacketSize, int64(maxQueuedBytes), l.MaxQueuedBytes)
	}
	if l.QueueDrop != "" && l.QueueDrop != QueueDropOldest && l.QueueDrop != QueueDropNewest {
		v.Addf("limits.queue_drop", "must be %q or %q, got %q", QueueDropOldest, QueueDropNewest, l.QueueDrop)
	}
	v.rate("limits.publish_rate", l.PublishRate)
	v.IntRange("limits.publish_burst", l.PublishBurst, 1, maxBurst)
	v.nonNegative("limits.publish_rate_grace", l.PublishRateGrace)
	v.rate("limits.connect_rate", l.ConnectRate)
	v.IntRange("limits.connect_burst", l.ConnectBurst, 1, maxBurst)
	v.IntRange("limits.max_topic_levels", l.MaxTopicLevels, 1, maxTopicLevels)
	v.IntRange("limits.max_topic_length", l.MaxTopicLength, 1, maxTopicLength)
	v.durationRange("limits.max_keepalive", l.MaxKeepalive, maxKeepalive)
	v.positive("limits.connect_timeout", l.ConnectTimeout)
	v.durationRange("limits.max_session_expiry", l.MaxSessionExpiry, maxExpiry)
	v.durationRange("limits.max_message_expiry", l.MaxMessageExpiry, maxExpiry)
}

// groupRef finds the $1, $2… group references in a rewrite destination.
var groupRef = regexp.MustCompile(`\$(\d+)`)

func (r RewriteRule) validate(v *validator, path string) {
	v.OneOf(path+".action", r.Action, "publish", "subscribe", "all")
	v.filter(path+".source", r.Source, false)
	re, err := regexp.Compile(r.Regex)
	if err != nil {
		v.Add(path+".regex", err)
	}
	if r.Dest == "" {
		v.Addf(path+".dest", "must not be empty")
	} else if re != nil {
		for _, m := range groupRef.FindAllStringSubmatch(r.Dest, -1) {
			if n, err := strconv.Atoi(m[1]); err != nil || n > re.NumSubexp() {
				v.Addf(path+".dest", "refers to $%s but regex has %d groups", m[1], re.NumSubexp())
				break
			}
		}
	}
}

func (b Banned) validate(v *validator) {
	for i, id := range b.ClientIDs {
		if id == "" {
			v.Addf(fmt.Sprintf("banned.client_ids[%d]", i), "must not be empty")
		}
	}
	for i, u := range b.Usernames {
		if u == "" {
			v.Addf(fmt.Sprintf("banned.usernames[%d]", i), "must not be empty")
		}
	}
	for i, c := range b.CIDRs {
		if _, _, err := net.ParseCIDR(c); err != nil {
			v.Add(fmt.Sprintf("banned.cidrs[%d]", i), err)
		}
	}
}
