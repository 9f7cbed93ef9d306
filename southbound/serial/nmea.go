package serial

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Parser names.
const (
	parserNMEA  = "nmea"
	parserRegex = "regex"
)

// nmeaSentences are the NMEA 0183 sentence types the parser decodes.
var nmeaSentences = []string{"GGA", "RMC"}

// Errors the parsers return; the sensor counts drops by them.
var (
	// errChecksum: the line's checksum is missing or wrong.
	errChecksum = errors.New("bad checksum")
	// errIgnored: a well-formed line the sensor was not asked to publish
	// (an NMEA sentence type not in the filter). It is not an error.
	errIgnored = errors.New("ignored")
)

// knotsToKmh converts knots to km/h.
const knotsToKmh = 1.852

// nmeaParser decodes NMEA 0183 GGA and RMC sentences, with any talker id
// (GP, GN, GL, GA, BD ...). Other sentence types with a valid checksum are
// ignored.
type nmeaParser struct {
	// sentences to decode; others give errIgnored.
	sentences []string
}

// parse decodes one line without its terminator.
func (p nmeaParser) parse(line string) (map[string]any, error) {
	body, err := nmeaBody(line)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(body, ",")
	addr := parts[0]
	if len(addr) != 5 {
		return nil, fmt.Errorf("nmea: address %q is not a 2-letter talker and 3-letter sentence type", addr)
	}
	talker, typ := addr[:2], addr[2:]
	if !slices.Contains(p.sentences, typ) {
		return nil, fmt.Errorf("nmea: sentence %s: %w", addr, errIgnored)
	}
	fields := map[string]any{"sentence": typ, "talker": talker}
	switch typ {
	case "GGA":
		err = parseGGA(parts, fields)
	case "RMC":
		err = parseRMC(parts, fields)
	}
	if err != nil {
		return nil, fmt.Errorf("nmea: %s: %w", addr, err)
	}
	return fields, nil
}

// nmeaBody checks the frame "$...*hh" and its checksum (the XOR of the
// bytes between $ and *) and returns what lies between $ and *.
func nmeaBody(line string) (string, error) {
	if !strings.HasPrefix(line, "$") {
		return "", errors.New("nmea: sentence does not start with $")
	}
	star := strings.LastIndexByte(line, '*')
	if star < 0 {
		return "", fmt.Errorf("nmea: no checksum: %w", errChecksum)
	}
	if len(line)-star-1 != 2 {
		return "", fmt.Errorf("nmea: checksum %q is not 2 hex digits: %w", line[star+1:], errChecksum)
	}
	want, err := strconv.ParseUint(line[star+1:], 16, 8)
	if err != nil {
		return "", fmt.Errorf("nmea: checksum %q is not 2 hex digits: %w", line[star+1:], errChecksum)
	}
	body := line[1:star]
	var sum byte
	for i := 0; i < len(body); i++ {
		sum ^= body[i]
	}
	if sum != byte(want) {
		return "", fmt.Errorf("nmea: checksum is %02X, computed %02X: %w", want, sum, errChecksum)
	}
	return body, nil
}

// parseGGA decodes $--GGA,time,lat,N,lon,E,quality,sats,hdop,alt,M,sep,M,...
func parseGGA(parts []string, out map[string]any) error {
	if len(parts) < 12 {
		return fmt.Errorf("has %d fields, GGA needs at least 12", len(parts))
	}
	if err := nmeaTime(parts[1], out); err != nil {
		return err
	}
	if err := nmeaPosition(parts[2:6], out); err != nil {
		return err
	}
	quality, err := optInt(parts[6], "fix quality", 0, 9)
	if err != nil {
		return err
	}
	if quality >= 0 {
		out["fix_quality"] = quality
		out["fix"] = quality > 0
	}
	if err := optFloat(parts[7], "satellites", out, "satellites", true); err != nil {
		return err
	}
	if err := optFloat(parts[8], "hdop", out, "hdop", false); err != nil {
		return err
	}
	if err := optFloat(parts[9], "altitude", out, "altitude", false); err != nil {
		return err
	}
	return optFloat(parts[11], "geoid separation", out, "geoid_separation", false)
}

// parseRMC decodes $--RMC,time,A|V,lat,N,lon,E,knots,course,ddmmyy,var,E|W[,mode[,nav]]
func parseRMC(parts []string, out map[string]any) error {
	if len(parts) < 10 {
		return fmt.Errorf("has %d fields, RMC needs at least 10", len(parts))
	}
	if err := nmeaTime(parts[1], out); err != nil {
		return err
	}
	switch parts[2] {
	case "A":
		out["fix"] = true
	case "V":
		out["fix"] = false
	default:
		return fmt.Errorf("status %q is not A or V", parts[2])
	}
	if err := nmeaPosition(parts[3:7], out); err != nil {
		return err
	}
	if err := optFloat(parts[7], "speed", out, "speed_knots", false); err != nil {
		return err
	}
	if knots, ok := out["speed_knots"].(float64); ok {
		out["speed_kmh"] = knots * knotsToKmh
	}
	if err := optFloat(parts[8], "course", out, "course", false); err != nil {
		return err
	}
	if err := nmeaDate(parts[9], out); err != nil {
		return err
	}
	if len(parts) > 11 && parts[10] != "" {
		var v float64
		if err := parseNumber(parts[10], "magnetic variation", &v); err != nil {
			return err
		}
		switch parts[11] {
		case "E":
		case "W":
			v = -v
		default:
			return fmt.Errorf("magnetic variation direction %q is not E or W", parts[11])
		}
		out["magnetic_variation"] = v
	}
	if len(parts) > 12 && parts[12] != "" {
		if len(parts[12]) != 1 || parts[12][0] < 'A' || parts[12][0] > 'Z' {
			return fmt.Errorf("mode %q is not one letter", parts[12])
		}
		out["mode"] = parts[12]
	}
	return nil
}

