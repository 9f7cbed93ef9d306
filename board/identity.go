package board

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Identity is what the board says about itself.
type Identity struct {
	// Model is the device-tree model ("Raspberry Pi 4 Model B Rev 1.4") or,
	// on PCs, the DMI vendor and product name; "" when unknown.
	Model string `json:"model"`
	// Serial is the board's serial number (device tree, the Raspberry Pi's
	// /proc/cpuinfo "Serial", or DMI); "" when unknown or unreadable.
	Serial string `json:"serial"`
	// Interfaces are the physical network interfaces and their MAC
	// addresses, sorted by name.
	Interfaces []Interface `json:"interfaces"`
}

// Interface is one physical network interface.
type Interface struct {
	Name string `json:"name"`
	MAC  string `json:"mac"`
}

// DefaultID is the gateway id used when the config sets none: "fg-" and the
// serial number, else "fg-" and the first MAC address without colons, else
// "". It only has letters, digits, '-', '_' and '.', and at most 64 bytes.
func (id Identity) DefaultID() string {
	var s string
	switch {
	case id.Serial != "":
		s = id.Serial
	case len(id.Interfaces) > 0:
		s = strings.ReplaceAll(id.Interfaces[0].MAC, ":", "")
	default:
		return ""
	}
	var b strings.Builder
	b.WriteString("fg-")
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		}
		if b.Len() == 64 {
			break
		}
	}
	if b.Len() == len("fg-") {
		return ""
	}
	return b.String()
}

// readIdentity reads the identity below root. Missing files are not errors:
// each field is left empty instead.
func readIdentity(root string) Identity {
	p := func(s string) string { return filepath.Join(root, s) }
	id := Identity{
		Model: firstOf(
			func() string { return readAttr(p("proc/device-tree/model")) },
			func() string { return readAttr(p("sys/firmware/devicetree/base/model")) },
			func() string {
				return strings.TrimSpace(readAttr(p("sys/class/dmi/id/sys_vendor")) + " " + readAttr(p("sys/class/dmi/id/product_name")))
			},
		),
		Serial: firstOf(
			func() string { return readAttr(p("proc/device-tree/serial-number")) },
			func() string { return readAttr(p("sys/firmware/devicetree/base/serial-number")) },
			func() string { b, _ := os.ReadFile(p("proc/cpuinfo")); return cpuinfoSerial(b) },
			func() string { return readAttr(p("sys/class/dmi/id/product_serial")) },
		),
	}
	netDir := p("sys/class/net")
	entries, _ := os.ReadDir(netDir)
	for _, e := range entries {
		name := e.Name()
		// Virtual interfaces (lo, bridges, veth, tun) have no device link.
		if _, err := os.Stat(filepath.Join(netDir, name, "device")); err != nil {
			continue
		}
		mac := readAttr(filepath.Join(netDir, name, "address"))
		hw, err := net.ParseMAC(mac)
		if err != nil || bytes.Equal(hw, make([]byte, len(hw))) {
			continue
		}
		id.Interfaces = append(id.Interfaces, Interface{Name: name, MAC: hw.String()})
	}
	sort.Slice(id.Interfaces, func(i, j int) bool { return id.Interfaces[i].Name < id.Interfaces[j].Name })
	return id
}

// firstOf returns the first non-empty result.
func firstOf(fs ...func() string) string {
	for _, f := range fs {
		if s := f(); s != "" {
			return s
		}
	}
	return ""
}

// readAttr reads a small sysfs/procfs/device-tree attribute: device-tree
// strings end in NUL, sysfs ones in a newline; both are trimmed, and
// placeholder values vendors leave in DMI are treated as unknown.
func readAttr(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > 256 {
		b = b[:256]
	}
	s := strings.TrimSpace(strings.Trim(string(b), "\x00"))
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	switch strings.ToLower(s) {
	case "", "none", "default string", "to be filled by o.e.m.", "system serial number", "0123456789":
		return ""
	}
	return s
}

// cpuinfoSerial returns the "Serial" line of /proc/cpuinfo (Raspberry Pi
// and some other ARM boards), or "" when it is absent or all zeros.
func cpuinfoSerial(cpuinfo []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(key) != "Serial" {
			continue
		}
		value = strings.TrimSpace(value)
		if strings.Trim(value, "0") == "" {
			return ""
		}
		return value
	}
	return ""
}
