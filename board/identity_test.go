package board

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// netIface returns the sysfs files of one network interface; physical ones
// have a device link (here a directory).
func netIface(name, mac string, physical bool) map[string]string {
	d := "sys/class/net/" + name + "/"
	m := map[string]string{d + "address": mac + "\n"}
	if physical {
		m[d+"device/"] = ""
	}
	return m
}

func TestIdentity(t *testing.T) {
	tests := []struct {
		name   string
		files  map[string]string
		want   Identity
		wantID string
	}{
		{
			name: "raspberry pi 4",
			files: merge(map[string]string{
				"proc/device-tree/model":         "Raspberry Pi 4 Model B Rev 1.4\x00",
				"proc/device-tree/serial-number": "10000000d3adb33f\x00",
				"proc/cpuinfo":                   "processor\t: 0\nSerial\t\t: 10000000d3adb33f\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n",
			}, netIface("eth0", "DC:A6:32:01:02:03", true), netIface("wlan0", "dc:a6:32:01:02:04", true),
				netIface("lo", "00:00:00:00:00:00", false), netIface("docker0", "02:42:ac:11:00:01", false)),
			want: Identity{
				Model:  "Raspberry Pi 4 Model B Rev 1.4",
				Serial: "10000000d3adb33f",
				Interfaces: []Interface{
					{Name: "eth0", MAC: "dc:a6:32:01:02:03"},
					{Name: "wlan0", MAC: "dc:a6:32:01:02:04"},
				},
			},
			wantID: "fg-10000000d3adb33f",
		},
		{
			name: "serial only in cpuinfo, model via /sys/firmware",
			files: map[string]string{
				"sys/firmware/devicetree/base/model": "Raspberry Pi 3 Model B Plus Rev 1.3\x00",
				"proc/cpuinfo":                       "Hardware\t: BCM2835\nSerial\t\t: 00000000abcdef01\n",
			},
			want:   Identity{Model: "Raspberry Pi 3 Model B Plus Rev 1.3", Serial: "00000000abcdef01"},
			wantID: "fg-00000000abcdef01",
		},
		{
			name: "pc with DMI placeholders",
			files: merge(map[string]string{
				"sys/class/dmi/id/sys_vendor":     "QEMU\n",
				"sys/class/dmi/id/product_name":   "Standard PC (Q35 + ICH9, 2009)\n",
				"sys/class/dmi/id/product_serial": "To Be Filled By O.E.M.\n",
				"proc/cpuinfo":                    "processor\t: 0\nSerial\t\t: 0000000000000000\n",
			}, netIface("enp0s3", "52:54:00:12:34:56", true)),
			want: Identity{
				Model:      "QEMU Standard PC (Q35 + ICH9, 2009)",
				Interfaces: []Interface{{Name: "enp0s3", MAC: "52:54:00:12:34:56"}},
			},
			wantID: "fg-525400123456",
		},
		{name: "nothing known", files: nil, want: Identity{}, wantID: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(Options{Config: DefaultConfig(), Root: fakeRoot(t, tt.files)})
			if err != nil {
				t.Fatal(err)
			}
			got := b.Identity()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Identity() = %+v\nwant %+v", got, tt.want)
			}
			if id := got.DefaultID(); id != tt.wantID {
				t.Errorf("DefaultID() = %q, want %q", id, tt.wantID)
			}
		})
	}
}

// validID is the gateway config's rule for gateway.id.
var validID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func TestDefaultIDIsAValidGatewayID(t *testing.T) {
	for _, serial := range []string{"a b/c\x01ü", strings.Repeat("x", 200), "..."} {
		id := Identity{Serial: serial}.DefaultID()
		if !validID.MatchString(id) {
			t.Errorf("DefaultID for serial %q = %q: not a valid gateway id", serial, id)
		}
	}
	if id := (Identity{Serial: "/// "}).DefaultID(); id != "" {
		t.Errorf("DefaultID of a serial without usable characters = %q, want \"\"", id)
	}
}

