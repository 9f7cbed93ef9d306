package yocto

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
	layer  = "meta-fieldgate"
	recipe = layer + "/recipes-fieldgate/fieldgate/fieldgate_git.bb"
	image  = layer + "/recipes-fieldgate/images/fieldgate-image.bb"
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
	for _, name := range []string{"SUMMARY", "LICENSE", "SRC_URI", "SRCREV", "PV", "USERADD_PACKAGES"} {
		if strings.TrimSpace(v[name]) == "" {
			t.Errorf("%s missing", name)
		}
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
	// The unit's ExecStart and config paths are where the recipe puts them.
	unit := readFile(t, "../systemd/fieldgate.service")
	for _, s := range []string{"ExecStart=/usr/bin/fieldgate run -config /etc/fieldgate/fieldgate.yaml", "StateDirectory=fieldgate", "SupplementaryGroups=dialout", "Type=notify", "WatchdogSec="} {
		if !strings.Contains(unit, s) {
			t.Errorf("fieldgate.service lacks %q", s)
		}
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
	if !regexp.MustCompile(`\bfieldgate\b`).MatchString(v["IMAGE_INSTALL:append"]) {
		t.Error("fieldgate-image does not install fieldgate")
	}
	if !strings.Contains(v["IMAGE_FEATURES"], "read-only-rootfs") {
		t.Error("fieldgate-image root file system is not read-only")
	}
	for name, value := range v {
		if strings.HasPrefix(name, "WKS_FILE") {
			wks := filepath.Join(layer, "wic", value)
			data, err := os.ReadFile(wks)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			if !regexp.MustCompile(`(?m)^part /var/lib/fieldgate .*--fstype=ext4`).Match(data) {
				t.Errorf("%s has no ext4 data partition at /var/lib/fieldgate", wks)
			}
		}
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

func TestKas(t *testing.T) {
	read := func(name string) kasFile {
		var k kasFile
		if err := yaml.Unmarshal([]byte(readFile(t, filepath.Join("kas", name))), &k); err != nil {
			t.Fatalf("kas/%s: %v", name, err)
		}
		if k.Header.Version < 14 {
			t.Errorf("kas/%s: header version %d", name, k.Header.Version)
		}
		return k
	}
	for machine, file := range map[string]string{"qemuarm64": "qemuarm64.yml", "raspberrypi4-64": "raspberrypi4-64.yml"} {
		k := read(file)
		if k.Machine != machine {
			t.Errorf("kas/%s: machine %q, want %q", file, k.Machine, machine)
		}
		repos := map[string]bool{}
		for name := range k.Repos {
			repos[name] = true
		}
		for _, inc := range k.Header.Includes {
			base := read(inc)
			if base.Target != "fieldgate-image" {
				t.Errorf("kas/%s: target %v", inc, base.Target)
			}
			if !strings.Contains(strings.Join(mapValues(base.LocalConf), "\n"), `WATCHDOG_RUNTIME_SEC:pn-systemd`) {
				t.Errorf("kas/%s: no WATCHDOG_RUNTIME_SEC for systemd", inc)
			}
			for name, r := range base.Repos {
				repos[name] = true
				if r.URL == "" {
					for l := range r.Layers {
						if _, err := os.Stat(filepath.Join("..", l, "conf/layer.conf")); err != nil {
							t.Errorf("kas/%s: layer %s: %v", inc, l, err)
						}
					}
					continue
				}
				if r.Branch == "" && r.Commit == "" {
					t.Errorf("kas/%s: repo %s has neither branch nor commit", inc, name)
				}
			}
		}
		for _, need := range []string{"fieldgate", "bitbake", "openembedded-core", "meta-openembedded"} {
			if !repos[need] {
				t.Errorf("kas/%s: no repo %s", file, need)
			}
		}
		lock := strings.TrimSuffix(file, ".yml") + ".lock.yml"
		if _, err := os.Stat(filepath.Join("kas", lock)); err != nil {
			t.Logf("kas/%s: no lock file yet (`kas lock` needs network): layers follow their branches", lock)
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
