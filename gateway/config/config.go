// Package config is fieldgate's configuration: one YAML file with a
// version field, strictly decoded (unknown keys are errors), with every
// default in one place (Default), a Validate that reports every problem
// with the path of the field at fault and reads no file, and a Provision
// that reads the files the config names (certificates) after it. A config
// read from YAML (ParseFile, Load) has its errors located at their line and
// column: "fieldgate.yaml:42:5: broker.listeners.tcp.address: …".
//
// Each part of the gateway defines its own section as a plain struct with
// its own DefaultConfig and Validate (the broker's is mqtt.Config); this
// package only assembles them. To add a section: add a field to Config, set
// its default in Default, list it in Config.sections, and document it in
// default.yaml (a test keeps default.yaml and Default equal).
//
// Relative file paths in the config (data_dir, certificates) are relative to
// the working directory of the process.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/fieldgate/fieldgate/board"
	"github.com/fieldgate/fieldgate/internal/secret"
	"github.com/fieldgate/fieldgate/protocols/coap"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
	"github.com/fieldgate/fieldgate/protocols/mqttsn"
	"github.com/fieldgate/fieldgate/rules"
	"github.com/fieldgate/fieldgate/southbound/modbus"
	"github.com/fieldgate/fieldgate/southbound/opcua"
	"github.com/fieldgate/fieldgate/southbound/serial"
	"github.com/fieldgate/fieldgate/uplink"
)

// Version is the only config version this build knows.
const Version = 1

// Config is the whole gateway configuration.
type Config struct {
	// Version is the schema version of the file; it must be 1.
	Version int `yaml:"version"`
	// Gateway is the identity and storage of this gateway.
	Gateway Gateway `yaml:"gateway"`
	// Log configures the process log (stderr).
	Log Log `yaml:"log"`
	// Web configures the local setup page and admin API.
	Web Web `yaml:"web"`
	// Broker is the local MQTT broker, the gateway's bus.
	Broker mqtt.Config `yaml:"broker"`
	// MQTTSN is the MQTT-SN v1.2 gateway (UDP).
	MQTTSN mqttsn.Config `yaml:"mqttsn"`
	// CoAP is the CoAP gateway (UDP, DTLS).
	CoAP coap.Config `yaml:"coap"`
	// Southbound is what the gateway polls: Modbus devices, serial sensors.
	Southbound Southbound `yaml:"southbound"`
	// Uplink is the store-and-forward bridge to the cloud.
	Uplink uplink.Config `yaml:"uplink"`
	// Rules are the edge rules (SQL, windows, actions), applied live.
	Rules rules.Config `yaml:"rules"`
	// Board is the hardware: watchdog, LEDs, data partition reserve.
	Board board.Config `yaml:"board"`
}

// Southbound groups the pollers of field devices.
type Southbound struct {
	Modbus modbus.Config `yaml:"modbus"`
	Serial serial.Config `yaml:"serial"`
	// OPCUA are the OPC UA servers read (docs/southbound.md).
	OPCUA opcua.Config `yaml:"opcua"`
}

