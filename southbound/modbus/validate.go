package modbus

import (
	"fmt"
	"math"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fieldgate/fieldgate/internal/check"
)

// Ranges accepted by Validate.
const (
	maxTimeout      = time.Minute
	maxRetries      = 10
	maxRequestDelay = 10 * time.Second
	minInterval     = 10 * time.Millisecond
	maxInterval     = 24 * time.Hour
	maxOfflineAfter = 1000
	maxTopicLength  = 65535
)

// namePattern is what device, group and point names may be: one topic
// level, no wildcards, nothing a shell or URL would trip on.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// baudRates are the rates the serial library can set.
var baudRates = []int{1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600}

// Validate checks the whole section (after applying defaults) and returns
// every problem found, joined with errors.Join. Each error is one line
// "path: reason" with path relative to the section, e.g.
// "devices[0].points[2].byte_order: must be one of ABCD, DCBA, BADC, CDAB, got "XY"";
// the gateway config prefixes "southbound.modbus.".
func (c Config) Validate() error {
	c = c.withDefaults()
	var v validator
	v.prefix("prefix", c.Prefix)
	v.OneOf("publish_mode", c.PublishMode, PublishPoint, PublishGroup)
	v.IntRange("qos", c.QoS, 0, 1)
	v.IntRange("offline_after", c.OfflineAfter, 1, maxOfflineAfter)
	v.IntRange("max_registers", c.MaxRegisters, 1, DefaultMaxRegisters)
	v.IntRange("max_bits", c.MaxBits, 1, DefaultMaxBits)
	v.IntRange("max_gap", c.MaxGap, 0, DefaultMaxBits)

	names := map[string]int{}
	type lineUse struct {
		dev  int
		rtu  RTU
		unit map[int]int
	}
	lines := map[string]*lineUse{}
	for i, d := range c.Devices {
		path := fmt.Sprintf("devices[%d]", i)
		if v.name(path+".name", d.Name) {
			if j, dup := names[d.Name]; dup {
				v.Addf(path+".name", "%q is already the name of devices[%d]", d.Name, j)
			} else {
				names[d.Name] = i
			}
		}
		c.validateDevice(&v, path, d)

		key := d.lineKey()
		if key == "" {
			continue
		}
		l, ok := lines[key]
		if !ok {
			l = &lineUse{dev: i, unit: map[int]int{}}
			if d.RTU != nil {
				l.rtu = *d.RTU
			}
			lines[key] = l
		} else if d.RTU != nil && *d.RTU != l.rtu {
			v.Addf(path+".rtu", "port %s is shared with devices[%d] and needs the same baud, data_bits, parity and stop_bits", d.RTU.Port, l.dev)
		}
		if j, dup := l.unit[d.UnitID]; dup {
			v.Addf(path+".unit_id", "unit %d on %s is already devices[%d]", d.UnitID, strings.TrimPrefix(strings.TrimPrefix(key, "rtu:"), "tcp:"), j)
		} else {
			l.unit[d.UnitID] = i
		}
	}
	c.validateTemplates(&v)
	return v.Err()
}

