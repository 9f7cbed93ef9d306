package serial

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
)

// withChecksum frames an NMEA body as "$body*HH".
func withChecksum(body string) string {
	var sum byte
	for i := 0; i < len(body); i++ {
		sum ^= body[i]
	}
	return fmt.Sprintf("$%s*%02X", body, sum)
}

func TestNMEAParse(t *testing.T) {
	all := nmeaParser{sentences: nmeaSentences}
	tests := []struct {
		name string
		line string
		want map[string]any
	}{
		{
			name: "GGA textbook example",
			line: "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47",
			want: map[string]any{
				"sentence": "GGA", "talker": "GP", "time": "12:35:19",
				"lat": 48 + 7.038/60, "lon": 11 + 31.0/60,
				"fix": true, "fix_quality": 1, "satellites": 8, "hdop": 0.9,
				"altitude": 545.4, "geoid_separation": 46.9,
			},
		},
		{
			name: "RMC textbook example",
			line: "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A",
			want: map[string]any{
				"sentence": "RMC", "talker": "GP", "time": "12:35:19",
				"date": "1994-03-23", "datetime": "1994-03-23T12:35:19Z",
				"fix": true, "lat": 48 + 7.038/60, "lon": 11 + 31.0/60,
				"speed_knots": 22.4, "speed_kmh": 22.4 * knotsToKmh, "course": 84.4,
				"magnetic_variation": -3.1,
			},
		},
		{
			name: "RMC NMEA 4.1 GNSS, south-west, mode and nav status",
			line: withChecksum("GNRMC,001031.00,A,3351.6523,S,15112.4567,W,0.004,,010124,,,D,V"),
			want: map[string]any{
				"sentence": "RMC", "talker": "GN", "time": "00:10:31.00",
				"date": "2024-01-01", "datetime": "2024-01-01T00:10:31.00Z",
				"fix": true, "lat": -(33 + 51.6523/60), "lon": -(151 + 12.4567/60),
				"speed_knots": 0.004, "speed_kmh": 0.004 * knotsToKmh, "mode": "D",
			},
		},
		{
			name: "GGA without fix",
			line: withChecksum("GPGGA,000001.00,,,,,0,00,99.99,,,,,,"),
			want: map[string]any{
				"sentence": "GGA", "talker": "GP", "time": "00:00:01.00",
				"fix": false, "fix_quality": 0, "satellites": 0, "hdop": 99.99,
			},
		},
		{
			name: "RMC void, lower-case checksum",
			line: lowerChecksum(withChecksum("GPRMC,,V,,,,,,,,,,N")),
			want: map[string]any{"sentence": "RMC", "talker": "GP", "fix": false, "mode": "N"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := all.parse(tt.line)
			if err != nil {
				t.Fatalf("parse(%q): %v", tt.line, err)
			}
			if !equalFields(got, tt.want) {
				t.Errorf("parse(%q)\n got %v\nwant %v", tt.line, got, tt.want)
			}
		})
	}
}

// lowerChecksum writes a framed sentence's checksum in lower case.
func lowerChecksum(line string) string {
	return line[:len(line)-2] + strings.ToLower(line[len(line)-2:])
}

// equalFields compares field maps, floats to 1e-9.
func equalFields(got, want map[string]any) bool {
	if len(got) != len(want) {
		return false
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			return false
		}
		if wf, ok := w.(float64); ok {
			gf, ok := g.(float64)
			if !ok || math.Abs(gf-wf) > 1e-9 {
				return false
			}
			continue
		}
		if !reflect.DeepEqual(g, w) {
			return false
		}
	}
	return true
}

