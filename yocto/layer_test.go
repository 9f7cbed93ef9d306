package yocto

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// seriesGo is the Go version each Yocto release series ships.
var seriesGo = map[string]string{
	"scarthgap":  "1.22",
	"walnascar":  "1.24",
	"whinlatter": "1.25",
	"wrynose":    "1.26",
}

const (
	layer   = "meta-fieldgate"
	recipe  = layer + "/recipes-fieldgate/fieldgate/fieldgate.bb"
	release = layer + "/recipes-fieldgate/fieldgate/fieldgate-release.inc"
	image   = layer + "/recipes-fieldgate/images/fieldgate-image.bb"
	distro  = layer + "/conf/distro/fieldgate-appliance.conf"
)

// bbVars reads the simple assignments (NAME = "...", NAME += "...", with
// backslash continuations) of a BitBake file; later ones append.
func bbVars(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	assign := regexp.MustCompile(`^([A-Za-z0-9_:${}\-\.]+)\s*(\?\?=|\?=|:=|\+=|\.=|=)\s*"(.*)"\s*$`)
	vars := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		m := assign.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		if m[2] == "+=" || m[2] == ".=" {
			vars[m[1]] += " " + m[3]
		} else {
			vars[m[1]] = m[3]
		}
	}
	return vars
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// goMod returns the module path and go version of ../go.mod.
func goMod(t *testing.T) (modPath, goVersion string) {
	t.Helper()
	for _, line := range strings.Split(readFile(t, "../go.mod"), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "module" {
			modPath = f[1]
		}
		if len(f) == 2 && f[0] == "go" {
			goVersion = f[1]
		}
	}
	return modPath, goVersion
}

// majorMinor turns "1.26.0" into 1026.
func majorMinor(t *testing.T, v string) int {
	var major, minor int
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		t.Fatalf("bad Go version %q", v)
	}
	for _, c := range parts[0] {
		major = major*10 + int(c-'0')
	}
	for _, c := range parts[1] {
		minor = minor*10 + int(c-'0')
	}
	return major*1000 + minor
}

func TestLayerCompatMatchesGoMod(t *testing.T) {
	v := bbVars(t, layer+"/conf/layer.conf")
	if !strings.Contains(v["BBFILE_COLLECTIONS"], "fieldgate") {
		t.Errorf("BBFILE_COLLECTIONS lacks fieldgate: %q", v["BBFILE_COLLECTIONS"])
	}
	_, goVersion := goMod(t)
	series := strings.Fields(v["LAYERSERIES_COMPAT_fieldgate"])
	if len(series) == 0 {
		t.Fatal("LAYERSERIES_COMPAT_fieldgate is empty")
	}
	for _, s := range series {
		have, ok := seriesGo[s]
		if !ok {
			t.Errorf("LAYERSERIES_COMPAT_fieldgate: unknown series %q", s)
			continue
		}
		if majorMinor(t, have) < majorMinor(t, goVersion) {
			t.Errorf("series %s ships Go %s, go.mod needs go %s", s, have, goVersion)
		}
	}
}

