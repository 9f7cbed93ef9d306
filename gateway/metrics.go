package gateway

import (
	"reflect"
	"strings"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fieldgate/fieldgate/gateway/supervise"
)

// registry builds the registry served on /metrics: the Go runtime and the
// process, and every part's statistics, read at scrape time.
func (g *gateway) registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		partsCollector{g},
	)
	return reg
}

// partsCollector turns the parts' Stats structs into gauges named
// fieldgate_<part>_<field> (snake case; nested structs add their field
// name; durations in seconds; booleans 0/1; a map of counts gets a "kind"
// label; per-device stats a "device" label). The parts keep plain counters
// and know nothing of Prometheus.
type partsCollector struct{ g *gateway }

// Describe sends nothing: an unchecked collector, whose metrics depend on
// the parts configured.
func (partsCollector) Describe(chan<- *prometheus.Desc) {}

// Collect reads every part's statistics.
func (c partsCollector) Collect(ch chan<- prometheus.Metric) {
	g := c.g
	g.mu.Lock()
	br, q, sn, cp, mb, sr, ua := g.bridge, g.obox, g.sn, g.coap, g.modbus, g.serial, g.opcua
	g.mu.Unlock()
	e := emitter{ch: ch}
	e.walk("fieldgate_broker", nil, reflect.ValueOf(g.broker.Info()))
	e.walk("fieldgate_broker", nil, reflect.ValueOf(g.broker.Stats()))
	if g.opts.CPUStats != nil {
		e.walk("fieldgate_cpus", nil, reflect.ValueOf(g.opts.CPUStats()))
	}
	e.walk("fieldgate_uplink", nil, reflect.ValueOf(br.Status()))
	if q != nil {
		e.walk("fieldgate_outbox", nil, reflect.ValueOf(q.Stats()))
	}
	if sn != nil {
		e.walk("fieldgate_mqttsn", nil, reflect.ValueOf(sn.Stats()))
	}
	if cp != nil {
		e.walk("fieldgate_coap", nil, reflect.ValueOf(cp.Stats()))
	}
	for _, d := range mb.Stats() {
		e.walk("fieldgate_modbus", []string{"device", d.Name}, reflect.ValueOf(d))
	}
	for _, s := range sr.Stats() {
		e.walk("fieldgate_serial", []string{"sensor", s.Name}, reflect.ValueOf(s))
	}
	if ua != nil {
		for _, s := range ua.Stats() {
			e.walk("fieldgate_opcua", []string{"server", s.Name}, reflect.ValueOf(s))
		}
	}
	e.collectRules(g.rules)
	for _, p := range g.sup.Stats() {
		labels := []string{"part", p.Name}
		e.counter("fieldgate_part_restarts_total", labels, float64(p.Restarts))
		e.counter("fieldgate_part_panics_total", labels, float64(p.Panics))
		e.gauge("fieldgate_part_up", labels, bool01(p.State == supervise.StateRunning))
		e.gauge("fieldgate_part_healthy", labels, bool01(p.Healthy))
		e.gauge("fieldgate_part_state", []string{"part", p.Name, "state", string(p.State)}, 1)
		if !p.LastProgress.IsZero() {
			e.gauge("fieldgate_part_last_progress_seconds", labels, float64(p.LastProgress.UnixNano())/1e9)
		}
	}
	e.gauge("fieldgate_memory_budget_limit_bytes", nil, float64(g.budget.Limit()))
	e.gauge("fieldgate_memory_budget_used_bytes", nil, float64(g.budget.Used()))
	for _, a := range g.budget.Stats() {
		e.gauge("fieldgate_memory_budget_account_used_bytes", []string{"account", a.Name}, float64(a.Used))
		e.gauge("fieldgate_memory_budget_account_refused_total", []string{"account", a.Name}, float64(a.Refused))
	}
	e.collectMemReturn(g.memret)
}

type emitter struct {
	ch chan<- prometheus.Metric
}

var durationKind = reflect.TypeFor[time.Duration]()

// walk emits the numeric fields of v under prefix, with constant labels
// (name, value pairs).
func (e emitter) walk(prefix string, labels []string, v reflect.Value) {
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return
	}
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := prefix + "_" + snake(f.Name)
		fv := v.Field(i)
		if load := loader(fv); load != nil {
			e.gauge(name, labels, load())
			continue
		}
		switch {
		case f.Type == durationKind:
			e.gauge(name+"_seconds", labels, time.Duration(fv.Int()).Seconds())
		case fv.CanInt():
			e.gauge(name, labels, float64(fv.Int()))
		case fv.CanUint():
			e.gauge(name, labels, float64(fv.Uint()))
		case fv.CanFloat():
			e.gauge(name, labels, fv.Float())
		case fv.Kind() == reflect.Bool:
			b := 0.0
			if fv.Bool() {
				b = 1
			}
			e.gauge(name, labels, b)
		case fv.Kind() == reflect.Map && fv.Type().Key().Kind() == reflect.String:
			iter := fv.MapRange()
			for iter.Next() {
				x := iter.Value()
				switch {
				case x.CanUint():
					e.gauge(name, append(labels[:len(labels):len(labels)], "kind", iter.Key().String()), float64(x.Uint()))
				case x.CanInt():
					e.gauge(name, append(labels[:len(labels):len(labels)], "kind", iter.Key().String()), float64(x.Int()))
				}
			}
		case fv.Kind() == reflect.Struct && f.Type.PkgPath() != "time":
			e.walk(name, labels, fv)
		}
	}
}

// loader returns the Load method of an atomic counter field, if it is one.
func loader(v reflect.Value) func() float64 {
	if !v.CanAddr() {
		return nil
	}
	m := v.Addr().MethodByName("Load")
	if !m.IsValid() || m.Type().NumIn() != 0 || m.Type().NumOut() != 1 {
		return nil
	}
	return func() float64 {
		out := m.Call(nil)[0]
		switch {
		case out.CanInt():
			return float64(out.Int())
		case out.CanUint():
			return float64(out.Uint())
		case out.Kind() == reflect.Bool && out.Bool():
			return 1
		}
		return 0
	}
}

func (e emitter) gauge(name string, labels []string, v float64) {
	e.metric(name, labels, prometheus.GaugeValue, v)
}

func (e emitter) counter(name string, labels []string, v float64) {
	e.metric(name, labels, prometheus.CounterValue, v)
}

// bool01 is 1 for true, 0 for false.
func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (e emitter) metric(name string, labels []string, kind prometheus.ValueType, v float64) {
	var keys, vals []string
	for i := 0; i+1 < len(labels); i += 2 {
		keys = append(keys, labels[i])
		vals = append(vals, labels[i+1])
	}
	m, err := prometheus.NewConstMetric(prometheus.NewDesc(name, "", keys, nil), kind, v, vals...)
	if err == nil {
		e.ch <- m
	}
}

// snake turns a Go field name into snake case ("QoS0Dropped" →
// "qos0_dropped", "AppendedPerSec" → "appended_per_sec").
func snake(s string) string {
	var b strings.Builder
	rs := []rune(s)
	for i, r := range rs {
		if unicode.IsUpper(r) {
			prevLower := i > 0 && (unicode.IsLower(rs[i-1]) || unicode.IsDigit(rs[i-1]))
			nextLower := i+1 < len(rs) && unicode.IsLower(rs[i+1]) && i > 0 && unicode.IsUpper(rs[i-1])
			if i > 0 && (prevLower || nextLower) {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToLower(r))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
