package gateway

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/southbound/modbus"
	"github.com/fieldgate/fieldgate/southbound/serial"
)

// reloader says how a change to one config key reaches the part that runs
// with it.
type reloader struct {
	// key is a YAML path of the config ("broker", "gateway.data_dir").
	key string
	// part names the part that runs with key: a supervised part, "broker",
	// or "gateway" for what only a new process can change.
	part string
	// reload applies the change of key from cur to next live and returns
	// the keys under key that still need a restart (the part keeps their
	// running values). nil: every change of key needs a restart. An error
	// leaves key (and also) at its running value, in the running and in
	// the saved config.
	reload func(g *gateway, cur, next config.Config) (needsRestart []string, err error)
	// also are keys that go back with key when reload fails.
	also []string
}

// live is the reload of a key that is read where it is used (under the
// lock of the gateway's configs) and so needs nothing.
func live(*gateway, config.Config, config.Config) ([]string, error) { return nil, nil }

// reloaders is every key of the config and how a change to it is applied:
// the part contract's Reload, for every part, in one table.
//
// Why one table here rather than a Reload method on each part: the parts
// are leaves that take their own config section by value and know nothing
// of the others (the uplink also runs with gateway.id); for three of them
// (uplink, Modbus, serial) "live" means building a new part from the new
// section and swapping it under the supervisor, which is the composition
// root's business; the broker alone can change in place, and reports by
// name what it cannot. Read together, the table says in one screen what
// changes live and what waits for a restart, and TestReloadersCoverConfig
// fails when a new config key has no entry, so a setting can no longer be
// accepted and then reach nothing (gateway.memory_budget_mb once did).
//
// Entries run in this order; a key's entry is the longest key that is a
// prefix of it.
var reloaders = []reloader{
	{key: "version", reload: live},
	{key: "gateway.id", part: "uplink", reload: live}, // applied with the uplink
	{key: "gateway.data_dir", part: "gateway"},        // the store, the outbox, the page's files
	{key: "gateway.memory_budget_mb", part: "gateway"},
	{key: "gateway.stop_budget", reload: live},
	{key: "log", part: "gateway"}, // the process logger, built before the gateway
	{key: "web", part: "web"},
	{key: "broker", part: "broker", reload: reloadBroker},
	{key: "mqttsn", part: "mqttsn"},
	{key: "coap", part: "coap"},
	{key: "board", part: "board"},
	{key: "uplink", part: "uplink", reload: reloadUplink, also: []string{"gateway.id"}},
	{key: "southbound.modbus", part: "modbus", reload: reloadModbus},
	{key: "southbound.serial", part: "serial", reload: reloadSerial},
	{key: "southbound.opcua", part: "opcua", reload: reloadOPCUA},
	{key: "rules", part: "rules", reload: reloadRules},
}

// reloadBroker changes the broker's users, ACL, limits and rules in place;
// the broker names what it was built with (listeners, some limits).
func reloadBroker(g *gateway, _, next config.Config) ([]string, error) {
	return g.broker.Reload(next.Broker)
}

// reloadUplink replaces the bridge when its section or the gateway id
// changed (the id names the gateway towards the cloud).
func reloadUplink(g *gateway, cur, next config.Config) ([]string, error) {
	if reflect.DeepEqual(next.Uplink, cur.Uplink) && next.Gateway.ID == cur.Gateway.ID {
		return nil, nil
	}
	return nil, g.replaceBridge(next)
}

// reloadModbus swaps in a Modbus service built from the new section.
func reloadModbus(g *gateway, cur, next config.Config) ([]string, error) {
	if reflect.DeepEqual(next.Southbound.Modbus, cur.Southbound.Modbus) {
		return nil, nil
	}
	svc, err := modbus.New(next.Southbound.Modbus, g.broker, modbus.Options{Logger: g.log.With("part", "modbus"), Now: g.clk.Now})
	if err != nil {
		return nil, fmt.Errorf("southbound.modbus: %w", err)
	}
	var keep []string
	for _, d := range next.Southbound.Modbus.Devices {
		keep = append(keep, d.Name)
	}
	swapService(g, modbusPart(svc, next.Southbound.Modbus), &g.modbus, svc, keep)
	return nil, nil
}

// reloadSerial swaps in a serial service built from the new section.
func reloadSerial(g *gateway, cur, next config.Config) ([]string, error) {
	if reflect.DeepEqual(next.Southbound.Serial, cur.Southbound.Serial) {
		return nil, nil
	}
	svc, err := serial.New(next.Southbound.Serial, g.broker, g.log.With("part", "serial"), serial.WithClock(g.clk.Now))
	if err != nil {
		return nil, fmt.Errorf("southbound.serial: %w", err)
	}
	var keep []string
	for _, sn := range next.Southbound.Serial.Sensors {
		keep = append(keep, sn.Name)
	}
	swapService(g, serialPart(svc), &g.serial, svc, keep)
	return nil, nil
}

