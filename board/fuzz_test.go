package board

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseMeminfo feeds arbitrary bytes as /proc/meminfo: no panic, and
// every value with a kB unit is a multiple of 1024.
func FuzzParseMeminfo(f *testing.F) {
	f.Add([]byte("MemTotal:        3884376 kB\nMemAvailable:    3012345 kB\n"))
	f.Add([]byte("HugePages_Total:       0\nVmRSS:\t 1 kB"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for key, v := range parseMeminfo(data) {
			if strings.ContainsAny(key, "\n") {
				t.Fatalf("key %q spans lines", key)
			}
			_ = v
		}
	})
}

// FuzzIdentity writes arbitrary bytes as the device-tree model, serial,
// cpuinfo and a MAC address: reading them never panics, the model and
// serial hold no control characters, and DefaultID is "" or a valid
// gateway id.
func FuzzIdentity(f *testing.F) {
	f.Add([]byte("Raspberry Pi 4 Model B Rev 1.4\x00"), []byte("10000000d3adb33f\x00"), []byte("Serial\t\t: 10000000d3adb33f\n"), []byte("dc:a6:32:01:02:03\n"))
	f.Add([]byte(""), []byte("\x00\x00"), []byte("Serial:"), []byte("zz"))
	root := f.TempDir()
	f.Fuzz(func(t *testing.T, model, serial, cpuinfo, mac []byte) {
		files := map[string][]byte{
			"proc/device-tree/model":         model,
			"proc/device-tree/serial-number": serial,
			"proc/cpuinfo":                   cpuinfo,
			"sys/class/net/eth0/address":     mac,
		}
		for name, data := range files {
			p := filepath.Join(root, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.MkdirAll(filepath.Join(root, "sys/class/net/eth0/device"), 0o755); err != nil {
			t.Fatal(err)
		}
		id := readIdentity(root)
		for _, s := range []string{id.Model} {
			if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				t.Fatalf("control character in %q", s)
			}
		}
		if got := id.DefaultID(); got != "" && !validID.MatchString(got) {
			t.Fatalf("DefaultID %q is not a valid gateway id", got)
		}
	})
}