func TestIdentityOfThisMachine(t *testing.T) {
	b, err := New(Options{Config: DefaultConfig()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("this machine: %+v, default id %q", b.Identity(), b.Identity().DefaultID())
}

func TestHealth(t *testing.T) {
	root := fakeRoot(t, map[string]string{
		"sys/class/thermal/thermal_zone0/type":  "gpu-thermal\n",
		"sys/class/thermal/thermal_zone0/temp":  "41000\n",
		"sys/class/thermal/thermal_zone1/type":  "cpu-thermal\n",
		"sys/class/thermal/thermal_zone1/temp":  "52583\n",
		"sys/class/thermal/thermal_zone10/type": "broken\n",
		"sys/class/thermal/thermal_zone10/temp": "garbage\n",
		"sys/class/thermal/thermal_zone2/type":  "ambient\n",
		"sys/class/thermal/thermal_zone2/temp":  "-5000\n",
		"proc/meminfo":                          "MemTotal:        3884376 kB\nMemFree:          123456 kB\nMemAvailable:    3012345 kB\nHugePages_Total:       0\n",
		"proc/self/status":                      "Name:\tfieldgate\nVmRSS:\t   18432 kB\n",
	})
	b, err := New(Options{Config: DefaultConfig(), Root: root, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	h, err := b.Health()
	if err != nil {
		t.Fatal(err)
	}
	wantT := []Temperature{
		{Zone: "thermal_zone0", Type: "gpu-thermal", Celsius: 41},
		{Zone: "thermal_zone1", Type: "cpu-thermal", Celsius: 52.583},
		{Zone: "thermal_zone2", Type: "ambient", Celsius: -5},
	}
	if !reflect.DeepEqual(h.Temperatures, wantT) {
		t.Errorf("Temperatures = %+v, want %+v", h.Temperatures, wantT)
	}
	if !h.HasCPUTemp || math.Abs(h.CPUCelsius-52.583) > 1e-9 {
		t.Errorf("CPU temperature = %v (%v), want 52.583", h.CPUCelsius, h.HasCPUTemp)
	}
	if h.MemTotal != 3884376*1024 || h.MemAvailable != 3012345*1024 || h.ProcessRSS != 18432*1024 {
		t.Errorf("memory = %d/%d rss %d", h.MemAvailable, h.MemTotal, h.ProcessRSS)
	}
	if h.DataTotal == 0 || h.DataFree > h.DataTotal {
		t.Errorf("data partition free %d of %d", h.DataFree, h.DataTotal)
	}
	if h.Reserve != 64<<20 {
		t.Errorf("Reserve = %d", h.Reserve)
	}
}

func TestHealthOfThisMachine(t *testing.T) {
	b, err := New(Options{Config: DefaultConfig(), DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	h, err := b.Health()
	if err != nil {
		t.Fatal(err)
	}
	if h.MemTotal == 0 || h.ProcessRSS == 0 || h.DataTotal == 0 {
		t.Errorf("real /proc and statfs not read: %+v", h)
	}
	t.Logf("this machine: %+v", h)
}

func TestReserveReached(t *testing.T) {
	dir := t.TempDir()
	d, err := statDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	freeMB := int(d.free >> 20)
	tests := []struct {
		name      string
		reserveMB int
		dataDir   string
		want      bool
	}{
		{"no reserve", 0, dir, false},
		{"no data dir", 1, "", false},
		{"plenty of room", 1, dir, freeMB < 1},
		{"below the reserve", freeMB + 1024, dir, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.ReserveMB = tt.reserveMB
			b, err := New(Options{Config: cfg, Root: fakeRoot(t, nil), DataDir: tt.dataDir, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if got := b.ReserveReached(); got != tt.want {
				t.Errorf("ReserveReached() = %v, want %v (free %d MiB)", got, tt.want, freeMB)
			}
			if got := b.ReserveReached(); got != tt.want { // cached
				t.Errorf("second ReserveReached() = %v, want %v", got, tt.want)
			}
			h, err := b.Health()
			if err != nil {
				t.Fatal(err)
			}
			if h.ReserveReached != tt.want {
				t.Errorf("Health().ReserveReached = %v, want %v", h.ReserveReached, tt.want)
			}
		})
	}
}

func TestReserveReachedWhenPartitionGone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := New(Options{Config: DefaultConfig(), Root: fakeRoot(t, nil), DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if !b.ReserveReached() {
		t.Error("an unreadable data partition does not count as full")
	}
	if _, err := b.Health(); err == nil {
		t.Error("Health() of a missing data partition gave no error")
	}
}

func TestNewRefusesMissingDataDir(t *testing.T) {
	_, err := New(Options{Config: DefaultConfig(), DataDir: filepath.Join(t.TempDir(), "absent")})
	if err == nil || !strings.Contains(err.Error(), "absent") {
		t.Fatalf("New = %v, want an error naming the data dir", err)
	}
}

func TestParseMeminfo(t *testing.T) {
	got := parseMeminfo([]byte("MemTotal: 10 kB\nNoUnit: 7\nBad: x kB\nWeird: 1 MB\nnocolon 5\nHuge: 18446744073709551615 kB\n"))
	want := map[string]uint64{"MemTotal": 10240, "NoUnit": 7}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseMeminfo = %v, want %v", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	c := Config{
		Watchdog:      Watchdog{Device: "dev/watchdog", Timeout: time.Millisecond},
		LEDs:          LEDs{Heartbeat: "../../etc", Uplink: "ok", Fault: ".."},
		ReserveMB:     -1,
		CheckInterval: 0,
		CPUs:          "4",
	}
	err := c.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	want := []string{
		`watchdog.device: must be an absolute path, got "dev/watchdog"`,
		"watchdog.timeout: must be between 1s and 1h0m0s, got 1ms",
		"reserve_mb: must be between 0 and 1048576, got -1",
		"check_interval: must be between 100ms and 1m0s, got 0s",
		`cpus: must be "adaptive" or "all", got "4"`,
		`leds.heartbeat: must be an LED name under /sys/class/leds, got "../../etc"`,
		`leds.fault: must be an LED name under /sys/class/leds, got ".."`,
	}
	if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestLiveness(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewLiveness(func() time.Time { return now })
	if err := l.Stale(time.Second); err != nil {
		t.Fatalf("empty: %v", err)
	}
	l.Beat("modbus")
	l.Beat("uplink")
	now = now.Add(2 * time.Second)
	l.Beat("uplink")
	err := l.Stale(time.Second)
	if err == nil || err.Error() != "no progress within 1s: modbus (2s ago)" {
		t.Fatalf("Stale = %v", err)
	}
	l.Forget("modbus")
	if err := l.Stale(time.Second); err != nil {
		t.Fatalf("after Forget: %v", err)
	}
}

func TestStatusLine(t *testing.T) {
	got := StatusLine{Outbox: 3, Fault: "data reserve reached"}.String()
	if want := "uplink unknown, outbox 3, devices 0/0 ok, fault: data reserve reached"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