func TestNMEARefused(t *testing.T) {
	gga := "GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
	tests := []struct {
		name string
		line string
		want error // errChecksum, errIgnored, or nil for "some parse error"
		msg  string
	}{
		{"no dollar", "GPGGA,1*00", nil, "does not start with $"},
		{"no checksum", "$" + gga, errChecksum, "no checksum"},
		{"wrong checksum", "$" + gga + "*48", errChecksum, "checksum is 48, computed 47"},
		{"checksum not hex", "$" + gga + "*4G", errChecksum, "not 2 hex digits"},
		{"checksum too long", "$" + gga + "*047", errChecksum, "not 2 hex digits"},
		{"checksum sign", "$" + gga + "*+7", errChecksum, "not 2 hex digits"},
		{"one flipped bit", "$" + strings.Replace(gga, "545.4", "545.5", 1) + "*47", errChecksum, "checksum"},
		{"other sentence", withChecksum("GPGSV,3,1,11,03,03,111,00"), errIgnored, "ignored"},
		{"filtered sentence", withChecksum("GPVTG,054.7,T,034.4,M,005.5,N,010.2,K"), errIgnored, ""},
		{"short address", withChecksum("GGA,1"), nil, "address"},
		{"GGA too short", withChecksum("GPGGA,123519,4807.038,N"), nil, "needs at least 12"},
		{"RMC too short", withChecksum("GPRMC,123519,A"), nil, "needs at least 10"},
		{"bad time", withChecksum("GPRMC,25xx19,A,,,,,,,,,"), nil, "time"},
		{"hour 24", withChecksum("GPRMC,245919,A,,,,,,,,,"), nil, "out of range"},
		{"time trailing dot", withChecksum("GPRMC,235919.,A,,,,,,,,,"), nil, "time"},
		{"bad status", withChecksum("GPRMC,123519,X,,,,,,,,,"), nil, "status"},
		{"bad hemisphere", withChecksum("GPRMC,123519,A,4807.038,Q,01131.000,E,,,,,"), nil, "hemisphere"},
		{"latitude beyond 90", withChecksum("GPRMC,123519,A,9107.038,N,01131.000,E,,,,,"), nil, "beyond 90"},
		{"minutes 60", withChecksum("GPRMC,123519,A,4860.000,N,01131.000,E,,,,,"), nil, "minutes"},
		{"latitude digits", withChecksum("GPRMC,123519,A,48x7.038,N,01131.000,E,,,,,"), nil, "latitude"},
		{"lat without lon", withChecksum("GPRMC,123519,A,4807.038,N,,,,,,,"), nil, "longitude"},
		{"speed exponent", withChecksum("GPRMC,123519,A,,,,,1e3,,,,"), nil, "speed"},
		{"speed nan", withChecksum("GPRMC,123519,A,,,,,NaN,,,,"), nil, "speed"},
		{"bad date", withChecksum("GPRMC,123519,A,,,,,,,320394,,"), nil, "date"},
		{"bad variation dir", withChecksum("GPRMC,123519,A,,,,,,,230394,3.1,N"), nil, "variation"},
		{"bad mode", withChecksum("GPRMC,123519,A,,,,,,,230394,,,DD"), nil, "mode"},
		{"fix quality 10", withChecksum("GPGGA,123519,,,,,10,08,0.9,545.4,M,46.9,M,,"), nil, "fix quality"},
		{"negative satellites", withChecksum("GPGGA,123519,,,,,1,-8,0.9,545.4,M,46.9,M,,"), nil, "satellites"},
	}
	p := nmeaParser{sentences: nmeaSentences}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.parse(tt.line)
			if err == nil {
				t.Fatalf("parse(%q) = %v, want an error", tt.line, got)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("parse(%q) error %v, want %v", tt.line, err, tt.want)
			}
			if tt.want == nil && (errors.Is(err, errChecksum) || errors.Is(err, errIgnored)) {
				t.Errorf("parse(%q) error %v, want a parse error", tt.line, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("parse(%q) error %q, want it to mention %q", tt.line, err, tt.msg)
			}
		})
	}
}

func TestNMEASentenceFilter(t *testing.T) {
	p := nmeaParser{sentences: []string{"RMC"}}
	gga := "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
	if _, err := p.parse(gga); !errors.Is(err, errIgnored) {
		t.Errorf("GGA with filter RMC: err %v, want errIgnored", err)
	}
	// The checksum is verified before the filter applies.
	if _, err := p.parse(gga[:len(gga)-2] + "00"); !errors.Is(err, errChecksum) {
		t.Errorf("GGA with bad checksum: err %v, want errChecksum", err)
	}
}
