package web

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Errors in words: the config package names a problem by its path
// ("southbound.modbus.devices[1].points[0].scale: expected a number") and
// the Modbus and network code by the Go error that caused it ("dial tcp
// 10.0.0.5:502: connect: connection refused"). The command line shows
// those as they are; the page shows what the technician sees on the form
// instead ("Device 2 “boiler”, point “temp”: Scale must be a number") and
// keeps the path in FieldError.Field, so that it marks the same input it
// checks itself.

// pathStep is one step of a config path: a key, and an index after it.
var pathStep = regexp.MustCompile(`^([a-z_][a-z0-9_]*)(?:\[(\d+)\])?$`)

// listWords name an element of a list by its path (with [i] stripped) and
// the key that names it ("" when the element has no name).
var listWords = map[string]struct{ what, key string }{
	"southbound.modbus.devices":                     {"Device", "name"},
	"southbound.modbus.devices.points":              {"point", "name"},
	"southbound.modbus.devices.poll_groups":         {"poll group", "name"},
	"southbound.modbus.templates":                   {"Template", "name"},
	"southbound.modbus.templates.points":            {"point", "name"},
	"southbound.serial.sensors":                     {"Serial sensor", "name"},
	"uplink.servers":                                {"Uplink server", "host"},
	"uplink.forward":                                {"Forward rule", ""},
	"uplink.downlink":                               {"Downlink rule", ""},
	"broker.auth.users":                             {"Broker user", "username"},
	"broker.auth.acl":                               {"Access rule", ""},
	"rules":                                         {"Rule", "id"},
	"rules.actions":                                 {"action", ""},
	"broker.listeners.tls.client_auth.allowed_cns":  {"allowed name", ""},
	"southbound.modbus.devices.points.enum":         {"value", ""},
	"southbound.modbus.devices.points.value_labels": {"value", ""},
}

// sectionWords name the sections and groups of keys a path passes through.
var sectionWords = map[string]string{
	"gateway": "Gateway", "web": "Web page", "broker": "Broker", "uplink": "Uplink",
	"southbound.modbus": "Modbus", "southbound.serial": "Serial sensors", "mqttsn": "MQTT-SN", "coap": "CoAP",
	"board": "Board", "broker.limits": "Broker limits", "broker.banned": "Banned clients",
	"broker.auth": "Broker access", "broker.listeners": "Broker listeners", "uplink.tls": "Uplink TLS",
	"southbound": "Southbound",
}

// keyWords are the labels the page's forms give to config keys; other keys
// are written out ("max_packet_size" → "Max packet size").
var keyWords = map[string]string{
	"tcp.address": "Address (host:port)", "address": "Address", "unit_id": "Unit id",
	"rtu.port": "Serial port", "rtu.baud": "Baud rate", "rtu.parity": "Parity", "rtu.data_bits": "Data bits", "rtu.stop_bits": "Stop bits",
	"port": "Serial port", "baud": "Baud rate", "ref": "Address", "register": "Register type", "type": "Data type",
	"byte_order": "Byte order", "scale": "Scale", "offset": "Offset", "unit": "Unit", "name": "Name", "bit": "Bit number",
	"writable": "Writable", "interval": "Poll interval", "poll_group": "Poll group", "decimals": "Decimals", "id": "Id",
	"host": "Host", "quic_port": "QUIC port", "tls_port": "TLS port", "tcp_port": "TCP port", "filter": "Topic filter",
	"topic": "Topic", "qos": "QoS", "username": "Username", "password": "Password", "client_id": "Client id",
	"password_hash": "Password", "sys_interval": "$SYS interval", "timeout": "Timeout",
}

// fieldWords says where the config path points, in the words of the
// forms: "Device 2 “boiler”, point “temp”, Scale". tree is the config
// being checked as its generic YAML tree (configMap), for the names of
// list elements; it may be nil.
func fieldWords(tree map[string]any, path string) string {
	if path == "" {
		return ""
	}
	steps := strings.Split(path, ".")
	var where []string // "Device 2 “boiler”", "point “temp”"
	var node any = tree
	schema := ""  // the path so far without indexes
	keyStart := 0 // where the keys after the last list element start
	for i, st := range steps {
		m := pathStep.FindStringSubmatch(st)
		if m == nil {
			return ""
		}
		key, idx := m[1], m[2]
		if schema != "" {
			schema += "."
		}
		schema += key
		node = child(node, key)
		if idx == "" {
			continue
		}
		n, _ := strconv.Atoi(idx)
		node = element(node, n)
		lw, ok := listWords[schema]
		if !ok {
			lw.what = humanKey(key)
		}
		label := fmt.Sprintf("%s %d", lw.what, n+1)
		if name, _ := child(node, lw.key).(string); lw.key != "" && name != "" {
			if lw.what == "point" || lw.what == "poll group" || lw.what == "action" {
				label = lw.what + " “" + name + "”"
			} else {
				label += " “" + name + "”"
			}
		}
		where = append(where, label)
		keyStart = i + 1
	}
	rest := steps[keyStart:]
	if len(where) == 0 {
		// No list on the way: the longest named section, then the key.
		for j := len(rest) - 1; j > 0; j-- {
			if w, ok := sectionWords[strings.Join(rest[:j], ".")]; ok {
				where, rest = []string{w}, rest[j:]
				break
			}
		}
	}
	if len(rest) > 0 {
		k := strings.Join(rest, ".")
		w, ok := keyWords[k]
		if !ok {
			w, ok = keyWords[rest[len(rest)-1]]
		}
		if !ok {
			w = humanKey(k)
		}
		where = append(where, w)
	}
	return strings.Join(where, ", ")
}