// Gateway is the identity and storage of this gateway.
type Gateway struct {
	// ID names the gateway (in $SYS topics and towards the cloud). Empty
	// means: derived at run time from the host name.
	ID string `yaml:"id"`
	// DataDir holds the gateway's persistent state (the bbolt database).
	DataDir string `yaml:"data_dir"`
	// MemoryBudgetMB bounds, in MiB, what peers on the network can make the
	// gateway hold: packet bodies being read, MQTT-SN and CoAP per-peer
	// state, offline session queues. A reservation past it is refused (the
	// peer gets an error or is disconnected), never the process killed.
	// 0: unlimited.
	MemoryBudgetMB int `yaml:"memory_budget_mb"`
	// StopBudget bounds a shutdown: the parts share it, one that does not
	// stop within its share is abandoned and the process exits non-zero.
	// 0 means the default, 10 s.
	StopBudget time.Duration `yaml:"stop_budget"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text (logfmt-like) or json.
	Format string `yaml:"format"`
}

// DefaultYAML is the default configuration as a commented YAML file. Parsing
// it yields exactly Default().
//
//go:embed default.yaml
var DefaultYAML []byte

// Default returns the built-in configuration: what fieldgate runs with when
// no config file exists, and what every omitted field of a file keeps. It is
// the one place where defaults live; each section's come from its package.
func Default() Config {
	return Config{
		Version: Version,
		Gateway: Gateway{ID: "", DataDir: "./data", MemoryBudgetMB: 256, StopBudget: 10 * time.Second},
		Log:     Log{Level: "info", Format: "text"},
		Web:     DefaultWeb(),
		Broker:  mqtt.DefaultConfig(),
		MQTTSN:  mqttsn.DefaultConfig(),
		CoAP:    coap.DefaultConfig(),
		Southbound: Southbound{
			Modbus: modbus.DefaultConfig(),
			Serial: serial.DefaultConfig(),
			OPCUA:  opcua.DefaultConfig(),
		},
		Uplink: uplink.DefaultConfig(),
		Rules:  rules.DefaultConfig(),
		Board:  board.DefaultConfig(),
	}
}

// Load reads the config file at path, parses it, validates it and
// provisions it (reads the certificate files it names). Every error is an
// *Error naming path and, when the file sets the field at fault (or a key
// that holds it), its line and column, e.g.
// "fieldgate.yaml:42:5: broker.listeners.tcp.address: must be host:port";
// they are joined, one per line, in the order of the file. A file larger
// than MaxFileSize is refused before it is read.
func Load(path string) (Config, error) {
	data, err := ReadFile(path)
	if err != nil {
		return Config{}, &Error{File: path, Err: err}
	}
	f, err := ParseFile(path, data)
	if err != nil {
		return Config{}, err
	}
	if err := f.Check(); err != nil {
		return Config{}, err
	}
	return f.Config, nil
}

// section is a part of the config that validates (and provisions) itself
// with paths relative to its own key.
type section struct {
	key      string
	validate func() error
}

// sections lists the sections that validate themselves.
func (c Config) sections() []section {
	return []section{
		{key: "web", validate: c.Web.Validate},
		{key: "broker", validate: c.Broker.Validate},
		{key: "mqttsn", validate: c.MQTTSN.Validate},
		{key: "coap", validate: c.CoAP.Validate},
		{key: "southbound.modbus", validate: c.Southbound.Modbus.Validate},
		{key: "southbound.serial", validate: c.Southbound.Serial.Validate},
		{key: "southbound.opcua", validate: c.Southbound.OPCUA.Validate},
		{key: "uplink", validate: c.Uplink.Validate},
		{key: "board", validate: c.Board.Validate},
	}
}

// provisioned lists the sections that read files when provisioned.
func (c Config) provisioned() []section {
	return []section{
		{key: "web", validate: c.Web.Provision},
		{key: "broker", validate: c.Broker.Provision},
		{key: "coap", validate: c.CoAP.Provision},
		{key: "uplink", validate: c.Uplink.Provision},
	}
}

// Provision is the step after Validate that may touch the file system, as
// in caddy's provision → validate lifecycle: it reads the files the config
// names (TLS certificates, keys and CA bundles of the enabled listeners, the
// page, the CoAP DTLS endpoint, the uplink) and checks that they load. The
// gateway runs it after Validate when it starts and whenever it applies a
// config; Validate itself never reads a file. Each error is one line
// "path: reason" naming the config key and the file, e.g.
// "broker.listeners.tls.cert: open server.pem: no such file or directory",
// joined, with the underlying error kept (errors.Is(err, fs.ErrNotExist)).
// The parts load the files again when they start, so a renewed certificate
// is picked up by a restart.
func (c Config) Provision() error {
	var errs []error
	for _, s := range c.provisioned() {
		for _, err := range unjoin(s.validate()) {
			errs = append(errs, fmt.Errorf("%s.%w", s.key, err))
		}
	}
	return errors.Join(errs...)
}

// Validate checks the whole config and returns every problem found joined
// with errors.Join, each one line "path: reason", for example
// "broker.limits.max_packet_size: must be between 16 and 268435456, got 5".
// It is pure and fast: it reads no file (Provision does) and can run on
// every keystroke of the page. Its errors carry paths only; File.Locate
// adds the line and column of a config read from YAML.
func (c Config) Validate() error {
	var errs []error
	if c.Version != Version {
		errs = append(errs, fmt.Errorf("version: must be %d, got %d", Version, c.Version))
	}
	if c.Gateway.ID != "" && !validID(c.Gateway.ID) {
		errs = append(errs, fmt.Errorf("gateway.id: %q must be at most 64 letters, digits, '-', '_' or '.'", c.Gateway.ID))
	}
	if c.Gateway.DataDir == "" {
		errs = append(errs, errors.New("gateway.data_dir: must not be empty"))
	}
	if c.Gateway.MemoryBudgetMB < 0 || c.Gateway.MemoryBudgetMB > 1<<20 {
		errs = append(errs, fmt.Errorf("gateway.memory_budget_mb: %d is out of range 0..1048576", c.Gateway.MemoryBudgetMB))
	}
	if c.Gateway.StopBudget != 0 && (c.Gateway.StopBudget < time.Second || c.Gateway.StopBudget > 10*time.Minute) {
		errs = append(errs, fmt.Errorf("gateway.stop_budget: %s is out of range 1s..10m (0: the default 10s)", c.Gateway.StopBudget))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: must be one of debug, info, warn, error, got %q", c.Log.Level))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format: must be one of text, json, got %q", c.Log.Format))
	}
	for _, s := range c.sections() {
		for _, err := range unjoin(s.validate()) {
			errs = append(errs, fmt.Errorf("%s.%w", s.key, err))
		}
	}
	errs = append(errs, c.Southbound.opcuaClashes()...)
	for _, err := range unjoin(c.Rules.Validate()) { // a list: "rules[0].sql: ..."
		errs = append(errs, fmt.Errorf("rules%w", err))
	}
	for _, f := range c.SecretFields() {
		if f.Value.Kept() {
			errs = append(errs, fmt.Errorf("%s: is %s, which keeps the stored secret only in an upload to the gateway that has one: type the secret", f.Path, secret.Redacted))
		}
	}
	return errors.Join(errs...)
}

// validID reports whether id can name the gateway in topics and logs.
func validID(id string) bool {
	if len(id) > 64 {
		return false
	}
	for _, r := range id {
		if r > unicode.MaxASCII || !(unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("-_.", r)) {
			return false
		}
	}
	return true
}

// unjoin returns the errors joined in err (one level of errors.Join), or err
// alone.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
