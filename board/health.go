package board

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Health is a snapshot of the board's condition.
type Health struct {
	// Temperatures are the thermal zones, sorted by zone name.
	Temperatures []Temperature `json:"temperatures"`
	// CPUCelsius is the CPU's temperature (the zone typed cpu/soc/package,
	// else the first zone); valid only when HasCPUTemp.
	CPUCelsius float64 `json:"cpu_celsius"`
	HasCPUTemp bool    `json:"has_cpu_temp"`
	// MemTotal and MemAvailable are the system's memory in bytes (from
	// /proc/meminfo); ProcessRSS is this process's resident set.
	MemTotal     uint64 `json:"mem_total"`
	MemAvailable uint64 `json:"mem_available"`
	ProcessRSS   uint64 `json:"process_rss"`
	// DataFree and DataTotal are the space available to the gateway and the
	// size of the data partition, in bytes (0 when no data dir is watched).
	DataFree  uint64 `json:"data_free"`
	DataTotal uint64 `json:"data_total"`
	// Reserve is the configured reserve in bytes; ReserveReached says the
	// free space is below it.
	Reserve        uint64 `json:"reserve"`
	ReserveReached bool   `json:"reserve_reached"`
}

// Temperature is one thermal zone.
type Temperature struct {
	Zone    string  `json:"zone"`
	Type    string  `json:"type"`
	Celsius float64 `json:"celsius"`
}

// Health reads the board's condition now. Parts that cannot be read (no
// thermal zones in a container) are left zero; only a failing statfs of the
// data partition is an error.
func (b *Board) Health() (Health, error) {
	var h Health
	h.Temperatures = readThermal(filepath.Join(b.root, "sys/class/thermal"))
	if t, ok := cpuTemperature(h.Temperatures); ok {
		h.CPUCelsius, h.HasCPUTemp = t, true
	}
	if data, err := os.ReadFile(filepath.Join(b.root, "proc/meminfo")); err == nil {
		m := parseMeminfo(data)
		h.MemTotal, h.MemAvailable = m["MemTotal"], m["MemAvailable"]
	}
	if data, err := os.ReadFile(filepath.Join(b.root, "proc/self/status")); err == nil {
		h.ProcessRSS = parseMeminfo(data)["VmRSS"]
	}
	h.Reserve = b.reserveBytes()
	if b.dataDir != "" {
		d, err := statDisk(b.dataDir)
		if err != nil {
			return h, fmt.Errorf("board: data partition: %w", err)
		}
		h.DataFree, h.DataTotal = d.free, d.total
		h.ReserveReached = h.Reserve > 0 && d.free < h.Reserve
	}
	return h, nil
}

// ReserveReached says whether the data partition's free space is below the
// configured reserve. It is cheap enough to ask before every append (one
// statfs per second at most): pass it as the outbox's Full hook. An
// unreadable partition counts as reached, so the outbox stops growing.
func (b *Board) ReserveReached() bool {
	reserve := b.reserveBytes()
	if b.dataDir == "" || reserve == 0 {
		return false
	}
	b.diskMu.Lock()
	defer b.diskMu.Unlock()
	if now := time.Now(); now.Sub(b.diskChecked) >= diskCacheFor {
		b.diskChecked = now
		d, err := statDisk(b.dataDir)
		reached := err != nil || d.free < reserve
		if was := b.reserveHit.Swap(reached); was != reached {
			if reached {
				b.log.Warn("data partition below its reserve: the outbox stops growing",
					"dir", b.dataDir, "free", d.free, "reserve", reserve, "error", err)
			} else {
				b.log.Info("data partition above its reserve again", "dir", b.dataDir, "free", d.free, "reserve", reserve)
			}
		}
	}
	return b.reserveHit.Load()
}

func (b *Board) reserveBytes() uint64 {
	if b.cfg.ReserveMB <= 0 {
		return 0
	}
	return uint64(b.cfg.ReserveMB) << 20
}

// disk is the result of a statfs.
type disk struct{ free, total uint64 }

// readThermal reads every thermal_zone*/temp (millidegrees Celsius).
func readThermal(dir string) []Temperature {
	zones, _ := filepath.Glob(filepath.Join(dir, "thermal_zone*"))
	var out []Temperature
	for _, z := range zones {
		milli, err := parseMilli(readAttr(filepath.Join(z, "temp")))
		if err != nil {
			continue
		}
		out = append(out, Temperature{
			Zone:    filepath.Base(z),
			Type:    readAttr(filepath.Join(z, "type")),
			Celsius: float64(milli) / 1000,
		})
	}
	sort.Slice(out, func(i, j int) bool { return zoneLess(out[i].Zone, out[j].Zone) })
	return out
}

// zoneLess orders thermal_zone2 before thermal_zone10.
func zoneLess(a, b string) bool {
	na, ea := strconv.Atoi(strings.TrimPrefix(a, "thermal_zone"))
	nb, eb := strconv.Atoi(strings.TrimPrefix(b, "thermal_zone"))
	if ea == nil && eb == nil {
		return na < nb
	}
	return a < b
}

// parseMilli parses a thermal zone's temp: an integer in millidegrees
// within what a sensor can report (-273.15 °C … 1000 °C).
func parseMilli(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("temperature %q: %w", s, err)
	}
	if v < -273150 || v > 1_000_000 {
		return 0, fmt.Errorf("temperature %q: out of range", s)
	}
	return v, nil
}

// cpuTemperature picks the CPU's zone.
func cpuTemperature(ts []Temperature) (float64, bool) {
	for _, t := range ts {
		typ := strings.ToLower(t.Type)
		for _, k := range []string{"cpu", "soc", "x86_pkg_temp", "package"} {
			if strings.Contains(typ, k) {
				return t.Celsius, true
			}
		}
	}
	if len(ts) > 0 {
		return ts[0].Celsius, true
	}
	return 0, false
}

// parseMeminfo parses "Key:   value kB" lines (/proc/meminfo,
// /proc/self/status) into bytes. Lines that do not parse are skipped;
// values without a unit are taken as they are.
func parseMeminfo(data []byte) map[string]uint64 {
	out := make(map[string]uint64)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 || len(fields) > 2 {
			continue
		}
		v, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			continue
		}
		if len(fields) == 2 {
			if fields[1] != "kB" || v > (1<<64-1)/1024 {
				continue
			}
			v *= 1024
		}
		out[strings.TrimSpace(key)] = v
	}
	return out
}
