package modbus

import (
	"bytes"
	"embed"
	"fmt"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// A Template is a device's point list under a name, to create devices from:
// the built-in ones (BuiltinTemplates, register maps of common devices with
// their published sources) and those a user saved (Config.Templates).
type Template struct {
	// Name identifies the template: letters, digits, '-', '_' and '.'.
	Name string `yaml:"name"`
	// Description says what device it is for.
	Description string `yaml:"description,omitempty"`
	// Source cites the register map the points come from.
	Source string `yaml:"source,omitempty"`
	// RTU holds the line settings the device ships with (Port empty), for
	// a serial device.
	RTU *RTU `yaml:"rtu,omitempty"`
	// TCPPort is the device's Modbus TCP port, for a TCP device.
	TCPPort int `yaml:"tcp_port,omitempty"`
	// UnitID is the device's factory unit id.
	UnitID int `yaml:"unit_id,omitempty"`
	// PollGroups and Points are copied into every device made from it.
	PollGroups []PollGroup `yaml:"poll_groups,omitempty"`
	Points     []Point     `yaml:"points"`
}

//go:embed templates/*.yaml
var builtinFS embed.FS

// BuiltinTemplates returns the templates shipped with the gateway, sorted
// by name: a fresh copy on every call (the embedded files are parsed once).
func BuiltinTemplates() ([]Template, error) {
	ts, err := builtinTemplates()
	if err != nil {
		return nil, err
	}
	out := make([]Template, len(ts))
	for i, t := range ts {
		out[i] = t
		out[i].Points = slices.Clone(t.Points)
		out[i].PollGroups = slices.Clone(t.PollGroups)
		if t.RTU != nil {
			rtu := *t.RTU
			out[i].RTU = &rtu
		}
	}
	return out, nil
}

// builtinTemplates parses the embedded templates once; the result is never
// modified (BuiltinTemplates hands out copies).
var builtinTemplates = sync.OnceValues(func() ([]Template, error) {
	files, err := builtinFS.ReadDir("templates")
	if err != nil {
		return nil, fmt.Errorf("modbus templates: %w", err)
	}
	var out []Template
	for _, f := range files {
		b, err := builtinFS.ReadFile(path.Join("templates", f.Name()))
		if err != nil {
			return nil, fmt.Errorf("modbus template %s: %w", f.Name(), err)
		}
		var t Template
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&t); err != nil {
			return nil, fmt.Errorf("modbus template %s: %w", f.Name(), err)
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b Template) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
})

// Endpoint says where a device made from a template is: a TCP host (the
// template's port is added when it has none) or an RTU port.
type Endpoint struct {
	// Host is "10.0.0.5" or "10.0.0.5:1502" for a TCP device.
	Host string
	// Port is the serial device for an RTU device, e.g. /dev/ttyUSB0.
	Port string
	// UnitID overrides the template's unit id when not negative.
	UnitID int
}

// NewDevice returns a device named name made from the template: its
// points, poll groups and line settings, at the endpoint. The caller
// validates the config the device is added to.
func (t Template) NewDevice(name string, at Endpoint) (Device, error) {
	d := Device{Name: name, UnitID: t.UnitID}
	if at.UnitID >= 0 {
		d.UnitID = at.UnitID
	}
	switch {
	case at.Host != "" && at.Port != "":
		return Device{}, fmt.Errorf("template %s: a device is on TCP or on a serial port, not both", t.Name)
	case at.Host != "":
		addr := at.Host
		if _, _, err := net.SplitHostPort(addr); err != nil {
			port := t.TCPPort
			if port == 0 {
				port = 502
			}
			addr = net.JoinHostPort(addr, strconv.Itoa(port))
		}
		d.TCP = &TCP{Address: addr}
	case at.Port != "":
		rtu := RTU{Port: at.Port}
		if t.RTU != nil {
			rtu = *t.RTU
			rtu.Port = at.Port
		}
		d.RTU = &rtu
	default:
		return Device{}, fmt.Errorf("template %s: give the device's TCP address or serial port", t.Name)
	}
	d.PollGroups = slices.Clone(t.PollGroups)
	d.Points = slices.Clone(t.Points)
	return d, nil
}

// TemplateFrom saves a device's point list as a template named name.
func TemplateFrom(name string, d Device) Template {
	t := Template{Name: name, UnitID: d.UnitID, PollGroups: slices.Clone(d.PollGroups), Points: slices.Clone(d.Points)}
	if d.RTU != nil {
		rtu := *d.RTU
		rtu.Port = ""
		t.RTU = &rtu
	}
	if d.TCP != nil {
		if _, p, err := net.SplitHostPort(d.TCP.Address); err == nil {
			t.TCPPort, _ = strconv.Atoi(p)
		}
	}
	return t
}

// validateTemplates checks the user's templates: valid names, unique and
// not a built-in's, and points that make a valid device.
func (c Config) validateTemplates(v *validator) {
	if len(c.Templates) == 0 {
		return
	}
	builtin, err := builtinTemplates()
	if err != nil {
		v.Add("templates", err)
		return
	}
	names := map[string]int{}
	for _, b := range builtin {
		names[b.Name] = -1
	}
	for i, t := range c.Templates {
		path := fmt.Sprintf("templates[%d]", i)
		if v.name(path+".name", t.Name) {
			switch j, dup := names[t.Name]; {
			case dup && j < 0:
				v.Addf(path+".name", "%q is the name of a built-in template", t.Name)
			case dup:
				v.Addf(path+".name", "%q is already the name of templates[%d]", t.Name, j)
			default:
				names[t.Name] = i
			}
		}
		d, err := t.NewDevice("template", Endpoint{Host: "127.0.0.1", UnitID: -1})
		if err != nil {
			v.Add(path, err)
			continue
		}
		dc := Config{MaxRegisters: c.MaxRegisters, MaxBits: c.MaxBits, Devices: []Device{d}}.withDefaults()
		dc.validateDevice(v, path, dc.Devices[0])
	}
}

// WithDefaults returns d with every default filled in, as the poller runs
// it (poll group, byte order, scale, and register and address from ref).
func WithDefaults(d Device) Device {
	return Config{Devices: []Device{d}}.withDefaults().Devices[0]
}
