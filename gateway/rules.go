package gateway

import (
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/gateway/supervise"
	"github.com/fieldgate/fieldgate/rules"
)

// newRules builds the edge rules engine (package rules) on the broker. Its
// http actions queue in the gateway's store (bucket "rules.http.<rule>.<n>"),
// so a hook that is down loses nothing up to its queue's limit, across
// restarts.
func (g *gateway) newRules(cfg config.Config) (*rules.Engine, error) {
	e, err := rules.New(cfg.Rules, rules.Options{
		Bus:       g.broker,
		Logger:    g.log.With("part", "rules"),
		GatewayID: g.gatewayID(),
		OpenQueue: func(name string, max int) (rules.Queue, error) {
			return g.db.OpenQueue("rules.http."+name, max)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return e, nil
}

// rulesBound is how long the rules engine may hold waiting messages without
// finishing one before it counts as stuck: a message's evaluation is
// bounded and its actions only enqueue or publish locally, so 30 s means a
// wedged worker, not a slow rule.
const rulesBound = 30 * time.Second

// rulesPart is the supervised part of the rules engine.
func rulesPart(e *rules.Engine) supervise.Part {
	return supervise.Part{Name: "rules", Run: e.Run, Progress: e.Progress, Bound: rulesBound}
}

// reloadRules applies a change of the rules section in place: changed rules
// restart, unchanged ones keep their window state, a bad rule is refused
// with its position (Validate ran before, so it is not expected here).
func reloadRules(g *gateway, cur, next config.Config) ([]string, error) {
	if reflect.DeepEqual(next.Rules, cur.Rules) || g.rules == nil {
		return nil, nil
	}
	if err := g.rules.Reload(next.Rules); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	return nil, nil
}

// collectRules emits the rules' counters: fieldgate_rules_<counter>{rule}
// and fieldgate_rules_action_<counter>{rule, action, kind}.
func (e emitter) collectRules(r *rules.Engine) {
	if r == nil {
		return
	}
	st := r.Stats()
	for _, rs := range st.Rules {
		e.walk("fieldgate_rules", []string{"rule", rs.ID}, reflect.ValueOf(rs))
	}
	for _, a := range st.Actions {
		e.walk("fieldgate_rules_action", []string{"rule", a.Rule, "action", strconv.Itoa(a.Index), "kind", a.Kind}, reflect.ValueOf(a))
	}
}
