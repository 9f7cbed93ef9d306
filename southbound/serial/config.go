package serial

import "time"

// Config is the serial sensors' section of the gateway config
// (`southbound.serial:` in YAML). The gateway's config package embeds it;
// its defaults come from DefaultConfig and, for the fields of each sensor
// left at their zero value, from the Default* constants below.
type Config struct {
	// Prefix is the first part of every topic: readings go to
	// {prefix}/{sensor}, the retained status to {prefix}/{sensor}/status.
	// It is shared with the Modbus pollers.
	Prefix string `yaml:"prefix"`
	// QoS of the readings (the status is always published with QoS 1).
	QoS int `yaml:"qos"`
	// ReconnectMin and ReconnectMax bound the backoff between attempts to
	// open a port that failed or disappeared: it starts at ReconnectMin,
	// doubles up to ReconnectMax, and each wait is jittered by ±20%.
	ReconnectMin time.Duration `yaml:"reconnect_min"`
	ReconnectMax time.Duration `yaml:"reconnect_max"`
	// Sensors are the line-oriented devices, each on its own port.
	Sensors []Sensor `yaml:"sensors"`
}

// Sensor is one line-oriented ASCII device on a serial port. Zero values
// mean the documented default.
type Sensor struct {
	// Name is the sensor's topic level: readings go to {prefix}/{name}.
	Name string `yaml:"name"`
	// Port is the device path. Prefer a /dev/serial/by-id/... link: it is
	// resolved again on every open, so an adapter that comes back under a
	// new /dev/ttyUSBn name is found.
	Port string `yaml:"port"`
	// Baud is the line speed (default 9600).
	Baud int `yaml:"baud"`
	// DataBits is 5, 6, 7 or 8 (default 8).
	DataBits int `yaml:"data_bits"`
	// Parity is none, odd, even, mark or space (default none).
	Parity string `yaml:"parity"`
	// StopBits is 1, 1.5 or 2 (default 1).
	StopBits float64 `yaml:"stop_bits"`
	// Terminator ends each line, with Go escapes such as \r\n (default
	// "\n"). Carriage returns and line feeds around a line are trimmed
	// whatever the terminator.
	Terminator string `yaml:"terminator"`
	// MaxLine is the longest line accepted, in bytes without the
	// terminator (default 1024); longer lines are dropped and counted.
	MaxLine int `yaml:"max_line"`
	// Parser is nmea (NMEA 0183 GGA and RMC sentences, checksum required)
	// or regex.
	Parser string `yaml:"parser"`
	// Regex (parser regex) is an RE2 expression whose named groups become
	// the fields of a reading. Groups not listed in Fields are strings.
	Regex string `yaml:"regex"`
	// Fields (parser regex) give a type, scale and offset to named groups.
	Fields []Field `yaml:"fields"`
	// Sentences (parser nmea) lists the sentence types to publish: GGA,
	// RMC (default both). Other sentences are ignored and counted.
	Sentences []string `yaml:"sentences"`
	// Request, when set, is written to the port every RequestInterval (and
	// once right after the port opens), with Go escapes such as \r\n; for
	// sensors that answer only when asked.
	Request string `yaml:"request"`
	// RequestInterval is how often Request is sent.
	RequestInterval time.Duration `yaml:"request_interval"`
}

// Field types a regex group can be converted to.
const (
	TypeFloat  = "float"
	TypeInt    = "int"
	TypeBool   = "bool"
	TypeString = "string"
)

// Field converts one named group of a regex sensor.
type Field struct {
	// Name is the named group, e.g. temp for (?P<temp>[-0-9.]+).
	Name string `yaml:"name"`
	// Type is float (default), int, bool or string. Bool accepts
	// true/false, 1/0, on/off, yes/no in any case.
	Type string `yaml:"type"`
	// Scale and Offset turn a float or int x into x*scale+offset (an int
	// is rounded to the nearest integer afterwards). A scale of 0 means 1.
	Scale  float64 `yaml:"scale"`
	Offset float64 `yaml:"offset"`
}

// Defaults of the section and of each sensor's zero-valued fields.
const (
	DefaultPrefix       = "southbound"
	DefaultReconnectMin = time.Second
	DefaultReconnectMax = 30 * time.Second
	DefaultBaud         = 9600
	DefaultDataBits     = 8
	DefaultParity       = "none"
	DefaultStopBits     = 1
	DefaultTerminator   = `\n`
	DefaultMaxLine      = 1024
)

// DefaultConfig returns the section's defaults: prefix southbound, QoS 0,
// reconnect backoff from 1 s to 30 s, no sensors.
func DefaultConfig() Config {
	return Config{
		Prefix:       DefaultPrefix,
		QoS:          0,
		ReconnectMin: DefaultReconnectMin,
		ReconnectMax: DefaultReconnectMax,
	}
}

// withDefaults returns s with every zero-valued setting replaced by its
// default.
func (s Sensor) withDefaults() Sensor {
	if s.Baud == 0 {
		s.Baud = DefaultBaud
	}
	if s.DataBits == 0 {
		s.DataBits = DefaultDataBits
	}
	if s.Parity == "" {
		s.Parity = DefaultParity
	}
	if s.StopBits == 0 {
		s.StopBits = DefaultStopBits
	}
	if s.Terminator == "" {
		s.Terminator = DefaultTerminator
	}
	if s.MaxLine == 0 {
		s.MaxLine = DefaultMaxLine
	}
	return s
}