// nmeaTime decodes hhmmss[.sss] into "time" as "hh:mm:ss[.sss]" (UTC).
func nmeaTime(s string, out map[string]any) error {
	if s == "" {
		return nil
	}
	if len(s) < 6 || !digits(s[:6]) || (len(s) > 6 && (len(s) == 7 || s[6] != '.' || !digits(s[7:]))) {
		return fmt.Errorf("time %q is not hhmmss.sss", s)
	}
	h, m, sec := atoi2(s[0:2]), atoi2(s[2:4]), atoi2(s[4:6])
	if h > 23 || m > 59 || sec > 60 {
		return fmt.Errorf("time %q is out of range", s)
	}
	out["time"] = s[0:2] + ":" + s[2:4] + ":" + s[4:]
	return nil
}

// nmeaDate decodes ddmmyy into "date" as "yyyy-mm-dd", and with "time"
// into "datetime" (RFC 3339, UTC). Years 80-99 are 19xx, 00-79 20xx.
func nmeaDate(s string, out map[string]any) error {
	if s == "" {
		return nil
	}
	if len(s) != 6 || !digits(s) {
		return fmt.Errorf("date %q is not ddmmyy", s)
	}
	d, m, y := atoi2(s[0:2]), atoi2(s[2:4]), atoi2(s[4:6])
	if d < 1 || d > 31 || m < 1 || m > 12 {
		return fmt.Errorf("date %q is out of range", s)
	}
	year := 2000 + y
	if y >= 80 {
		year = 1900 + y
	}
	date := fmt.Sprintf("%04d-%02d-%02d", year, m, d)
	out["date"] = date
	if t, ok := out["time"].(string); ok {
		out["datetime"] = date + "T" + t + "Z"
	}
	return nil
}

// nmeaPosition decodes lat,N|S,lon,E|W (ddmm.mmmm / dddmm.mmmm) into
// signed decimal degrees "lat" and "lon". Empty fields (no fix) give none.
func nmeaPosition(p []string, out map[string]any) error {
	if p[0] == "" && p[2] == "" {
		return nil
	}
	lat, err := nmeaDegrees(p[0], p[1], 2, "N", "S", 90)
	if err != nil {
		return fmt.Errorf("latitude: %w", err)
	}
	lon, err := nmeaDegrees(p[2], p[3], 3, "E", "W", 180)
	if err != nil {
		return fmt.Errorf("longitude: %w", err)
	}
	out["lat"], out["lon"] = lat, lon
	return nil
}

// nmeaDegrees decodes a ddmm.mmmm value with degDigits degree digits.
func nmeaDegrees(v, hemi string, degDigits int, pos, neg string, limit float64) (float64, error) {
	intPart, frac, _ := strings.Cut(v, ".")
	if len(intPart) != degDigits+2 || !digits(intPart) || !digits(frac) {
		return 0, fmt.Errorf("%q is not %sdd.mmmm", v, strings.Repeat("d", degDigits))
	}
	deg, _ := strconv.Atoi(intPart[:degDigits])
	minutes, err := strconv.ParseFloat(v[degDigits:], 64)
	if err != nil || minutes >= 60 {
		return 0, fmt.Errorf("%q has minutes out of range", v)
	}
	x := float64(deg) + minutes/60
	if x > limit {
		return 0, fmt.Errorf("%q is beyond %v degrees", v, limit)
	}
	switch hemi {
	case pos:
	case neg:
		x = -x
	default:
		return 0, fmt.Errorf("hemisphere %q is not %s or %s", hemi, pos, neg)
	}
	return x, nil
}

// optInt decodes an optional decimal integer in [lo, hi]; empty gives -1.
func optInt(s, what string, lo, hi int) (int, error) {
	if s == "" {
		return -1, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || !digits(s) || n < lo || n > hi {
		return 0, fmt.Errorf("%s %q is not an integer between %d and %d", what, s, lo, hi)
	}
	return n, nil
}

// optFloat decodes an optional plain decimal number into out[key] (as an
// int when integer is set).
func optFloat(s, what string, out map[string]any, key string, integer bool) error {
	if s == "" {
		return nil
	}
	if integer {
		n, err := optInt(s, what, 0, 999)
		if err != nil {
			return err
		}
		out[key] = n
		return nil
	}
	var v float64
	if err := parseNumber(s, what, &v); err != nil {
		return err
	}
	out[key] = v
	return nil
}

// parseNumber decodes a plain decimal number: an optional minus sign,
// digits and at most one dot (no exponent, no inf or nan).
func parseNumber(s, what string, v *float64) error {
	t := strings.TrimPrefix(s, "-")
	i, f, _ := strings.Cut(t, ".")
	if t == "" || t == "." || len(s) > 32 || !digits(i) || !digits(f) {
		return fmt.Errorf("%s %q is not a decimal number", what, s)
	}
	x, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("%s %q is not a decimal number", what, s)
	}
	*v = x
	return nil
}

// digits reports whether s holds only ASCII digits (true for "").
func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// atoi2 decodes two ASCII digits already checked by digits.
func atoi2(s string) int { return int(s[0]-'0')*10 + int(s[1]-'0') }