func TestRecipe(t *testing.T) {
	v := bbVars(t, recipe)
	for name, value := range bbVars(t, release) {
		v[name] = value
	}
	text := readFile(t, recipe)
	modPath, _ := goMod(t)
	want := map[string]string{
		"GO_IMPORT":                 modPath,
		"GO_INSTALL":                "${GO_IMPORT}/cmd/fieldgate",
		"CGO_ENABLED":               "0",
		"SYSTEMD_SERVICE:${PN}":     "fieldgate.service",
		"CONFFILES:${PN}":           "${sysconfdir}/fieldgate/fieldgate.yaml",
		"SYSTEMD_AUTO_ENABLE:${PN}": "enable",
	}
	for name, value := range want {
		if got := strings.TrimSpace(v[name]); got != value {
			t.Errorf("%s = %q, want %q", name, got, value)
		}
	}
	for _, name := range []string{"SUMMARY", "LICENSE", "SRC_URI", "FIELDGATE_SRC_URI", "SRCREV", "PV", "USERADD_PACKAGES"} {
		if strings.TrimSpace(v[name]) == "" {
			t.Errorf("%s missing", name)
		}
	}
	// Issue 13: a pre-stripped binary fails QA (already-stripped); Go PIE
	// cannot link on 32-bit ARM without cgo.
	for _, flag := range []string{"-s ", "-w "} {
		if strings.Contains(" "+v["GO_EXTRA_LDFLAGS"]+" ", " "+flag) {
			t.Errorf("GO_EXTRA_LDFLAGS has %q: the package step strips, a pre-stripped binary fails already-stripped QA", strings.TrimSpace(flag))
		}
	}
	if !strings.Contains(v["GOBUILDFLAGS:remove:arm"], "-buildmode=pie") {
		t.Error("the recipe does not drop -buildmode=pie on 32-bit ARM (CGO_ENABLED=0 cannot link PIE there)")
	}
	if !strings.Contains(text, "require ${BPN}-release.inc") {
		t.Error("the recipe does not require fieldgate-release.inc (PV and SRCREV of the release)")
	}
	for _, class := range []string{"go-mod", "go-mod-update-modules", "systemd", "useradd"} {
		if !regexp.MustCompile(`(?m)^inherit .*\b` + regexp.QuoteMeta(class) + `(\s|$)`).MatchString(text) {
			t.Errorf("recipe does not inherit %s", class)
		}
	}
	if p := v["USERADD_PARAM:${PN}"]; !strings.Contains(p, "--groups dialout") || !strings.HasSuffix(strings.TrimSpace(p), " fieldgate") {
		t.Errorf("USERADD_PARAM does not make fieldgate a member of dialout: %q", p)
	}
	main := readFile(t, "../cmd/fieldgate/main.go")
	for _, x := range []string{"version", "commit", "date"} {
		if !strings.Contains(v["GO_EXTRA_LDFLAGS"], "-X main."+x+"=") {
			t.Errorf("GO_EXTRA_LDFLAGS does not stamp main.%s", x)
		}
		if !regexp.MustCompile(`(?m)^\s+` + x + `\s+=`).MatchString(main) {
			t.Errorf("cmd/fieldgate has no variable %s to stamp", x)
		}
	}
	for _, inc := range []string{"fieldgate-go-mods.inc", "fieldgate-licenses.inc"} {
		if !strings.Contains(text, "require ${BPN}-"+strings.TrimPrefix(inc, "fieldgate-")) {
			t.Errorf("recipe does not require %s", inc)
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(recipe), inc)); err != nil {
			t.Error(err)
		}
	}
	// Every file do_install takes from the source tree exists in the repo,
	// and every unit file the repo ships is installed.
	installed := regexp.MustCompile(`\$\{FIELDGATE_SRC\}/(\S+)`).FindAllStringSubmatch(text, -1)
	if len(installed) == 0 {
		t.Fatal("do_install installs nothing from ${FIELDGATE_SRC}")
	}
	seen := map[string]bool{}
	for _, m := range installed {
		seen[m[1]] = true
		if _, err := os.Stat(filepath.Join("..", m[1])); err != nil {
			t.Errorf("do_install: %v", err)
		}
	}
	for _, f := range []string{"systemd/fieldgate.service", "systemd/sysusers.d/fieldgate.conf", "systemd/tmpfiles.d/fieldgate.conf", "systemd/sysctl.d/60-fieldgate-quic.conf", "systemd/fieldgate.yaml"} {
		if !seen[f] {
			t.Errorf("do_install does not install %s", f)
		}
	}
	// The unit's ExecStart and config paths are where the recipe puts them:
	// the factory config is the CONFFILE, the saved config and the state on
	// the data partition, which stays writable.
	unit := readFile(t, "../systemd/fieldgate.service")
	for _, s := range []string{"ExecStart=/usr/bin/fieldgate run ", " -factory-config /etc/fieldgate/fieldgate.yaml", " -config /var/lib/fieldgate/", " -data /var/lib/fieldgate", "StateDirectory=fieldgate", "SupplementaryGroups=dialout", "Type=notify", "WatchdogSec="} {
		if !strings.Contains(unit, s) {
			t.Errorf("fieldgate.service lacks %q", s)
		}
	}
	// The LAN side serves at once: nothing waits for network-online.target.
	if regexp.MustCompile(`(?m)^(Wants|Requires|After)=.*network-online\.target`).MatchString(unit) {
		t.Error("fieldgate.service waits for network-online.target: the LAN side must start without a link")
	}
}

