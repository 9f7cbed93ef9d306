package opcua

import (
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fieldgate/fieldgate/internal/check"
)

// Ranges accepted by Validate.
const (
	minInterval    = 10 * time.Millisecond
	maxInterval    = 24 * time.Hour
	maxTimeout     = 5 * time.Minute
	maxQueueSize   = 10000
	maxInFlight    = 64
	maxDecimals    = 15
	maxTopicLength = 65535
	maxDescription = 256
)

// namePattern is what server and point names may be: one topic level.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// DefaultConfig returns the section's defaults: no servers.
func DefaultConfig() Config {
	return Config{Prefix: DefaultPrefix}
}

// WithDefaults returns s with every default filled in, as the service
// runs it.
func WithDefaults(s Server) Server {
	return Config{Servers: []Server{s}}.withDefaults().Servers[0]
}

// withDefaults returns a copy of c with every zero field that has a default
// set to it, including the fields of every server and point.
func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	servers := make([]Server, len(c.Servers))
	for i, s := range c.Servers {
		servers[i] = s.withDefaults()
	}
	c.Servers = servers
	return c
}

func (s Server) withDefaults() Server {
	if s.Security.Policy == "" {
		s.Security.Policy = PolicyNone
	}
	s.Security.Policy = normPolicy(s.Security.Policy)
	if s.Security.Mode == "" {
		if s.Security.Policy == PolicyNone {
			s.Security.Mode = SecurityModeNone
		} else {
			s.Security.Mode = SecurityModeSignAndEncrypt
		}
	}
	if s.Mode == "" {
		s.Mode = ModeSubscribe
	}
	if s.Interval == 0 {
		s.Interval = DefaultInterval
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.QueueSize == 0 {
		s.QueueSize = DefaultQueueSize
	}
	if s.MaxInFlight == 0 {
		s.MaxInFlight = DefaultMaxInFlight
	}
	points := make([]Point, len(s.Points))
	for i, p := range s.Points {
		if p.Scale == 0 {
			p.Scale = 1
		}
		if p.Mode == "" {
			p.Mode = s.Mode
		}
		if p.DeadbandType == "" {
			p.DeadbandType = DeadbandAbsolute
		}
		if p.SamplingInterval == 0 {
			p.SamplingInterval = s.Interval
		}
		if p.Type != "" {
			if t, ok := typeByName(p.Type); ok {
				p.Type = t.name
			}
		}
		points[i] = p
	}
	s.Points = points
	return s
}

// normPolicy accepts the policy names without underscores too.
func normPolicy(p string) string {
	switch strings.ReplaceAll(strings.ToLower(p), "_", "") {
	case "none":
		return PolicyNone
	case "basic256sha256":
		return PolicyBasic256Sha256
	case "aes128sha256rsaoaep":
		return PolicyAes128Sha256RsaOaep
	case "aes256sha256rsapss":
		return PolicyAes256Sha256RsaPss
	}
	return p
}

// Validate checks the whole section (after applying defaults) and returns
// every problem found, joined with errors.Join. Each error is one line
// "path: reason" with path relative to the section, e.g.
// "servers[0].points[2].node: …"; the gateway config prefixes
// "southbound.opcua.".
func (c Config) Validate() error {
	c = c.withDefaults()
	var v validator
	v.prefix("prefix", c.Prefix)
	v.IntRange("qos", c.QoS, 0, 1)
	names := map[string]int{}
	for i, s := range c.Servers {
		path := fmt.Sprintf("servers[%d]", i)
		if v.name(path+".name", s.Name) {
			if j, dup := names[s.Name]; dup {
				v.Addf(path+".name", "%q is already the name of servers[%d]", s.Name, j)
			} else {
				names[s.Name] = i
			}
		}
		v.server(path, s)
	}
	return v.Err()
}

// validator collects "path: reason" errors.
type validator struct {
	check.Errors
}

func (v *validator) server(path string, s Server) {
	v.endpoint(path+".endpoint", s.Endpoint)
	v.OneOf(path+".security.policy", s.Security.Policy, PolicyNone, PolicyBasic256Sha256, PolicyAes128Sha256RsaOaep, PolicyAes256Sha256RsaPss)
	v.OneOf(path+".security.mode", s.Security.Mode, SecurityModeNone, SecurityModeSign, SecurityModeSignAndEncrypt)
	switch {
	case s.Security.Policy == PolicyNone && s.Security.Mode != SecurityModeNone:
		v.Addf(path+".security.mode", "policy None goes with mode None, got %q", s.Security.Mode)
	case s.Security.Policy != PolicyNone && s.Security.Mode == SecurityModeNone:
		v.Addf(path+".security.mode", "policy %s needs mode Sign or SignAndEncrypt", s.Security.Policy)
	}
	a := s.Auth
	switch {
	case a.Username != "" && (a.Certificate != "" || a.Key != ""):
		v.Addf(path+".auth", "is a username or a certificate, not both")
	case a.Username == "" && !a.Password.IsZero():
		v.Addf(path+".auth.username", "a password needs a username")
	case a.Certificate != "" && a.Key == "":
		v.Addf(path+".auth.key", "a user certificate needs its private key file")
	case a.Certificate == "" && a.Key != "":
		v.Addf(path+".auth.certificate", "a private key needs its user certificate file")
	case a.Certificate != "":
		v.Readable(path+".auth.certificate", a.Certificate)
		v.Readable(path+".auth.key", a.Key)
	}
	if utf8.RuneCountInString(a.Username) > 256 {
		v.Addf(path+".auth.username", "must be at most 256 characters")
	}
	v.OneOf(path+".mode", s.Mode, ModeSubscribe, ModePoll)
	v.duration(path+".interval", s.Interval, minInterval, maxInterval)
	v.duration(path+".timeout", s.Timeout, time.Millisecond, maxTimeout)
	v.IntRange(path+".queue_size", s.QueueSize, 1, maxQueueSize)
	v.IntRange(path+".max_in_flight", s.MaxInFlight, 1, maxInFlight)
	names := map[string]int{}
	for i, p := range s.Points {
		pp := fmt.Sprintf("%s.points[%d]", path, i)
		if v.name(pp+".name", p.Name) {
			if j, dup := names[p.Name]; dup {
				v.Addf(pp+".name", "%q is already the name of points[%d]", p.Name, j)
			} else {
				names[p.Name] = i
			}
		}
		v.point(pp, p)
	}
}

func (v *validator) point(path string, p Point) {
	switch {
	case p.Node == "" && p.BrowsePath == "":
		v.Addf(path+".node", "needs a node (e.g. \"ns=2;s=Boiler.Temp\") or a browse_path (e.g. \"2:Boiler/2:Temp\")")
	case p.Node != "" && p.BrowsePath != "":
		v.Addf(path+".browse_path", "a point has a node or a browse_path, not both")
	case p.Node != "":
		if _, err := ParseNodeID(p.Node); err != nil {
			v.Add(path+".node", err)
		}
	default:
		if _, err := ParseBrowsePath(p.BrowsePath); err != nil {
			v.Add(path+".browse_path", err)
		}
	}
	if p.Type != "" {
		if _, ok := typeByName(p.Type); !ok {
			v.Addf(path+".type", "%q is not an OPC UA built-in type (%s)", p.Type, strings.Join(typeNames(), ", "))
		}
	}
	if !finite(p.Scale) || !finite(p.Offset) {
		v.Addf(path+".scale", "scale and offset must be finite numbers")
	}
	if p.Decimals != nil && (*p.Decimals < 0 || *p.Decimals > maxDecimals) {
		v.Addf(path+".decimals", "must be between 0 and %d, got %d", maxDecimals, *p.Decimals)
	}
	if !finite(p.Deadband) || p.Deadband < 0 {
		v.Addf(path+".deadband", "must be 0 or more, got %v", p.Deadband)
	}
	v.OneOf(path+".deadband_type", p.DeadbandType, DeadbandAbsolute, DeadbandPercent)
	if p.DeadbandType == DeadbandPercent && p.Deadband > 100 {
		v.Addf(path+".deadband", "a percent deadband must be between 0 and 100, got %v", p.Deadband)
	}
	v.OneOf(path+".mode", p.Mode, ModeSubscribe, ModePoll)
	if p.DeadbandType == DeadbandPercent && p.Deadband > 0 && p.Mode == ModePoll {
		v.Addf(path+".deadband_type", "a percent deadband needs mode subscribe (the server applies it)")
	}
	v.duration(path+".sampling_interval", p.SamplingInterval, 0, maxInterval)
	if len(p.Unit) > 64 {
		v.Addf(path+".unit", "must be at most 64 bytes")
	}
	if len(p.Description) > maxDescription {
		v.Addf(path+".description", "must be at most %d bytes", maxDescription)
	}
}

// name checks a server or point name; it reports whether it is valid.
func (v *validator) name(path, n string) bool {
	switch {
	case n == "":
		v.Addf(path, "must not be empty")
	case n == "status" || n == "set":
		v.Addf(path, "%q is reserved for a topic of its own", n)
	case !namePattern.MatchString(n):
		v.Addf(path, "%q must be 1 to 64 letters, digits, '_', '-' or '.'", n)
	default:
		return true
	}
	return false
}

// prefix checks the topic prefix: one or more levels, no wildcards.
func (v *validator) prefix(path, p string) {
	switch {
	case p == "":
		v.Addf(path, "must not be empty")
	case len(p) > maxTopicLength/2 || !utf8.ValidString(p) || strings.ContainsAny(p, "+#\x00"):
		v.Addf(path, "%q must be UTF-8 without +, # or NUL", p)
	case strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//"):
		v.Addf(path, "%q must not start or end with / or have empty levels", p)
	case strings.HasPrefix(p, "$"):
		v.Addf(path, "%q must not start with $ (reserved for the broker)", p)
	}
}

// endpoint checks an opc.tcp:// URL.
func (v *validator) endpoint(path, ep string) {
	u, err := url.Parse(ep)
	if err != nil || u.Scheme != "opc.tcp" || u.Host == "" {
		v.Addf(path, "must be an opc.tcp://host:port URL (e.g. \"opc.tcp://10.0.0.20:4840\"), got %q", ep)
		return
	}
	host, port := u.Hostname(), u.Port()
	if !v.Host(path, host) {
		return
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			v.Addf(path, "port must be a number between 1 and 65535, got %q", port)
		}
	}
	if u.User != nil {
		v.Addf(path, "must not carry a user: set auth.username and auth.password")
	}
}

func (v *validator) duration(path string, d, lo, hi time.Duration) {
	if d < lo || d > hi {
		v.Addf(path, "must be between %s and %s, got %s", lo, hi, d)
	}
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
