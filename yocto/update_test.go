package yocto

import (
	"encoding/xml"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/peertest"
)

const osFiles = layer + "/recipes-fieldgate/fieldgate-os/files"

// execStart returns the last non-empty ExecStart= of a unit or drop-in,
// and whether the drop-in resets the list first (an empty ExecStart=).
func execStart(t *testing.T, text string) (cmd string, reset bool) {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "ExecStart=")
		if !ok {
			continue
		}
		if v == "" {
			reset = true
			continue
		}
		cmd = v
	}
	return cmd, reset
}

// TestRaucDropIn: the image runs the gateway with -update rauc through a
// drop-in of fieldgate-os, whose command is the repository unit's plus
// the update flags (the unit itself stays usable without RAUC), and it is
// the image's only mark-good: no timer or script of the layer marks a
// slot good, RAUC's rauc-mark-good is left out.
func TestRaucDropIn(t *testing.T) {
	unit := readFile(t, "../systemd/fieldgate.service")
	base, _ := execStart(t, unit)
	if base == "" || strings.Contains(base, "-update") {
		t.Fatalf("systemd/fieldgate.service ExecStart %q: want one without -update", base)
	}
	dropIn := readFile(t, filepath.Join(osFiles, "fieldgate-rauc.conf"))
	cmd, reset := execStart(t, dropIn)
	if !reset {
		t.Error("fieldgate-rauc.conf does not reset ExecStart (an empty ExecStart= first): systemd would refuse two commands")
	}
	if !strings.HasPrefix(cmd, base+" ") {
		t.Errorf("fieldgate-rauc.conf ExecStart\n  %q\ndoes not start with the unit's\n  %q", cmd, base)
	}
	rest := strings.Fields(strings.TrimPrefix(cmd, base))
	if len(rest) != 4 || rest[0] != "-update" || rest[1] != "rauc" || rest[2] != "-mark-good-after" || rest[3] != "@MARK_GOOD_AFTER@" {
		t.Errorf("fieldgate-rauc.conf adds %q, want -update rauc -mark-good-after @MARK_GOOD_AFTER@", rest)
	}
	// The flags exist in the binary.
	main := readFile(t, "../cmd/fieldgate/main.go")
	for _, flag := range []string{`"update"`, `"mark-good-after"`} {
		if !strings.Contains(main, "fs.String("+flag) && !strings.Contains(main, "fs.Duration("+flag) {
			t.Errorf("cmd/fieldgate has no flag %s", flag)
		}
	}

	osv := bbVars(t, layer+"/recipes-fieldgate/fieldgate-os/fieldgate-os.bb")
	after := osv["FIELDGATE_MARK_GOOD_AFTER"]
	if d, err := time.ParseDuration(after); err != nil || d < time.Minute {
		t.Errorf("FIELDGATE_MARK_GOOD_AFTER = %q: want a Go duration of a minute or more (-mark-good-after parses it): %v", after, err)
	}
	if strings.Contains(osv["SYSTEMD_SERVICE:${PN}"], "mark-good") {
		t.Errorf("fieldgate-os enables %q: the gateway is the only mark-good", osv["SYSTEMD_SERVICE:${PN}"])
	}
	err := filepath.WalkDir(layer, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(filepath.Base(path), "mark-good") {
			t.Errorf("%s: a second mark-good path; the gateway marks the slot good", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(bbVars(t, image)["BAD_RECOMMENDATIONS"], "rauc-mark-good") {
		t.Error("fieldgate-image installs rauc-mark-good, which marks every boot good")
	}
}

// busconfig is a D-Bus policy file.
type busconfig struct {
	Policies []struct {
		User    string `xml:"user,attr"`
		Context string `xml:"context,attr"`
		Allow   []struct {
			Destination string `xml:"send_destination,attr"`
			Interface   string `xml:"send_interface,attr"`
			Member      string `xml:"send_member,attr"`
		} `xml:"allow"`
	} `xml:"policy"`
}

// TestRaucDBusPolicy: user fieldgate may call what board/update's Busctl
// calls on de.pengutronix.rauc (Installer InstallBundle and Mark, property
// reads), and nothing is opened to other users.
func TestRaucDBusPolicy(t *testing.T) {
	var bc busconfig
	if err := xml.Unmarshal([]byte(readFile(t, filepath.Join(osFiles, "fieldgate-rauc-dbus.conf"))), &bc); err != nil {
		t.Fatalf("fieldgate-rauc-dbus.conf: %v", err)
	}
	allowed := map[string]bool{}
	for _, p := range bc.Policies {
		if p.User != "fieldgate" {
			t.Errorf("a policy for user %q context %q: only fieldgate is meant", p.User, p.Context)
			continue
		}
		for _, a := range p.Allow {
			if a.Destination != "de.pengutronix.rauc" {
				t.Errorf("allows sending to %q", a.Destination)
			}
			allowed[a.Interface+"."+a.Member] = true
		}
	}
	for _, want := range []string{"de.pengutronix.rauc.Installer.InstallBundle", "de.pengutronix.rauc.Installer.Mark", "org.freedesktop.DBus.Properties.Get"} {
		if !allowed[want] {
			t.Errorf("fieldgate may not call %s", want)
		}
	}
	// The methods the policy names are the ones the gateway calls.
	busctl := readFile(t, "../board/update/busctl.go")
	for _, s := range []string{`"InstallBundle"`, `"Mark"`, `"get-property"`, `"de.pengutronix.rauc.Installer"`} {
		if !strings.Contains(busctl, s) {
			t.Errorf("board/update/busctl.go no longer uses %s: check the D-Bus policy", s)
		}
	}
}

// TestRaucFilesInstalled: fieldgate-os fetches, installs and packages the
// drop-in and the D-Bus policy, and fills in the mark-good time.
func TestRaucFilesInstalled(t *testing.T) {
	path := layer + "/recipes-fieldgate/fieldgate-os/fieldgate-os.bb"
	v := bbVars(t, path)
	text := strings.ReplaceAll(readFile(t, path), "\\\n", " ")
	srcURI := " " + v["SRC_URI"] + " "
	files := map[string]string{
		"fieldgate-rauc.conf":      `install -D -m 0644 ${S}/fieldgate-rauc.conf ${D}${systemd_system_unitdir}/fieldgate.service.d/10-rauc.conf`,
		"fieldgate-rauc-dbus.conf": `install -D -m 0644 ${S}/fieldgate-rauc-dbus.conf ${D}${datadir}/dbus-1/system.d/fieldgate-rauc.conf`,
	}
	for f, install := range files {
		if !strings.Contains(srcURI, " file://"+f+" ") {
			t.Errorf("fieldgate-os SRC_URI lacks file://%s", f)
		}
		if !strings.Contains(text, install) {
			t.Errorf("fieldgate-os do_install lacks %q", install)
		}
	}
	if !regexp.MustCompile(`sed -i -e 's\|@MARK_GOOD_AFTER@\|\$\{FIELDGATE_MARK_GOOD_AFTER\}\|g' \$\{D\}\$\{systemd_system_unitdir\}/fieldgate.service.d/10-rauc.conf`).MatchString(text) {
		t.Error("fieldgate-os does not write FIELDGATE_MARK_GOOD_AFTER into the drop-in")
	}
	pkg := " " + v["FILES:${PN}"] + " "
	for _, dir := range []string{"${systemd_system_unitdir}", "${datadir}/dbus-1/system.d"} {
		if !strings.Contains(pkg, " "+dir+" ") {
			t.Errorf("fieldgate-os FILES:${PN} lacks %s", dir)
		}
	}
	if !strings.Contains(" "+v["RDEPENDS:${PN}"]+" ", " rauc ") {
		t.Error("fieldgate-os does not depend on rauc")
	}
	// Every file:// of the recipe exists, and every file in files/ is used.
	have, err := os.ReadDir(osFiles)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range have {
		if !strings.Contains(srcURI, " file://"+e.Name()+" ") {
			t.Errorf("%s/%s is not in fieldgate-os SRC_URI", osFiles, e.Name())
		}
	}
	for _, f := range regexp.MustCompile(`file://(\S+)`).FindAllStringSubmatch(srcURI, -1) {
		if _, err := os.Stat(filepath.Join(osFiles, f[1])); err != nil {
			t.Errorf("fieldgate-os SRC_URI: %v", err)
		}
	}
}

// TestRaucDropInVerifies: systemd itself accepts the unit with the drop-in
// as fieldgate-os installs it (one ExecStart for a Type=notify service,
// the mark-good time filled in), and the sandbox is unchanged by it.
func TestRaucDropInVerifies(t *testing.T) {
	analyze := peertest.Need(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "fieldgate.service.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	// verify wants ExecStart's binary to exist.
	unit := strings.ReplaceAll(readFile(t, "../systemd/fieldgate.service"), "/usr/bin/fieldgate", "/bin/true")
	dropIn := strings.ReplaceAll(readFile(t, filepath.Join(osFiles, "fieldgate-rauc.conf")), "/usr/bin/fieldgate", "/bin/true")
	dropIn = strings.ReplaceAll(dropIn, "@MARK_GOOD_AFTER@", bbVars(t, layer+"/recipes-fieldgate/fieldgate-os/fieldgate-os.bb")["FIELDGATE_MARK_GOOD_AFTER"])
	if err := os.WriteFile(filepath.Join(dir, "fieldgate.service"), []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fieldgate.service.d", "10-rauc.conf"), []byte(dropIn), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", filepath.Join(dir, "fieldgate.service")).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify of the unit with 10-rauc.conf: %v\n%s", err, out)
	}
	out, err = exec.Command(analyze, "security", "--offline=yes", "--threshold=25", filepath.Join(dir, "fieldgate.service")).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security with 10-rauc.conf: %v\n%s", err, out)
	}
}
