package rules

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/fieldgate/fieldgate/bus"
)

// Config is the rules section: the list of rules, applied live on reload.
type Config []Rule

// Rule is one edge rule: SQL that selects, filters and reshapes messages of
// the local broker, and the actions that receive its outputs.
type Rule struct {
	// ID names the rule in metrics and logs: letters, digits, '-' and '_'.
	ID string `yaml:"id"`
	// Description is free text for people.
	Description string `yaml:"description"`
	// Enabled runs the rule; a disabled rule is validated and kept.
	Enabled bool `yaml:"enabled"`
	// SQL is the rule (docs/rules.md).
	SQL string `yaml:"sql"`
	// Actions receive every output of the rule, in order.
	Actions []Action `yaml:"actions"`
}

// Action is one action of a rule: exactly one of its fields is set.
type Action struct {
	Republish *RepublishAction `yaml:"republish"`
	Uplink    *UplinkAction    `yaml:"uplink"`
	HTTP      *HTTPAction      `yaml:"http"`
	Log       *LogAction       `yaml:"log"`
}

// RepublishAction publishes each output on the local broker (so other rules
// and the uplink's forward rules see it).
type RepublishAction struct {
	// Topic is a template (${var}).
	Topic string `yaml:"topic"`
	QoS   int    `yaml:"qos"`
	// Retain asks the broker to keep the message as the topic's retained one.
	Retain bool `yaml:"retain"`
	// Payload is a template; empty means ${*}, the output as JSON.
	Payload string `yaml:"payload"`
}

// UplinkAction sends each output to the cloud through the uplink's durable
// outbox: it is published locally at QoS 1 on Topic, which an uplink
// forward rule must cover (docs/rules.md says why and how).
type UplinkAction struct {
	// Topic is a template (${var}).
	Topic string `yaml:"topic"`
	// QoS 1 makes the output durable in the outbox before the rule goes
	// on; 0 appends it without waiting (a crash may lose it).
	QoS int `yaml:"qos"`
	// Payload is a template; empty means ${*}.
	Payload string `yaml:"payload"`
}

// HTTPAction POSTs each output to a web hook, queued on disk while the
// hook is down.
type HTTPAction struct {
	// URL is the hook, http:// or https://.
	URL string `yaml:"url"`
	// Method is POST (the default when empty) or PUT.
	Method string `yaml:"method"`
	// Headers are extra request headers, each "Name: value".
	Headers []string `yaml:"headers"`
	// Body is a template; empty means ${*}.
	Body string `yaml:"body"`
	// Timeout bounds one request (0: 10s).
	Timeout time.Duration `yaml:"timeout"`
	// QueueMax bounds the requests waiting for the hook (0: 10000); past
	// it new outputs are dropped and counted.
	QueueMax int `yaml:"queue_max"`
}

// LogAction logs each output at info level (its size and the rule, never
// its content unless Payload is true), for debugging.
type LogAction struct {
	// Payload includes the output itself in the log line.
	Payload bool `yaml:"payload"`
}

// Defaults of the actions.
const (
	DefaultHTTPTimeout  = 10 * time.Second
	DefaultHTTPQueueMax = 10_000
	maxRules            = 1000
)

// DefaultConfig is no rules.
func DefaultConfig() Config { return nil }

// Validate checks every rule and returns every problem found joined with
// errors.Join, each one line "[i].field: reason" relative to the section,
// e.g. `[0].sql: line 2, col 14: unknown function "avgg"`.
func (c Config) Validate() error {
	var errs []error
	addf := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if len(c) > maxRules {
		addf("", "%d rules, more than %d", len(c), maxRules)
	}
	ids := map[string]int{}
	for i, r := range c {
		p := fmt.Sprintf("[%d]", i)
		if !validRuleID(r.ID) {
			addf(p+".id", "%q must be 1 to 64 letters, digits, '-' or '_'", r.ID)
		} else if j, dup := ids[r.ID]; dup {
			addf(p+".id", "%q is also the id of rules[%d]", r.ID, j)
		} else {
			ids[r.ID] = i
		}
		if _, err := Parse(r.SQL); err != nil {
			addf(p+".sql", "%v", err)
		}
		if len(r.Actions) == 0 {
			addf(p+".actions", "a rule needs at least one action")
		}
		for j, a := range r.Actions {
			for _, err := range validateAction(a) {
				errs = append(errs, fmt.Errorf("%s.actions[%d]%w", p, j, err))
			}
		}
	}
	return errors.Join(errs...)
}

func validRuleID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if r > unicode.MaxASCII || !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// validateAction returns errors whose text starts with ".field: " or ": ".
func validateAction(a Action) []error {
	var errs []error
	addf := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	n := 0
	for _, set := range []bool{a.Republish != nil, a.Uplink != nil, a.HTTP != nil, a.Log != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		addf("", "an action sets exactly one of republish, uplink, http, log (log: {} for the log action), found %d", n)
		return errs
	}
	tmpl := func(path, s string) {
		if _, err := ParseTemplate(s); err != nil {
			addf(path, "%v", err)
		}
	}
	topic := func(path, s string) {
		if s == "" {
			addf(path, "must not be empty")
			return
		}
		tmpl(path, s)
		if strings.ContainsAny(s, "+#") {
			addf(path, "%q: a topic name has no wildcards", s)
		}
	}
	qos := func(path string, q int, maxQoS int) {
		if q < 0 || q > maxQoS {
			addf(path, "must be 0 to %d, got %d", maxQoS, q)
		}
	}
	switch {
	case a.Republish != nil:
		topic(".republish.topic", a.Republish.Topic)
		qos(".republish.qos", a.Republish.QoS, 2)
		tmpl(".republish.payload", a.Republish.Payload)
	case a.Uplink != nil:
		topic(".uplink.topic", a.Uplink.Topic)
		qos(".uplink.qos", a.Uplink.QoS, 1)
		tmpl(".uplink.payload", a.Uplink.Payload)
	case a.HTTP != nil:
		h := a.HTTP
		u, err := url.Parse(h.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			addf(".http.url", "%q must be an http:// or https:// URL", h.URL)
		}
		switch strings.ToUpper(h.Method) {
		case "", "POST", "PUT":
		default:
			addf(".http.method", "must be POST or PUT, got %q", h.Method)
		}
		for k, hd := range h.Headers {
			name, _, ok := strings.Cut(hd, ":")
			if !ok || strings.TrimSpace(name) == "" || strings.ContainsAny(name, " \t\r\n") || strings.ContainsAny(hd, "\r\n") {
				addf(fmt.Sprintf(".http.headers[%d]", k), "must be \"Name: value\"")
			}
		}
		tmpl(".http.body", h.Body)
		if h.Timeout < 0 || h.Timeout > 5*time.Minute {
			addf(".http.timeout", "%s is out of range 0..5m (0: 10s)", h.Timeout)
		}
		if h.QueueMax < 0 || h.QueueMax > 1_000_000 {
			addf(".http.queue_max", "%d is out of range 0..1000000 (0: %d)", h.QueueMax, DefaultHTTPQueueMax)
		}
	}
	return errs
}

// subscribeFilters are the bus filters of a query's FROM.
func subscribeFilters(q *Query) []string {
	var out []string
	for _, f := range q.From {
		if bus.ValidFilter(f) {
			out = append(out, f)
		}
	}
	return out
}