func (c Config) validateDevice(v *validator, path string, d Device) {
	switch {
	case d.TCP == nil && d.RTU == nil:
		v.Addf(path, "needs tcp or rtu")
	case d.TCP != nil && d.RTU != nil:
		v.Addf(path, "has both tcp and rtu; a device is on one line")
	case d.TCP != nil:
		v.address(path+".tcp.address", d.TCP.Address)
		v.IntRange(path+".unit_id", d.UnitID, 0, 255)
	default:
		r := d.RTU
		if r.Port == "" {
			v.Addf(path+".rtu.port", "must name a serial device, e.g. /dev/ttyUSB0")
		}
		if !slices.Contains(baudRates, r.Baud) {
			v.Addf(path+".rtu.baud", "must be one of %v, got %d", baudRates, r.Baud)
		}
		v.IntRange(path+".rtu.data_bits", r.DataBits, 7, 8)
		v.OneOf(path+".rtu.parity", r.Parity, "N", "E", "O")
		v.IntRange(path+".rtu.stop_bits", r.StopBits, 1, 2)
		// 0 is the broadcast address: nobody answers a read to it.
		v.IntRange(path+".unit_id", d.UnitID, 1, 247)
	}
	if d.Timeout <= 0 || d.Timeout > maxTimeout {
		v.Addf(path+".timeout", "must be between 1ms and %s, got %s", maxTimeout, d.Timeout)
	}
	v.IntRange(path+".retries", d.Retries, 0, maxRetries)
	if d.RequestDelay < 0 || d.RequestDelay > maxRequestDelay {
		v.Addf(path+".request_delay", "must be between 0s and %s, got %s", maxRequestDelay, d.RequestDelay)
	}
	if d.BitWrites != BitWritesMask && d.BitWrites != BitWritesReadModifyWrite {
		v.Addf(path+".bit_writes", "must be %q or %q, got %q", BitWritesMask, BitWritesReadModifyWrite, d.BitWrites)
	}

	groups := map[string]int{}
	for i, g := range d.PollGroups {
		gp := fmt.Sprintf("%s.poll_groups[%d]", path, i)
		if v.name(gp+".name", g.Name) {
			if j, dup := groups[g.Name]; dup {
				v.Addf(gp+".name", "%q is already the name of poll_groups[%d]", g.Name, j)
			} else {
				groups[g.Name] = i
			}
		}
		if g.Interval < minInterval || g.Interval > maxInterval {
			v.Addf(gp+".interval", "must be between %s and %s, got %s", minInterval, maxInterval, g.Interval)
		}
	}
	if len(d.Points) == 0 {
		v.Addf(path+".points", "a device needs at least one point")
	}
	points := map[string]int{}
	for i, p := range d.Points {
		pp := fmt.Sprintf("%s.points[%d]", path, i)
		if v.name(pp+".name", p.Name) {
			if j, dup := points[p.Name]; dup {
				v.Addf(pp+".name", "%q is already the name of points[%d]", p.Name, j)
			} else {
				points[p.Name] = i
			}
		}
		if _, ok := groups[p.Group]; !ok {
			v.Addf(pp+".group", "no poll group %q in this device", p.Group)
		}
		c.validatePoint(v, pp, p)
	}
}

