package modbus

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fieldgate/fieldgate/bus"
)

// goldenCase is testdata/modbus/<case>/config.yaml: a slave's memory and
// the points to decode from it.
type goldenCase struct {
	Registers struct {
		Holding  []goldenRegs `yaml:"holding"`
		Input    []goldenRegs `yaml:"input"`
		Coils    []goldenBits `yaml:"coils"`
		Discrete []goldenBits `yaml:"discrete"`
	} `yaml:"registers"`
	Points []Point `yaml:"points"`
}

type goldenRegs struct {
	Address uint16 `yaml:"address"`
	Hex     string `yaml:"hex"`
}

type goldenBits struct {
	Address uint16 `yaml:"address"`
	Values  []bool `yaml:"values"`
}

// TestGolden walks testdata/modbus at the repository root: each case's
// points are read from a real Modbus TCP server holding its registers, and
// the decoded values must equal expected.json (null: quality bad).
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob("../../testdata/modbus/*/config.yaml")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, file := range dirs {
		dir := filepath.Dir(file)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var gc goldenCase
			dec := yaml.NewDecoder(bytes.NewReader(data))
			dec.KnownFields(true)
			if err := dec.Decode(&gc); err != nil {
				t.Fatalf("config.yaml: %v", err)
			}
			var expected map[string]json.RawMessage
			data, err = os.ReadFile(filepath.Join(dir, "expected.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(data, &expected); err != nil {
				t.Fatalf("expected.json: %v", err)
			}

			bk := newBank()
			for _, r := range gc.Registers.Holding {
				raw, err := hex.DecodeString(r.Hex)
				if err != nil {
					t.Fatal(err)
				}
				bk.setBytes(bk.holding, r.Address, raw)
			}
			for _, r := range gc.Registers.Input {
				raw, _ := hex.DecodeString(r.Hex)
				bk.setBytes(bk.input, r.Address, raw)
			}
			for _, r := range gc.Registers.Coils {
				for i, v := range r.Values {
					bk.coils[r.Address+uint16(i)] = v
				}
			}
			for _, r := range gc.Registers.Discrete {
				for i, v := range r.Values {
					bk.discrete[r.Address+uint16(i)] = v
				}
			}
			slave := startTCPSlave(t, bk, "")
			cfg := DefaultConfig()
			dev := tcpDevice("golden", slave.addr, gc.Points...)
			dev.PollGroups[0].Interval = time.Hour // only ReadNow reads
			cfg.Devices = []Device{dev}
			s := newService(t, cfg, bus.NewMemory(nil), Options{})
			runService(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			snap, err := s.ReadNow(ctx, "golden")
			if err != nil {
				t.Fatal(err)
			}
			if len(snap.Readings) != len(expected) {
				t.Errorf("%d readings, %d expected", len(snap.Readings), len(expected))
			}
			for _, r := range snap.Readings {
				want, ok := expected[r.Point]
				if !ok {
					t.Errorf("%s: not in expected.json", r.Point)
					continue
				}
				got := r.Value.AppendJSON(nil)
				if !sameJSON(got, want) {
					t.Errorf("%s = %s (%s %s), want %s", r.Point, got, r.Quality, r.Err, want)
				}
				if string(want) == "null" && r.Quality != QualityBad {
					t.Errorf("%s: quality %s, want bad", r.Point, r.Quality)
				}
			}
		})
	}
}

// sameJSON compares two JSON scalars; integers exactly, other numbers to
// 1e-12 relative.
func sameJSON(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	fa, errA := strconv.ParseFloat(string(a), 64)
	fb, errB := strconv.ParseFloat(string(b), 64)
	if errA != nil || errB != nil {
		return false
	}
	if _, err := strconv.ParseInt(string(b), 10, 64); err == nil {
		return false // an integer must match exactly
	}
	if _, err := strconv.ParseUint(string(b), 10, 64); err == nil {
		return false
	}
	return math.Abs(fa-fb) <= 1e-12*math.Max(math.Abs(fa), math.Abs(fb))
}
