// Package modbus polls Modbus TCP and Modbus RTU devices and publishes their
// values on the gateway bus, and writes set-points back to them.
//
// The register map is modelled like telegraf's Modbus input: each point names
// a register type (coil, discrete, holding, input), an address, a data type,
// a byte order, scale and offset. Points are polled in poll groups, each with
// its own interval; a planner merges adjacent points of a group into as few
// reads as possible. One worker owns each physical line: every transaction on
// an RTU line (and on one TCP endpoint) is serialised, devices on different
// lines are polled in parallel.
//
// Readings go to {prefix}/{device}/{point} (or one message per poll group),
// device status to {prefix}/{device}/status (retained), and set-points are
// taken from {prefix}/{device}/{point}/set with the result on
// {prefix}/{device}/{point}/set/result. Who may publish set topics is the
// broker ACL's business; this package ignores set messages whose bus Origin is
// its own (Origin), so that it never acts on its own publishes.
//
// github.com/goburrow/modbus is used only in this package, behind the small
// Client interface: its TCP handler for TCP lines, and its RTU framing over
// our own transport on go.bug.st/serial (fieldgate's one serial library,
// shared with southbound/serial) for RTU lines. Every RTU transaction ends
// by its deadline; a port that vanishes, hangs up or fails is a line error:
// every device of the line goes offline with the reason "serial port gone"
// at once, and the port is opened again (its path, typically a
// /dev/serial/by-id link, resolved anew) as soon as it is back.
package modbus

import "time"

// Defaults applied by Config.withDefaults to fields left at their zero value.
const (
	DefaultPrefix       = "southbound"
	DefaultOfflineAfter = 3
	DefaultMaxRegisters = 125
	DefaultMaxBits      = 2000
	DefaultTimeout      = time.Second
	DefaultInterval     = time.Second
	DefaultGroup        = "default"
	DefaultBaud         = 9600
	DefaultDataBits     = 8
	DefaultParity       = "E"
	DefaultStopBits     = 1
)

// How a writable BIT in a holding register is written (Device.BitWrites).
const (
	// BitWritesMask uses Mask Write Register (function 22): the device
	// changes the one bit itself, atomically.
	BitWritesMask = "mask"
	// BitWritesReadModifyWrite reads the register (03), changes the bit and
	// writes the register back (06), for devices without function 22. Not
	// atomic: a bit the device changes in between is overwritten.
	BitWritesReadModifyWrite = "read_modify_write"
)

// Publish modes.
const (
	// PublishPoint sends one message per point on {prefix}/{device}/{point}.
	PublishPoint = "point"
	// PublishGroup sends one message per poll group on
	// {prefix}/{device}/{group} with all the group's values.
	PublishGroup = "group"
)

// Config is the Modbus section of the gateway config (`southbound.modbus:`
// in YAML). Zero values mean the documented defaults; DefaultConfig and
// withDefaults are the only places defaults come from.
type Config struct {
	// Prefix is the first topic level of everything published (default
	// "southbound").
	Prefix string `yaml:"prefix"`
	// PublishMode is "point" (default) or "group".
	PublishMode string `yaml:"publish_mode"`
	// QoS of readings and results (0 or 1; default 0). Status is always
	// retained QoS 1.
	QoS int `yaml:"qos"`
	// OfflineAfter is how many failed polls in a row (timeouts, connection
	// and framing errors; Modbus exceptions prove the device is alive) mark
	// a device offline (default 3).
	OfflineAfter int `yaml:"offline_after"`
	// MaxGap is how many unused registers (or bits) the planner reads to
	// merge two points into one request (default 0: only adjacent points).
	MaxGap int `yaml:"max_gap"`
	// MaxRegisters is the most registers per read (default and maximum 125).
	MaxRegisters int `yaml:"max_registers"`
	// MaxBits is the most coils or discrete inputs per read (default and
	// maximum 2000).
	MaxBits int `yaml:"max_bits"`
	// Devices are the polled slaves.
	Devices []Device `yaml:"devices"`
	// Templates are point lists saved under a name to create devices
	// from, beside the built-in ones (BuiltinTemplates).
	Templates []Template `yaml:"templates,omitempty"`
}