// child is node[key] when node is a map.
func child(node any, key string) any {
	if m, ok := node.(map[string]any); ok {
		return m[key]
	}
	return nil
}

// element is node[i] when node is a list that long.
func element(node any, i int) any {
	if l, ok := node.([]any); ok && i < len(l) {
		return l[i]
	}
	return nil
}

// humanKey writes a key out: "max_packet_size" → "Max packet size",
// "tls.ca" → "Tls ca".
func humanKey(k string) string {
	k = strings.NewReplacer("_", " ", ".", " ").Replace(k)
	if k == "" {
		return k
	}
	return strings.ToUpper(k[:1]) + k[1:]
}

// describeFields puts the reason of every field error in plain words and
// fills in Words: where the field is, as the forms name it, then the
// reason.
func describeFields(tree map[string]any, fields []FieldError) []FieldError {
	for i, f := range fields {
		reason := plainReason(f.Error)
		fields[i].Error = reason
		where := fieldWords(tree, f.Field)
		switch {
		case where == "":
			fields[i].Words = reason
		case strings.HasPrefix(reason, "must ") || strings.HasPrefix(reason, "is "):
			// "…, Scale must be a number": the label reads as the subject.
			parts := strings.Split(where, ", ")
			last := parts[len(parts)-1]
			if len(parts) == 1 {
				fields[i].Words = last + " " + reason
			} else {
				fields[i].Words = strings.Join(parts[:len(parts)-1], ", ") + ": " + last + " " + reason
			}
		default:
			fields[i].Words = where + ": " + reason
		}
	}
	return fields
}

// reasonRewrites put the config package's wording of a type mismatch into
// the page's.
var reasonRewrites = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`^expected a number, got "(.*)"$`), "must be a number, not “$1”"},
	{regexp.MustCompile(`^expected (a|an) ([a-z ]+), got "(.*)"$`), "must be $1 $2, not “$3”"},
	{regexp.MustCompile(`^cannot unmarshal !!(\w+) ` + "`" + `(.*)` + "`" + ` into (\w+)$`), "“$2” is not a valid value here"},
	{regexp.MustCompile(`^field (\w+) not found in type .*$`), "unknown setting “$1”"},
}

// plainReason rewrites a config reason into the page's words, and maps
// a raw Go error that reached it.
func plainReason(reason string) string {
	for _, r := range reasonRewrites {
		if r.re.MatchString(reason) {
			return r.re.ReplaceAllString(reason, r.with)
		}
	}
	if w, _ := plainError(reason); w != "" {
		return w
	}
	return reason
}

// A device error in words, and the device form's field it concerns
// (relative to the device: "tcp.address", "rtu.port", "unit_id"; "" when
// no one input is at fault).
type deviceErrorWords struct {
	re    *regexp.Regexp
	words func(m []string) string
	field string
}