func (c Config) validatePoint(v *validator, path string, p Point) {
	if p.Ref != "" {
		reg, addr, err := ParseRef(p.Ref)
		switch {
		case err != nil:
			v.Add(path+".ref", err)
			return
		case p.Register != reg || p.Address != addr:
			v.Addf(path+".ref", "%s is %s register %d (0-based), but the point says %s %d: give ref or register and address, not both", p.Ref, reg, addr, p.Register, p.Address)
			return
		}
	}
	v.IntRange(path+".address", p.Address, 0, math.MaxUint16)
	bitReg := p.Register == RegCoil || p.Register == RegDiscrete
	switch p.Register {
	case RegCoil, RegDiscrete, RegHolding, RegInput:
	default:
		v.Addf(path+".register", "must be one of coil, discrete, holding, input, got %q", p.Register)
		return
	}
	switch p.Type {
	case TypeBool, TypeBit:
	case TypeInt16, TypeUint16, TypeInt32, TypeUint32, TypeInt64, TypeUint64, TypeFloat32, TypeFloat64, TypeString:
		if bitReg {
			v.Addf(path+".type", "a %s holds one bit: type must be BOOL (or BIT), got %s", p.Register, p.Type)
			return
		}
	default:
		v.Addf(path+".type", "must be one of BOOL, BIT, INT16, UINT16, INT32, UINT32, INT64, UINT64, FLOAT32, FLOAT64, STRING, got %q", p.Type)
		return
	}
	boolean := p.Type == TypeBool || p.Type == TypeBit
	if bitReg || !boolean {
		if p.Bit != 0 {
			v.Addf(path+".bit", "only a BIT in a holding or input register has a bit number")
		}
	} else {
		v.IntRange(path+".bit", p.Bit, 0, 15)
	}
	if p.Type == TypeString {
		if p.Length < 1 || p.Length > min(maxStringRegisters, c.MaxRegisters) {
			v.Addf(path+".length", "a STRING needs 1 to %d registers, got %d", min(maxStringRegisters, c.MaxRegisters), p.Length)
		}
	} else if p.Length != 0 {
		v.Addf(path+".length", "only a STRING has a length")
	}
	if words := typeWords(p.Type, p.Length); !bitReg && words > 1 && p.Address+words-1 > math.MaxUint16 {
		v.Addf(path+".address", "%s at %d runs past register 65535", p.Type, p.Address)
	}

	v.OneOf(path+".byte_order", p.ByteOrder, OrderABCD, OrderDCBA, OrderBADC, OrderCDAB)
	if p.Type == TypeString && (p.ByteOrder == OrderDCBA || p.ByteOrder == OrderCDAB) {
		v.Addf(path+".byte_order", "a STRING is read register by register: ABCD or BADC, got %s", p.ByteOrder)
	}
	if boolean && p.ByteOrder != OrderABCD {
		v.Addf(path+".byte_order", "a %s has no byte order", p.Type)
	}

	numeric := !boolean && p.Type != TypeString
	if !finite(p.Scale) || !finite(p.Offset) {
		v.Addf(path+".scale", "scale and offset must be finite numbers")
	}
	if !numeric && (p.Scale != 1 || p.Offset != 0) {
		v.Addf(path+".scale", "a %s cannot be scaled or offset", p.Type)
	}
	if p.Deadband < 0 || !finite(p.Deadband) {
		v.Addf(path+".deadband", "must be a number >= 0, got %v", p.Deadband)
	} else if p.Deadband > 0 && !numeric {
		v.Addf(path+".deadband", "a %s has no deadband; use on_change", p.Type)
	}
	if !utf8.ValidString(p.Unit) || len(p.Unit) > 32 {
		v.Addf(path+".unit", "must be UTF-8 text of at most 32 bytes")
	}
	if !utf8.ValidString(p.Description) || len(p.Description) > 256 {
		v.Addf(path+".description", "must be UTF-8 text of at most 256 bytes")
	}
	if p.Writable {
		switch {
		case p.Register == RegDiscrete || p.Register == RegInput:
			v.Addf(path+".writable", "%s registers are read-only", p.Register)
		}
	}
	if p.ReadBack && !p.Writable {
		v.Addf(path+".read_back", "only a writable point is read back")
	}
}

// validator collects "path: reason" errors.
type validator struct {
	check.Errors
}

// name checks a device, group or point name; it reports whether it is valid.
func (v *validator) name(path, n string) bool {
	switch {
	case n == "":
		v.Addf(path, "must not be empty")
	case n == "status" || n == "set":
		v.Addf(path, "%q is reserved for a topic of its own", n)
	case !namePattern.MatchString(n):
		v.Addf(path, "%q must be 1 to 64 letters, digits, '_', '-' or '.'", n)
	default:
		return true
	}
	return false
}

// prefix checks the topic prefix: one or more levels, no wildcards.
func (v *validator) prefix(path, p string) {
	switch {
	case p == "":
		v.Addf(path, "must not be empty")
	case len(p) > maxTopicLength/2 || !utf8.ValidString(p) || strings.ContainsAny(p, "+#\x00"):
		v.Addf(path, "%q must be UTF-8 without +, # or NUL", p)
	case strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//"):
		v.Addf(path, "%q must not start or end with / or have empty levels", p)
	case strings.HasPrefix(p, "$"):
		v.Addf(path, "%q must not start with $ (reserved for the broker)", p)
	}
}

// address checks host:port with a port between 1 and 65535.
func (v *validator) address(path, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		v.Addf(path, "must be host:port (e.g. \"192.168.1.20:502\"), got %q", addr)
		return
	}
	if !v.Host(path, host) {
		return
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		v.Addf(path, "port must be a number between 1 and 65535, got %q", port)
	}
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