// Device is one Modbus slave, reached over TCP or over an RTU line. Several
// devices may share one RTU line (or one TCP gateway): their transactions are
// serialised.
type Device struct {
	// Name is the device's topic level: letters, digits, '-', '_' and '.'.
	Name string `yaml:"name"`
	// TCP or RTU: exactly one must be set.
	TCP *TCP `yaml:"tcp"`
	RTU *RTU `yaml:"rtu"`
	// UnitID is the slave id (0-247; TCP devices often ignore it).
	UnitID int `yaml:"unit_id"`
	// Timeout bounds one transaction (default 1s).
	Timeout time.Duration `yaml:"timeout"`
	// Retries is how many times a failed transaction is repeated (default 0).
	Retries int `yaml:"retries"`
	// RequestDelay is a pause before every request to this device, for
	// slaves that need one between frames (default 0).
	RequestDelay time.Duration `yaml:"request_delay"`
	// BitWrites is how a writable BIT in a holding register is written:
	// "mask" (default: Mask Write Register, function 22) or
	// "read_modify_write" (03 then 06, for devices without function 22).
	BitWrites string `yaml:"bit_writes"`
	// PollGroups name the intervals points are polled at. Without any, one
	// group "default" polled every second exists.
	PollGroups []PollGroup `yaml:"poll_groups"`
	// Points are the values read from the device.
	Points []Point `yaml:"points"`
}

// TCP is a Modbus TCP endpoint.
type TCP struct {
	// Address is host:port (port 502 is the standard).
	Address string `yaml:"address"`
}

// RTU is a serial line.
type RTU struct {
	// Port is the device path, e.g. /dev/ttyUSB0.
	Port string `yaml:"port"`
	// Baud (default 9600), DataBits (7 or 8, default 8), Parity (N, E or O,
	// default E) and StopBits (1 or 2, default 1).
	Baud     int    `yaml:"baud"`
	DataBits int    `yaml:"data_bits"`
	Parity   string `yaml:"parity"`
	StopBits int    `yaml:"stop_bits"`
}

// PollGroup is a set of points polled together at one interval.
type PollGroup struct {
	Name     string        `yaml:"name"`
	Interval time.Duration `yaml:"interval"`
}

// Point is one value of a device.
type Point struct {
	// Name is the point's topic level.
	Name string `yaml:"name"`
	// Register is coil, discrete, holding or input.
	Register string `yaml:"register"`
	// Address is the zero-based protocol address (0-65535).
	Address int `yaml:"address"`
	// Ref, when set, is the address as device manuals print it: a
	// Modicon reference such as 40001 (holding register, address 0) or
	// 300010 (input register, address 9). It sets Register and Address,
	// which must then be empty or agree with it (see ParseRef).
	Ref string `yaml:"ref,omitempty"`
	// Type is BOOL (or BIT), INT16, UINT16, INT32, UINT32, INT64, UINT64,
	// FLOAT32, FLOAT64 or STRING. Coils and discrete inputs are BOOL (the
	// default for them); BIT in a holding or input register reads bit Bit.
	Type string `yaml:"type"`
	// Bit is the bit (0 = least significant) of a BIT in a 16-bit register.
	Bit int `yaml:"bit"`
	// Length is the number of registers of a STRING (2 characters each).
	Length int `yaml:"length"`
	// ByteOrder is ABCD (default, big-endian), DCBA, BADC or CDAB. A STRING
	// takes ABCD or BADC (bytes swapped in each register).
	ByteOrder string `yaml:"byte_order"`
	// Scale and Offset turn the raw number into the published one:
	// v = raw*scale + offset. Scale 0 means 1. A scaled integer is
	// published as a float.
	Scale  float64 `yaml:"scale"`
	Offset float64 `yaml:"offset"`
	// Unit is published beside the value (e.g. "°C").
	Unit string `yaml:"unit"`
	// Deadband, when above 0, publishes a numeric value only when it moved
	// at least this much since the last published one.
	Deadband float64 `yaml:"deadband"`
	// OnChange publishes only when the value or its quality changed.
	OnChange bool `yaml:"on_change"`
	// Group is the poll group's name (default: the device's first group).
	Group string `yaml:"group"`
	// Writable accepts set-points on {prefix}/{device}/{point}/set (coils
	// and holding registers only).
	Writable bool `yaml:"writable"`
	// ReadBack reads the point again after a write and reports the value.
	ReadBack bool `yaml:"read_back"`
	// Description says what the point is, for people (at most 256 bytes).
	Description string `yaml:"description,omitempty"`
}