// deviceErrors map what the Modbus and network code return (as text:
// readings carry their error as a string) to words. The first match wins.
var deviceErrors = []deviceErrorWords{
	{regexp.MustCompile(`encode (\w+): (.*)$`), func(m []string) string {
		return "This value does not fit the point (" + m[1] + "): " + m[2]
	}, "value"},
	{regexp.MustCompile(`dial tcp ([^ ]+): connect: connection refused`), func(m []string) string {
		return "Cannot reach " + m[1] + ": connection refused — is the device on and the address and port right?"
	}, "tcp.address"},
	{regexp.MustCompile(`dial tcp ([^ ]+): (?:connect: )?(?:no route to host|network is unreachable|host is unreachable)`), func(m []string) string {
		return "Cannot reach " + m[1] + ": no route to it — is it on the same network as the gateway and the address right?"
	}, "tcp.address"},
	{regexp.MustCompile(`dial tcp ([^ ]+): (?:i/o timeout|.*deadline exceeded)`), func(m []string) string {
		return "Cannot reach " + m[1] + ": no answer — is the device on, on this network, and the address right?"
	}, "tcp.address"},
	{regexp.MustCompile(`dial tcp: lookup ([^ :]+).*no such host`), func(m []string) string {
		return "Cannot find the host name " + m[1] + " — check its spelling or type the device's IP address."
	}, "tcp.address"},
	{regexp.MustCompile(`(?:read|write) tcp [^ ]+->([^ ]+): .*(?:connection reset by peer|broken pipe)|(?:^|: )EOF$`), func(m []string) string {
		at := "The device"
		if m[1] != "" {
			at = "The device at " + m[1]
		}
		return at + " closed the connection — it may allow fewer clients, or it restarted."
	}, ""},
	{regexp.MustCompile(`(?:serial port gone: \w+|open) ([^ :]+): .*(?:no such file or directory|[Pp]ort not found)`), func(m []string) string {
		return "Serial port " + m[1] + " is not there — is the adapter plugged in, and is this its name?"
	}, "rtu.port"},
	{regexp.MustCompile(`(?:serial port gone: \w+|open) ([^ :]+): .*(?i:permission denied)`), func(m []string) string {
		return "The gateway may not open serial port " + m[1] + " (permission denied) — its user needs the dialout group."
	}, "rtu.port"},
	{regexp.MustCompile(`(?:serial port gone: \w+|open) ([^ :]+): .*(?i:busy)`), func(m []string) string {
		return "Serial port " + m[1] + " is in use by another program."
	}, "rtu.port"},
	{regexp.MustCompile(`serial port gone`), func(m []string) string {
		return "The serial port went away — is the adapter still plugged in?"
	}, "rtu.port"},
	{regexp.MustCompile(`no complete reply \(\d+ bytes\) from unit (\d+)`), func(m []string) string {
		return "No answer from unit " + m[1] + " on the serial line — check the unit id, the baud rate and parity, and the wiring (A/B swapped, termination)."
	}, "unit_id"},
	{regexp.MustCompile(`(?i)\bcrc\b`), func(m []string) string {
		return "Replies arrive garbled (bad checksum) — check the baud rate, parity and stop bits, and the wiring."
	}, "rtu.baud"},
	{regexp.MustCompile(`exception (\d+) \(([^)]*)\)`), func(m []string) string {
		return exceptionWords(m[1], m[2])
	}, ""},
	{regexp.MustCompile(`(?:context deadline exceeded|i/o timeout)`), func(m []string) string {
		return "The device did not answer in time — check that it is on and its address, or raise its timeout."
	}, "tcp.address"},
}

// exceptionWords says what a Modbus exception means for the technician.
func exceptionWords(code, name string) string {
	hint := map[string]string{
		"1":  "the device does not support this kind of register: check the register type",
		"2":  "this address does not exist on the device: check the register type and the address (the manual's 40001 is holding register 0)",
		"3":  "the device refuses this value or count: check the data type and the range",
		"4":  "the device reports an internal failure",
		"6":  "the device is busy: it should answer on a later poll",
		"10": "the gateway in front of the device has no path to it",
		"11": "the device behind the Modbus gateway did not answer: check the unit id",
	}[code]
	if hint == "" {
		hint = "see the device's manual"
	}
	return fmt.Sprintf("The device refused the request (Modbus exception %s, %s): %s.", code, name, hint)
}

// plainError maps a device or network error to words and the device
// form's field it concerns; ("", "") when it is not one it knows.
func plainError(msg string) (words, field string) {
	for _, d := range deviceErrors {
		if m := d.re.FindStringSubmatch(msg); m != nil {
			return d.words(m), d.field
		}
	}
	return "", ""
}

// plainOr is plainError's words, or msg itself when it maps to none.
func plainOr(msg string) string {
	if w, _ := plainError(msg); w != "" {
		return w
	}
	return msg
}

// networkWords rewrite the Go network errors inside a message about a
// server (the uplink's): the rest of the message, which already says
// which server and transport, stays.
var networkWords = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`dial (?:tcp|udp) ([^ ]+): connect: connection refused`), "cannot reach $1: connection refused (nothing listens on that port)"},
	{regexp.MustCompile(`dial (?:tcp|udp) ([^ ]+): (?:connect: )?(?:no route to host|network is unreachable|host is unreachable)`), "cannot reach $1: no route to it (the gateway's network, or the address)"},
	{regexp.MustCompile(`dial (?:tcp|udp) ([^ ]+): i/o timeout`), "cannot reach $1: no answer (a firewall, or the wrong address)"},
	{regexp.MustCompile(`dial (?:tcp|udp): lookup ([^ :]+)(?: on [^ ]+)?: no such host`), "the host name $1 is not known (DNS)"},
	{regexp.MustCompile(`(?:read|write) tcp [^ ]+->([^ ]+): [^:]*: connection reset by peer`), "$1 closed the connection"},
}

// plainNetwork rewrites the Go network errors inside msg in words.
func plainNetwork(msg string) string {
	for _, n := range networkWords {
		msg = n.re.ReplaceAllString(msg, n.with)
	}
	return msg
}