// TestGoModsInc checks fieldgate-go-mods.inc against the build: every
// module the build needs has a gomod:// entry, and each entry's sha256 is
// that of the module file in the local Go module cache when it is there.
// A go.mod change without yocto/update-modules.sh fails here.
func TestGoModsInc(t *testing.T) {
	inc := readFile(t, filepath.Join(filepath.Dir(recipe), "fieldgate-go-mods.inc"))
	entry := regexp.MustCompile(`gomod://([^;\s]+);version=([^;\s]+)(;mod=1)?;sha256sum=([0-9a-f]{64})`)
	have := map[string]bool{}
	cache := strings.TrimSpace(run(t, "go", "env", "GOMODCACHE"))
	checked := 0
	for _, m := range entry.FindAllStringSubmatch(inc, -1) {
		path, version, modOnly, sum := m[1], m[2], m[3] != "", m[4]
		if !modOnly {
			have[path+"@"+version] = true
		}
		esc := escapePath(path)
		ext := ".zip"
		if modOnly {
			ext = ".mod"
		}
		data, err := os.ReadFile(filepath.Join(cache, "cache/download", esc, "@v", version+ext))
		if err != nil {
			continue // not in this machine's cache: bitbake checks it when fetching
		}
		got := sha256.Sum256(data)
		if hex.EncodeToString(got[:]) != sum {
			t.Errorf("%s@%s%s: sha256 %x in the module cache, %s in the .inc", path, version, ext, got, sum)
		}
		checked++
	}
	out := run(t, "go", "list", "-deps", "-json=Module", "github.com/fieldgate/fieldgate/...")
	dec := json.NewDecoder(bytes.NewReader([]byte(out)))
	for dec.More() {
		var p struct {
			Module *struct {
				Path, Version string
				Main          bool
				Replace       *struct{ Path, Version string }
			}
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		m := p.Module
		if m == nil || m.Main || (m.Replace != nil && m.Replace.Version == "") {
			continue // the main module, or replaced by a directory of the repo
		}
		if !have[m.Path+"@"+m.Version] {
			t.Errorf("fieldgate-go-mods.inc lacks %s@%s: run yocto/update-modules.sh", m.Path, m.Version)
			have[m.Path+"@"+m.Version] = true
		}
	}
	t.Logf("%d gomod entries, %d checked against the module cache", len(have), checked)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(out)
}

func TestImage(t *testing.T) {
	v := bbVars(t, image)
	text := readFile(t, image)
	if !strings.Contains(text, "require recipes-core/images/core-image-minimal.bb") {
		t.Error("fieldgate-image does not build on core-image-minimal")
	}
	install := " " + v["IMAGE_INSTALL:append"] + " "
	for _, pkg := range []string{"fieldgate", "fieldgate-os", "rauc"} {
		if !strings.Contains(install, " "+pkg+" ") {
			t.Errorf("fieldgate-image does not install %s", pkg)
		}
	}
	if !strings.Contains(v["IMAGE_FEATURES"], "read-only-rootfs") {
		t.Error("fieldgate-image root file system is not read-only")
	}
	// runqemu boots the wic image (not wic.bz2), from root slot A.
	if !regexp.MustCompile(`(^| )wic( |$)`).MatchString(v["IMAGE_FSTYPES"]) || !strings.Contains(v["IMAGE_FSTYPES"], "ext4") {
		t.Errorf("IMAGE_FSTYPES = %q: runqemu needs wic, the update bundle ext4", v["IMAGE_FSTYPES"])
	}
	if v["QB_KERNEL_ROOT:qemuall"] == "" || !strings.Contains(v["QB_KERNEL_ROOT:qemuall"], "${FIELDGATE_DISK}2") {
		t.Errorf("QB_KERNEL_ROOT:qemuall = %q: runqemu must pass root slot A (partition 2)", v["QB_KERNEL_ROOT:qemuall"])
	}
	// Every tool docs/flashing.md tells a technician to run is installed.
	docs := readFile(t, "../docs/flashing.md")
	tools := map[string]string{"mkfs.ext4": "e2fsprogs-mke2fs", "e2fsck": "e2fsprogs-e2fsck", "mosquitto_sub": "mosquitto-clients", "rauc": "rauc", "lsblk": "util-linux-lsblk", "sudo": "sudo"}
	for tool, pkg := range tools {
		if regexp.MustCompile("(?m)(^|[\\s`;(])"+regexp.QuoteMeta(tool)+`\s`).MatchString(docs) && !strings.Contains(install, " "+pkg+" ") {
			t.Errorf("docs/flashing.md runs %s, but the image lacks %s", tool, pkg)
		}
	}
	wksFiles := 0
	for name, value := range v {
		if !strings.HasPrefix(name, "WKS_FILE") || strings.HasPrefix(name, "WKS_FILE_DEPENDS") {
			continue
		}
		wksFiles++
		if _, err := os.Stat(filepath.Join(layer, "wic", value)); err == nil {
			t.Errorf("%s is under wic/: wic and oe-core's sanity check want files/wic", value)
		}
		wks := filepath.Join(layer, "files/wic", value)
		data, err := os.ReadFile(wks)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		parts := regexp.MustCompile(`(?m)^part .*$`).FindAllString(string(data), -1)
		if len(parts) != 4 {
			t.Errorf("%s: %d partitions, want boot, root A, root B, data", wks, len(parts))
			continue
		}
		checks := []struct{ what, re string }{
			{"boot partition", `^part /boot .*--fstype=vfat`},
			{"root slot A", `^part / --source rootfs .*--label rootfs-a`},
			{"root slot B", `^part --source rootfs .*--label rootfs-b`},
			{"data partition", `^part /data .*--fstype=ext4 .*--label data`},
		}
		for i, c := range checks {
			if !regexp.MustCompile(c.re).MatchString(parts[i]) {
				t.Errorf("%s: partition %d is not the %s: %s", wks, i+1, c.what, parts[i])
			}
		}
		// Both slots the same fixed size: an update must fit either.
		size := regexp.MustCompile(`--fixed-size (\S+)`)
		a, b := size.FindStringSubmatch(parts[1]), size.FindStringSubmatch(parts[2])
		if a == nil || b == nil || a[1] != b[1] {
			t.Errorf("%s: the root slots are not of one fixed size", wks)
		}
	}
	if wksFiles == 0 {
		t.Error("fieldgate-image names no WKS_FILE")
	}
	// The slots and the data partition where RAUC and fstab look for them.
	conf := readFile(t, raucSystemConf)
	for _, want := range []string{"device=@DISK@2", "device=@DISK@3", "bootname=A", "bootname=B", "statusfile=/data/", "compatible=fieldgate-@MACHINE@"} {
		if !strings.Contains(conf, want) {
			t.Errorf("system.conf lacks %q", want)
		}
	}
	bundle := bbVars(t, layer+"/recipes-fieldgate/bundles/fieldgate-bundle.bb")
	if bundle["RAUC_BUNDLE_COMPATIBLE"] != "fieldgate-${MACHINE}" || bundle["RAUC_SLOT_rootfs"] != "fieldgate-image" || bundle["RAUC_BUNDLE_FORMAT"] != "verity" {
		t.Errorf("fieldgate-bundle: compatible %q, rootfs %q, format %q", bundle["RAUC_BUNDLE_COMPATIBLE"], bundle["RAUC_SLOT_rootfs"], bundle["RAUC_BUNDLE_FORMAT"])
	}
	fstab := readFile(t, layer+"/recipes-fieldgate/fieldgate-os/files/fstab.fieldgate")
	for _, want := range []string{"LABEL=data", " /data ", "/data/fieldgate  /var/lib/fieldgate", "LABEL=boot"} {
		if !strings.Contains(fstab, want) {
			t.Errorf("fstab.fieldgate lacks %q", want)
		}
	}
}

// TestLayerDepends: every layer the image's packages come from is named.
func TestLayerDepends(t *testing.T) {
	v := bbVars(t, layer+"/conf/layer.conf")
	deps := " " + v["LAYERDEPENDS_fieldgate"] + " "
	for _, c := range []string{"core", "openembedded-layer", "networking-layer", "rauc"} {
		if !strings.Contains(deps, " "+c+" ") {
			t.Errorf("LAYERDEPENDS_fieldgate lacks %s", c)
		}
	}
	if _, err := os.Stat(filepath.Join(layer, "wic")); err == nil {
		t.Error("the layer has a wic/ directory: oe-core's sanity check wants files/wic")
	}
}

// TestReleasePin: the recipe builds a release (tag v<PV> at SRCREV), never
// a branch head; when this clone has the tag, the pin is its commit.
func TestReleasePin(t *testing.T) {
	v := bbVars(t, release)
	pv, srcrev := v["PV"], v["SRCREV"]
	if !regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+(-rc[0-9]+)?$`).MatchString(pv) {
		t.Errorf("PV = %q is not a release version (tag v<PV>, vMAJOR.MINOR.PATCH[-rcN])", pv)
	}
	if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(srcrev) {
		t.Errorf("SRCREV = %q is not a commit id", srcrev)
	}
	rv := bbVars(t, recipe)
	if !strings.Contains(rv["FIELDGATE_SRC_URI"], ";tag=v${PV}") {
		t.Errorf("FIELDGATE_SRC_URI = %q lacks tag=v${PV} (the fetch checks the tag is SRCREV)", rv["FIELDGATE_SRC_URI"])
	}
	for _, f := range []string{recipe, release} {
		if strings.Contains(readFile(t, f), "AUTOREV") {
			t.Errorf("%s uses AUTOREV: not reproducible, and it needs the network to parse", f)
		}
	}
	out, err := exec.Command("git", "-C", "..", "rev-parse", "--verify", "--quiet", "refs/tags/v"+pv+"^{commit}").Output()
	if err != nil {
		t.Logf("tag v%s is not in this clone: the pin (%s) is checked by the fetch on the build host; yocto/release.sh v%s rewrites it from the tag", pv, srcrev, pv)
		return
	}
	if got := strings.TrimSpace(string(out)); got != srcrev {
		t.Errorf("tag v%s is commit %s, fieldgate-release.inc pins %s: run yocto/release.sh v%s", pv, got, srcrev, pv)
	}
}

// TestLicense: Apache-2.0 with the engine fork's MIT licence, as the recipe
// declares it; go.yaml.in/yaml/v3 is MIT and Apache-2.0.
func TestLicense(t *testing.T) {
	v := bbVars(t, recipe)
	if v["LICENSE"] != "Apache-2.0 & MIT" {
		t.Errorf("LICENSE = %q, want \"Apache-2.0 & MIT\"", v["LICENSE"])
	}
	m := regexp.MustCompile(`file://src/\$\{GO_IMPORT\}/LICENSE;md5=([0-9a-f]{32})`).FindStringSubmatch(v["LIC_FILES_CHKSUM"])
	if m == nil {
		t.Fatalf("LIC_FILES_CHKSUM = %q does not name LICENSE", v["LIC_FILES_CHKSUM"])
	}
	sum := md5.Sum([]byte(readFile(t, "../LICENSE")))
	if hex.EncodeToString(sum[:]) != m[1] {
		t.Errorf("LICENSE has md5 %x, the recipe says %s", sum, m[1])
	}
	if !strings.Contains(readFile(t, "../LICENSE"), "Apache License") {
		t.Error("LICENSE is not the Apache License")
	}
	notice := readFile(t, "../NOTICE")
	for _, want := range []string{"Apache License, Version 2.0", "third_party/mochi-mqtt-server", "MIT"} {
		if !strings.Contains(notice, want) {
			t.Errorf("NOTICE lacks %q", want)
		}
	}
	lic := readFile(t, filepath.Join(filepath.Dir(recipe), "fieldgate-licenses.inc"))
	if !regexp.MustCompile(`go\.yaml\.in/yaml/v3@[^/]+/LICENSE;md5=[0-9a-f]+;spdx=MIT\+%26\+Apache-2\.0`).MatchString(lic) {
		t.Error("fieldgate-licenses.inc: go.yaml.in/yaml/v3 is not MIT & Apache-2.0")
	}
	if !strings.Contains(lic, "third_party/mochi-mqtt-server/LICENSE.md") {
		t.Error("fieldgate-licenses.inc does not list the engine fork's LICENSE.md")
	}
}

// TestFactoryLEDs: the recipe's sed puts a machine's LED names into the
// factory config's board.leds, and the result is still that section.
func TestFactoryLEDs(t *testing.T) {
	text := readFile(t, recipe)
	if !strings.Contains(text, `FIELDGATE_LED_HEARTBEAT:raspberrypi4 ?= "ACT"`) || !strings.Contains(text, `FIELDGATE_LED_FAULT:raspberrypi4 ?= "PWR"`) {
		t.Error("the recipe has no raspberrypi4 LED defaults (heartbeat ACT, fault PWR)")
	}
	factory := readFile(t, "../systemd/fieldgate.yaml")
	for role, name := range map[string]string{"heartbeat": "ACT", "uplink": "", "fault": "PWR"} {
		re := regexp.MustCompile(`(?m)^(    ` + role + `:).*`)
		if n := len(re.FindAllString(factory, -1)); n != 1 {
			t.Fatalf("factory config: %d lines the recipe's sed for %s would change, want 1", n, role)
		}
		factory = re.ReplaceAllString(factory, `$1 "`+name+`"`)
	}
	var cfg struct {
		Board struct {
			LEDs map[string]string `yaml:"leds"`
		} `yaml:"board"`
	}
	if err := yaml.Unmarshal([]byte(factory), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Board.LEDs["heartbeat"] != "ACT" || cfg.Board.LEDs["fault"] != "PWR" || cfg.Board.LEDs["uplink"] != "" {
		t.Errorf("board.leds after the recipe's sed: %v", cfg.Board.LEDs)
	}
}

// kasFile is the part of a kas file the check reads.
type kasFile struct {
	Header struct {
		Version  int      `yaml:"version"`
		Includes []string `yaml:"includes"`
	} `yaml:"header"`
	Machine string `yaml:"machine"`
	Distro  string `yaml:"distro"`
	Target  any    `yaml:"target"`
	Repos   map[string]struct {
		URL    string         `yaml:"url"`
		Branch string         `yaml:"branch"`
		Commit string         `yaml:"commit"`
		Layers map[string]any `yaml:"layers"`
	} `yaml:"repos"`
	LocalConf map[string]string `yaml:"local_conf_header"`
}

// kasRepo is one repository of a kas file.
type kasRepo struct {
	URL    string         `yaml:"url"`
	Branch string         `yaml:"branch"`
	Commit string         `yaml:"commit"`
	Layers map[string]any `yaml:"layers"`
}

// readKas reads a kas file and, depth first, the files it includes; later
// files override earlier ones as kas merges them.
func readKas(t *testing.T, name string) (k kasFile, repos map[string]kasRepo, targets []string, localConf string) {
	t.Helper()
	repos = map[string]kasRepo{}
	var walk func(name string)
	walk = func(name string) {
		var f kasFile
		if err := yaml.Unmarshal([]byte(readFile(t, filepath.Join("kas", name))), &f); err != nil {
			t.Fatalf("kas/%s: %v", name, err)
		}
		if f.Header.Version < 14 {
			t.Errorf("kas/%s: header version %d", name, f.Header.Version)
		}
		for _, inc := range f.Header.Includes {
			walk(inc)
		}
		for n, r := range f.Repos {
			repos[n] = r
		}
		switch tg := f.Target.(type) {
		case string:
			targets = []string{tg}
		case []any:
			targets = nil
			for _, x := range tg {
				targets = append(targets, fmt.Sprint(x))
			}
		}
		if f.Machine != "" {
			k.Machine = f.Machine
		}
		if f.Distro != "" {
			k.Distro = f.Distro
		}
		localConf += strings.Join(mapValues(f.LocalConf), "\n")
	}
	walk(name)
	return k, repos, targets, localConf
}

func TestKas(t *testing.T) {
	commit := regexp.MustCompile(`^[0-9a-f]{40}$`)
	for machine, file := range map[string]string{"qemuarm64": "qemuarm64.yml", "raspberrypi4-64": "raspberrypi4-64.yml", "raspberrypi3": "raspberrypi3.yml"} {
		k, repos, targets, _ := readKas(t, file)
		if k.Machine != machine {
			t.Errorf("kas/%s: machine %q, want %q", file, k.Machine, machine)
		}
		// The layer's own distro, which yocto-check parses with too.
		if k.Distro != "fieldgate-appliance" {
			t.Errorf("kas/%s: distro %q, want fieldgate-appliance (meta-fieldgate/conf/distro/fieldgate-appliance.conf)", file, k.Distro)
		}
		if !strings.Contains(strings.Join(targets, " "), "fieldgate-image") || !strings.Contains(strings.Join(targets, " "), "fieldgate-bundle") {
			t.Errorf("kas/%s: targets %v, want fieldgate-image and fieldgate-bundle", file, targets)
		}
		need := []string{"fieldgate", "bitbake", "openembedded-core", "meta-openembedded", "meta-rauc"}
		if strings.HasPrefix(machine, "raspberrypi") {
			need = append(need, "meta-raspberrypi")
		}
		for _, n := range need {
			if _, ok := repos[n]; !ok {
				t.Errorf("kas/%s: no repo %s", file, n)
			}
		}
		for name, r := range repos {
			if r.URL == "" {
				for l := range r.Layers {
					if _, err := os.Stat(filepath.Join("..", l, "conf/layer.conf")); err != nil {
						t.Errorf("kas/%s: layer %s: %v", file, l, err)
					}
				}
				continue
			}
			if r.Branch == "" || !commit.MatchString(r.Commit) {
				t.Errorf("kas/%s: repo %s: branch %q commit %q, want both (the commit yocto-check parsed with)", file, name, r.Branch, r.Commit)
			}
		}
		// oe-core wrynose needs BitBake 2.18 (meta/conf/sanity.conf).
		if b := repos["bitbake"].Branch; b != "2.18" {
			t.Errorf("kas/%s: bitbake branch %q, want 2.18", file, b)
		}
		for _, n := range []string{"openembedded-core", "meta-openembedded", "meta-rauc", "meta-raspberrypi"} {
			if r, ok := repos[n]; ok && r.Branch != "wrynose" {
				t.Errorf("kas/%s: %s branch %q, want wrynose", file, n, r.Branch)
			}
		}
	}
	if !strings.Contains(readFile(t, distro), "WATCHDOG_RUNTIME_SEC:pn-systemd") {
		t.Error("fieldgate-appliance.conf: no WATCHDOG_RUNTIME_SEC for systemd")
	}
	// The developer variant builds the local git repository.
	_, _, _, dev := readKas(t, "dev.yml")
	for _, want := range []string{"FIELDGATE_SRC_URI:pn-fieldgate = \"git://", "protocol=file", "destsuffix=${GO_SRCURI_DESTSUFFIX}", "SRCREV:pn-fieldgate"} {
		if !strings.Contains(dev, want) {
			t.Errorf("kas/dev.yml lacks %q", want)
		}
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// escapePath is the module cache's case encoding: "A" becomes "!a".
func escapePath(path string) string {
	var b strings.Builder
	for _, r := range path {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('!')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