// DefaultConfig returns the section's defaults: no devices.
func DefaultConfig() Config {
	return Config{
		Prefix:       DefaultPrefix,
		PublishMode:  PublishPoint,
		OfflineAfter: DefaultOfflineAfter,
		MaxRegisters: DefaultMaxRegisters,
		MaxBits:      DefaultMaxBits,
	}
}

// withDefaults returns a copy of c with every zero field that has a default
// set to it, including the fields of every device and point.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Prefix == "" {
		c.Prefix = d.Prefix
	}
	if c.PublishMode == "" {
		c.PublishMode = d.PublishMode
	}
	if c.OfflineAfter == 0 {
		c.OfflineAfter = d.OfflineAfter
	}
	if c.MaxRegisters == 0 {
		c.MaxRegisters = d.MaxRegisters
	}
	if c.MaxBits == 0 {
		c.MaxBits = d.MaxBits
	}
	devs := make([]Device, len(c.Devices))
	for i, dev := range c.Devices {
		devs[i] = dev.withDefaults()
	}
	c.Devices = devs
	return c
}

func (d Device) withDefaults() Device {
	if d.Timeout == 0 {
		d.Timeout = DefaultTimeout
	}
	if d.BitWrites == "" {
		d.BitWrites = BitWritesMask
	}
	if d.RTU != nil {
		r := *d.RTU
		if r.Baud == 0 {
			r.Baud = DefaultBaud
		}
		if r.DataBits == 0 {
			r.DataBits = DefaultDataBits
		}
		if r.Parity == "" {
			r.Parity = DefaultParity
		}
		if r.StopBits == 0 {
			r.StopBits = DefaultStopBits
		}
		d.RTU = &r
	}
	if len(d.PollGroups) == 0 {
		d.PollGroups = []PollGroup{{Name: DefaultGroup, Interval: DefaultInterval}}
	} else {
		groups := make([]PollGroup, len(d.PollGroups))
		for i, g := range d.PollGroups {
			if g.Interval == 0 {
				g.Interval = DefaultInterval
			}
			groups[i] = g
		}
		d.PollGroups = groups
	}
	points := make([]Point, len(d.Points))
	for i, p := range d.Points {
		if p.Ref != "" && p.Register == "" {
			if reg, addr, err := ParseRef(p.Ref); err == nil {
				p.Register, p.Address = reg, addr
			}
		}
		if p.Type == "" && (p.Register == RegCoil || p.Register == RegDiscrete) {
			p.Type = TypeBool
		}
		if p.ByteOrder == "" {
			p.ByteOrder = OrderABCD
		}
		if p.Scale == 0 {
			p.Scale = 1
		}
		if p.Group == "" {
			p.Group = d.PollGroups[0].Name
		}
		points[i] = p
	}
	d.Points = points
	return d
}

// lineKey names the physical line a device is on: devices with the same key
// share one worker and one connection.
func (d Device) lineKey() string {
	if d.RTU != nil {
		return "rtu:" + d.RTU.Port
	}
	if d.TCP != nil {
		return "tcp:" + d.TCP.Address
	}
	return ""
}
