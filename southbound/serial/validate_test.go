package serial

import (
	"math"
	"strings"
	"testing"
	"time"
)

// validSensor is a minimal valid NMEA sensor.
func validSensor() Sensor {
	return Sensor{Name: "gps", Port: "/dev/serial/by-id/usb-gps", Parser: "nmea"}
}

func TestValidateAcceptsDefaultsAndExamples(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	cfg.Sensors = []Sensor{
		validSensor(),
		{
			Name: "weather", Port: "/dev/ttyUSB1", Baud: 19200, DataBits: 7, Parity: "even", StopBits: 1.5,
			Terminator: `\r\n`, MaxLine: 200, Parser: "regex",
			Regex:   `^T=(?P<temp>\S+) H=(?P<hum>\S+) ID=(?P<id>\S+)$`,
			Fields:  []Field{{Name: "temp"}, {Name: "hum", Type: "int", Scale: 0.1, Offset: 1}, {Name: "id", Type: "string"}},
			Request: `READ\r\n`, RequestInterval: time.Second,
		},
		{Name: "rmc-only", Port: "/dev/ttyACM0", Parser: "nmea", Sentences: []string{"RMC"}, StopBits: 2},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
}

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string // every line of the joined error, in order
	}{
		{
			name: "section",
			mutate: func(c *Config) {
				c.Prefix = "a//b"
				c.QoS = 3
				c.ReconnectMin = 0
				c.ReconnectMax = 2 * time.Hour
			},
			want: []string{
				`prefix: "a//b" must not have empty topic levels (leading, trailing or double /)`,
				"qos: must be 0, 1 or 2, got 3",
				"reconnect_min: must be between 1ns and 1h0m0s, got 0s",
				"reconnect_max: must be between reconnect_min (0s) and 1h0m0s, got 2h0m0s",
			},
		},
		{
			name:   "prefix wildcard",
			mutate: func(c *Config) { c.Prefix = "south/#" },
			want:   []string{`prefix: "south/#" must be UTF-8 without +, # or NUL`},
		},
		{
			name:   "prefix $",
			mutate: func(c *Config) { c.Prefix = "$SYS" },
			want:   []string{`prefix: "$SYS" must not start with $ (reserved for the broker)`},
		},
		{
			name: "port settings",
			mutate: func(c *Config) {
				s := &c.Sensors[0]
				s.Name = "a/b"
				s.Port = "ttyUSB0"
				s.Baud = -1
				s.DataBits = 9
				s.Parity = "EVEN"
				s.StopBits = 3
				s.Terminator = `\q`
				s.MaxLine = 1 << 20
			},
			want: []string{
				`sensors[0].name: "a/b" must be a single topic level (no /)`,
				`sensors[0].port: must be an absolute device path such as /dev/serial/by-id/..., got "ttyUSB0"`,
				"sensors[0].baud: must be between 50 and 4000000, got -1",
				"sensors[0].data_bits: must be 5, 6, 7 or 8, got 9",
				`sensors[0].parity: must be one of none, odd, even, mark, space, got "EVEN"`,
				"sensors[0].stop_bits: must be 1, 1.5 or 2, got 3",
				`sensors[0].terminator: bad escape sequence at byte 0 of "\\q"`,
				"sensors[0].max_line: must be between 1 and 65536 bytes, got 1048576",
			},
		},
		{
			name: "duplicate and empty names, missing parser",
			mutate: func(c *Config) {
				c.Sensors = append(c.Sensors, validSensor(), Sensor{Port: "/dev/ttyS0"})
			},
			want: []string{
				`sensors[1].name: "gps" is already the name of sensors[0]`,
				"sensors[2].name: must not be empty",
				"sensors[2].parser: must be set: nmea or regex",
			},
		},
		{
			name: "nmea options",
			mutate: func(c *Config) {
				s := &c.Sensors[0]
				s.Sentences = []string{"GGA", "GSV", "GGA"}
				s.Regex = "x"
				s.Fields = []Field{{Name: "x"}}
			},
			want: []string{
				"sensors[0].regex: only for parser regex",
				"sensors[0].fields: only for parser regex",
				`sensors[0].sentences[1]: must be one of GGA, RMC, got "GSV"`,
				"sensors[0].sentences[2]: GGA is listed twice",
			},
		},
		{
			name: "regex options",
			mutate: func(c *Config) {
				s := &c.Sensors[0]
				s.Parser = "regex"
				s.Sentences = []string{"GGA"}
				s.Regex = `(?P<a>\d+) (?P<b>\w+)`
				s.Fields = []Field{
					{Name: "a", Type: "double"},
					{Name: "zz"},
					{Name: "b", Type: "bool", Scale: 2, Offset: 1},
					{Name: "a", Type: "float", Scale: math.NaN(), Offset: math.Inf(1)},
				}
			},
			want: []string{
				"sensors[0].sentences: only for parser nmea",
				`sensors[0].fields[0].type: must be one of float, int, bool, string, got "double"`,
				`sensors[0].fields[1].name: "zz" is not a named group of regex`,
				"sensors[0].fields[2].scale: only for types float and int",
				"sensors[0].fields[2].offset: only for types float and int",
				`sensors[0].fields[3].name: "a" is listed twice`,
				"sensors[0].fields[3].scale: must be a finite number, got NaN",
				"sensors[0].fields[3].offset: must be a finite number, got +Inf",
			},
		},
		{
			name: "bad regex",
			mutate: func(c *Config) {
				c.Sensors[0].Parser = "regex"
				c.Sensors[0].Regex = `(?P<a>\d+`
			},
			want: []string{`sensors[0].regex: invalid: missing closing ): "(?P<a>\\d+"`},
		},
		{
			name: "regex without groups",
			mutate: func(c *Config) {
				c.Sensors[0].Parser = "regex"
				c.Sensors[0].Regex = `\d+`
			},
			want: []string{"sensors[0].regex: needs at least one named group such as (?P<temp>[-0-9.]+)"},
		},
		{
			name: "regex missing, unknown parser",
			mutate: func(c *Config) {
				c.Sensors = append(c.Sensors, validSensor())
				c.Sensors[0].Parser = "regex"
				c.Sensors[1].Name = "other"
				c.Sensors[1].Parser = "csv"
			},
			want: []string{
				"sensors[0].regex: required for parser regex",
				`sensors[1].parser: must be nmea or regex, got "csv"`,
			},
		},
		{
			name: "request",
			mutate: func(c *Config) {
				c.Sensors = append(c.Sensors, validSensor())
				c.Sensors[0].Request = `\xZZ`
				c.Sensors[0].RequestInterval = time.Millisecond
				c.Sensors[1].Name = "other"
				c.Sensors[1].RequestInterval = time.Second
			},
			want: []string{
				`sensors[0].request: bad escape sequence at byte 0 of "\\xZZ"`,
				"sensors[0].request_interval: must be at least 10ms when request is set, got 1ms",
				"sensors[1].request_interval: only with request",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Sensors = []Sensor{validSensor()}
			tt.mutate(&cfg)
			err := cfg.Validate()
			if err == nil {
				t.Fatal("Validate accepted the config")
			}
			got := strings.Split(err.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", err, strings.Join(tt.want, "\n"))
			}
			if _, nerr := New(cfg, nil, nil); nerr == nil || !strings.Contains(nerr.Error(), got[0]) {
				t.Errorf("New: %v, want the validation error", nerr)
			}
		})
	}
}
