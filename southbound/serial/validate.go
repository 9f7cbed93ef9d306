package serial

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fieldgate/fieldgate/internal/check"
)

// Ranges accepted by Validate: wide enough for any real sensor, narrow
// enough to catch typos.
const (
	minBaud          = 50
	maxBaud          = 4_000_000
	maxMaxLine       = 64 * 1024
	maxTerminator    = 8
	maxRequest       = 1024
	minInterval      = 10 * time.Millisecond
	maxReconnect     = time.Hour
	maxNameLength    = 128
	maxPrefixLength  = 1024
	maxRegexLength   = 4096
	maxFieldsPerLine = 256
)

// Validate checks the whole section and returns every problem found, joined
// with errors.Join. Each error is one line "path: reason" where path is
// relative to the section (e.g. "sensors[1].baud: must be between 50 and
// 4000000, got -1"); the gateway config prefixes "southbound.serial.".
// Validate does not look at the file system: a port that is not plugged in
// yet is not an error.
func (c Config) Validate() error {
	var v validator
	v.topicPart("prefix", c.Prefix, true)
	if c.QoS < 0 || c.QoS > 2 {
		v.Addf("qos", "must be 0, 1 or 2, got %d", c.QoS)
	}
	if c.ReconnectMin <= 0 || c.ReconnectMin > maxReconnect {
		v.Addf("reconnect_min", "must be between 1ns and %s, got %s", maxReconnect, c.ReconnectMin)
	}
	if c.ReconnectMax < c.ReconnectMin || c.ReconnectMax > maxReconnect {
		v.Addf("reconnect_max", "must be between reconnect_min (%s) and %s, got %s", c.ReconnectMin, maxReconnect, c.ReconnectMax)
	}
	seen := make(map[string]int)
	for i, s := range c.Sensors {
		path := fmt.Sprintf("sensors[%d]", i)
		if j, dup := seen[s.Name]; dup && s.Name != "" {
			v.Addf(path+".name", "%q is already the name of sensors[%d]", s.Name, j)
		} else {
			seen[s.Name] = i
		}
		s.validate(&v, path)
	}
	return v.Err()
}

// validate checks one sensor; path is "sensors[i]".
func (s Sensor) validate(v *validator, path string) {
	s = s.withDefaults()
	v.topicPart(path+".name", s.Name, false)
	switch {
	case s.Port == "":
		v.Addf(path+".port", "must not be empty")
	case !filepath.IsAbs(s.Port):
		v.Addf(path+".port", "must be an absolute device path such as /dev/serial/by-id/..., got %q", s.Port)
	case strings.ContainsRune(s.Port, 0):
		v.Addf(path+".port", "must not contain NUL characters")
	}
	if s.Baud < minBaud || s.Baud > maxBaud {
		v.Addf(path+".baud", "must be between %d and %d, got %d", minBaud, maxBaud, s.Baud)
	}
	if s.DataBits < 5 || s.DataBits > 8 {
		v.Addf(path+".data_bits", "must be 5, 6, 7 or 8, got %d", s.DataBits)
	}
	if _, ok := parities[s.Parity]; !ok {
		v.Addf(path+".parity", "must be one of none, odd, even, mark, space, got %q", s.Parity)
	}
	if _, ok := stopBits[s.StopBits]; !ok {
		v.Addf(path+".stop_bits", "must be 1, 1.5 or 2, got %v", s.StopBits)
	}
	if term, err := unescape(s.Terminator); err != nil {
		v.Addf(path+".terminator", "%v", err)
	} else if len(term) > maxTerminator {
		v.Addf(path+".terminator", "must be at most %d bytes, got %d", maxTerminator, len(term))
	}
	if s.MaxLine < 1 || s.MaxLine > maxMaxLine {
		v.Addf(path+".max_line", "must be between 1 and %d bytes, got %d", maxMaxLine, s.MaxLine)
	}
	switch s.Parser {
	case parserNMEA:
		s.validateNMEA(v, path)
	case parserRegex:
		s.validateRegex(v, path)
	case "":
		v.Addf(path+".parser", "must be set: nmea or regex")
	default:
		v.Addf(path+".parser", "must be nmea or regex, got %q", s.Parser)
	}
	s.validateRequest(v, path)
}

func (s Sensor) validateNMEA(v *validator, path string) {
	if s.Regex != "" {
		v.Addf(path+".regex", "only for parser regex")
	}
	if len(s.Fields) > 0 {
		v.Addf(path+".fields", "only for parser regex")
	}
	var seen []string
	for i, t := range s.Sentences {
		p := fmt.Sprintf("%s.sentences[%d]", path, i)
		switch {
		case !slices.Contains(nmeaSentences, t):
			v.Addf(p, "must be one of %s, got %q", strings.Join(nmeaSentences, ", "), t)
		case slices.Contains(seen, t):
			v.Addf(p, "%s is listed twice", t)
		}
		seen = append(seen, t)
	}
}