// reloaderFor is the entry of key: the longest entry key that is key or a
// prefix of it.
func reloaderFor(key string) (reloader, bool) {
	best, found := reloader{}, false
	for _, r := range reloaders {
		if (key == r.key || strings.HasPrefix(key, r.key+".")) && len(r.key) >= len(best.key) {
			best, found = r, true
		}
	}
	return best, found
}

// PendingKey is a saved setting that waits for a restart, and the part
// that needs it.
type pendingKey struct {
	Key  string
	Part string
}

// pending lists the settings whose saved value differs from the running
// one, each with the part that must restart for it, in config order.
func pending(running, desired config.Config) []pendingKey {
	var out []pendingKey
	for _, k := range diffKeys(reflect.ValueOf(running), reflect.ValueOf(desired), "") {
		r, _ := reloaderFor(k)
		part := r.part
		if part == "" {
			part = "gateway"
		}
		out = append(out, pendingKey{Key: k, Part: part})
	}
	return out
}

// pendingParts are the distinct parts of ks, in order.
func pendingParts(ks []pendingKey) []string {
	var parts []string
	for _, k := range ks {
		if !slices.Contains(parts, k.Part) {
			parts = append(parts, k.Part)
		}
	}
	return parts
}

// yamlName is a struct field's YAML key, "" for a field that is not in the
// file, and whether it is inlined.
func yamlName(f reflect.StructField) (name string, inline bool) {
	if !f.IsExported() {
		return "", false
	}
	tag := f.Tag.Get("yaml")
	name, opts, _ := strings.Cut(tag, ",")
	if name == "-" {
		return "", false
	}
	if strings.Contains(opts, "inline") {
		return "", true
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, false
}

// fieldAt is the field of v (a struct) at the YAML path key, or an invalid
// Value when there is none.
func fieldAt(v reflect.Value, key string) reflect.Value {
	for _, name := range strings.Split(key, ".") {
		v = childNamed(v, name)
		if !v.IsValid() {
			return v
		}
	}
	return v
}

// childNamed is the field of struct v whose YAML key is name, looking into
// inlined structs.
func childNamed(v reflect.Value, name string) reflect.Value {
	if v.Kind() != reflect.Struct {
		return reflect.Value{}
	}
	t := v.Type()
	for i := range t.NumField() {
		n, inline := yamlName(t.Field(i))
		if inline {
			if f := childNamed(v.Field(i), name); f.IsValid() {
				return f
			}
			continue
		}
		if n == name {
			return v.Field(i)
		}
	}
	return reflect.Value{}
}

// copyAt sets dst's value at key to src's.
func copyAt(dst *config.Config, src config.Config, key string) {
	to := fieldAt(reflect.ValueOf(dst).Elem(), key)
	from := fieldAt(reflect.ValueOf(src), key)
	if to.IsValid() && from.IsValid() {
		to.Set(from)
	}
}

// equalAt reports whether a and b have the same value at key.
func equalAt(a, b config.Config, key string) bool {
	return reflect.DeepEqual(fieldAt(reflect.ValueOf(a), key).Interface(), fieldAt(reflect.ValueOf(b), key).Interface())
}

// diffKeys lists the YAML paths under prefix where a and b differ, down to
// the first field that is not a struct of YAML keys (a list, a map, a
// value).
func diffKeys(a, b reflect.Value, prefix string) []string {
	if reflect.DeepEqual(a.Interface(), b.Interface()) {
		return nil
	}
	if a.Kind() != reflect.Struct || !hasYAMLFields(a.Type()) {
		return []string{prefix}
	}
	var out []string
	t := a.Type()
	for i := range t.NumField() {
		name, inline := yamlName(t.Field(i))
		switch {
		case inline:
			out = append(out, diffKeys(a.Field(i), b.Field(i), prefix)...)
		case name != "":
			key := name
			if prefix != "" {
				key = prefix + "." + name
			}
			out = append(out, diffKeys(a.Field(i), b.Field(i), key)...)
		}
	}
	return out
}

// hasYAMLFields reports whether struct type t has exported fields (a
// secret, a time.Time have none: they are values).
func hasYAMLFields(t reflect.Type) bool {
	for i := range t.NumField() {
		if t.Field(i).IsExported() {
			return true
		}
	}
	return false
}