func (s Sensor) validateRegex(v *validator, path string) {
	if len(s.Sentences) > 0 {
		v.Addf(path+".sentences", "only for parser nmea")
	}
	if s.Regex == "" {
		v.Addf(path+".regex", "required for parser regex")
		return
	}
	if len(s.Regex) > maxRegexLength {
		v.Addf(path+".regex", "must be at most %d bytes, got %d", maxRegexLength, len(s.Regex))
		return
	}
	re, err := regexp.Compile(s.Regex)
	if err != nil {
		// The library's message holds the expression as is, maybe with
		// newlines: quote it to keep one error per line.
		var se *syntax.Error
		if errors.As(err, &se) {
			v.Addf(path+".regex", "invalid: %s: %q", se.Code, se.Expr)
		} else {
			v.Addf(path+".regex", "invalid: %q", err.Error())
		}
		return
	}
	var groups []string
	for _, n := range re.SubexpNames() {
		if n != "" {
			groups = append(groups, n)
		}
	}
	switch {
	case len(groups) == 0:
		v.Addf(path+".regex", "needs at least one named group such as (?P<temp>[-0-9.]+)")
	case len(groups) > maxFieldsPerLine:
		v.Addf(path+".regex", "has %d named groups, at most %d allowed", len(groups), maxFieldsPerLine)
	}
	for i, n := range groups {
		if slices.Contains(groups[:i], n) {
			v.Addf(path+".regex", "group name %q is used twice", n)
		}
	}
	var seen []string
	for i, f := range s.Fields {
		p := fmt.Sprintf("%s.fields[%d]", path, i)
		switch {
		case f.Name == "":
			v.Addf(p+".name", "must not be empty")
		case !slices.Contains(groups, f.Name):
			v.Addf(p+".name", "%q is not a named group of regex", f.Name)
		case slices.Contains(seen, f.Name):
			v.Addf(p+".name", "%q is listed twice", f.Name)
		}
		seen = append(seen, f.Name)
		typ := f.Type
		if typ == "" {
			typ = TypeFloat
		}
		switch typ {
		case TypeFloat, TypeInt:
			if math.IsNaN(f.Scale) || math.IsInf(f.Scale, 0) {
				v.Addf(p+".scale", "must be a finite number, got %v", f.Scale)
			}
			if math.IsNaN(f.Offset) || math.IsInf(f.Offset, 0) {
				v.Addf(p+".offset", "must be a finite number, got %v", f.Offset)
			}
		case TypeBool, TypeString:
			if f.Scale != 0 {
				v.Addf(p+".scale", "only for types float and int")
			}
			if f.Offset != 0 {
				v.Addf(p+".offset", "only for types float and int")
			}
		default:
			v.Addf(p+".type", "must be one of float, int, bool, string, got %q", f.Type)
		}
	}
}

func (s Sensor) validateRequest(v *validator, path string) {
	if s.Request == "" {
		if s.RequestInterval != 0 {
			v.Addf(path+".request_interval", "only with request")
		}
		return
	}
	if req, err := unescape(s.Request); err != nil {
		v.Addf(path+".request", "%v", err)
	} else if len(req) > maxRequest {
		v.Addf(path+".request", "must be at most %d bytes, got %d", maxRequest, len(req))
	}
	if s.RequestInterval < minInterval {
		v.Addf(path+".request_interval", "must be at least %s when request is set, got %s", minInterval, s.RequestInterval)
	}
}

// validator collects "path: reason" errors.
type validator struct {
	check.Errors
}

// topicPart checks a topic prefix (multi allows several levels) or a single
// topic level: not empty, UTF-8, no wildcards, NUL, or empty levels.
func (v *validator) topicPart(path, s string, multi bool) {
	limit := maxNameLength
	if multi {
		limit = maxPrefixLength
	}
	switch {
	case s == "":
		v.Addf(path, "must not be empty")
	case len(s) > limit:
		v.Addf(path, "must be at most %d bytes, got %d", limit, len(s))
	case !utf8.ValidString(s) || strings.ContainsAny(s, "+#\x00"):
		v.Addf(path, "%q must be UTF-8 without +, # or NUL", s)
	case !multi && strings.Contains(s, "/"):
		v.Addf(path, "%q must be a single topic level (no /)", s)
	case multi && slices.Contains(strings.Split(s, "/"), ""):
		v.Addf(path, "%q must not have empty topic levels (leading, trailing or double /)", s)
	case strings.HasPrefix(s, "$"):
		v.Addf(path, "%q must not start with $ (reserved for the broker)", s)
	}
}

// unescape interprets Go escape sequences (\r, \n, \t, \\, \xHH, \u....,
// octal \NNN) in a config string. A bare double quote is allowed.
func unescape(s string) (string, error) {
	var b strings.Builder
	for rest := s; rest != ""; {
		if rest[0] == '"' {
			b.WriteByte('"')
			rest = rest[1:]
			continue
		}
		r, multibyte, tail, err := strconv.UnquoteChar(rest, '"')
		if err != nil {
			return "", fmt.Errorf("bad escape sequence at byte %d of %q", len(s)-len(rest), s)
		}
		if multibyte {
			b.WriteRune(r)
		} else {
			b.WriteByte(byte(r))
		}
		rest = tail
	}
	return b.String(), nil
}
