package systemdtest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testwait"

	"github.com/fieldgate/fieldgate/internal/peertest"
)

// repo is the repository root, seen from this package.
const repo = "../.."

// keep are the units a boot of fieldgate-test.target needs; every other
// unit wanted by the early-boot targets is masked, since most touch global
// kernel state (sysctl, modules, udev, the clock, binfmt, audit, swap).
var keep = map[string]bool{
	"systemd-journald.service":        true,
	"systemd-journald.socket":         true,
	"systemd-journald-dev-log.socket": true,
	"systemd-sysusers.service":        true,
	"systemd-tmpfiles-setup.service":  true,
	"fieldgate.service":               true,
}

// earlyTargets are the targets whose wants are masked (but for keep).
var earlyTargets = []string{"sysinit.target", "sockets.target", "timers.target", "paths.target",
	"local-fs.target", "basic.target", "multi-user.target", "getty.target", "remote-fs.target"}

// watchdogSec shortens the unit's WatchdogSec (30s) in a drop-in, so that
// the watchdog restart is seen in seconds.
const watchdogSec = 5

// TestUnitUnderSystemd boots systemd 252 as PID 1 of new namespaces on an
// overlay of the host root with the unit installed as the recipe installs
// it, and then: the service starts (sandboxed: read-only root, its own
// user), prints the first-boot setup code on the serial console; the setup
// is refused without the code and done with it; a config change through
// the API is saved (on the data directory, the factory config in /etc
// untouched); after `systemctl restart` the change is still there; a
// SIGSTOPped gateway is killed by the watchdog and restarted; `systemctl
// stop` stops it cleanly.
func TestUnitUnderSystemd(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	start := time.Now()
	need(t)
	cg2 := cgroup2Mount(t)
	dir := t.TempDir()
	buildStage(t, dir)
	built := time.Since(start)
	launched := time.Now()
	if err := os.WriteFile(filepath.Join(dir, "console.log"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	// A cgroup of its own becomes the root of the new cgroup namespace:
	// systemd builds its tree below it and the host's stays untouched.
	cg := filepath.Join(cg2, "fieldgate-systemdtest-"+randomHex())
	if err := os.Mkdir(cg, 0o755); err != nil {
		peertest.Missing(t, "a writable cgroup2 hierarchy: "+err.Error(), "run as root with cgroup2 mounted")
	}
	t.Cleanup(func() { removeCgroup(t, cg) })
	boot, err := filepath.Abs("boot.sh")
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(dir, "unshare.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("sh", "-c", `echo $$ > "$1/cgroup.procs" && exec unshare --mount --pid --net --uts --ipc --cgroup --fork --kill-child sh "$2" "$3"`,
		"sh", cg, boot, dir)
	cmd.Env = []string{"container=fieldgate-test", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Stdout, cmd.Stderr = out, out
	// Should the test process die, unshare dies, and with it (--kill-child)
	// PID 1 of the namespace and everything in it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	pid1 := 0
	t.Cleanup(func() {
		if pid1 > 0 {
			syscallKill(pid1) // PID 1 of the namespace: everything in it ends
		}
		cmd.Process.Kill()
		<-waited
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "unshare.log"))
			t.Logf("unshare/boot output:\n%s", log)
		}
	})
	pid1 = waitFor(t, 20*time.Second, "PID 1 of the namespace", func() (int, bool) {
		select {
		case err := <-waited:
			log, _ := os.ReadFile(filepath.Join(dir, "unshare.log"))
			t.Fatalf("unshare ended: %v\n%s", err, log)
		default:
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		var p int
		if err == nil && len(bytes.Fields(data)) > 0 {
			fmt.Sscan(string(bytes.Fields(data)[0]), &p)
		}
		return p, p > 0 && strings.Contains(readFile(fmt.Sprintf("/proc/%d/comm", p)), "systemd")
	})
	c := &container{t: t, pid: pid1, dir: dir}
	t.Cleanup(func() {
		if t.Failed() {
			j, _ := c.run("journalctl", "--no-pager", "-n", "200")
			t.Logf("journal:\n%s", j)
		}
	})
	state := waitFor(t, 60*time.Second, "systemd to finish booting", func() (string, bool) {
		s, _ := c.run("systemctl", "is-system-running")
		s = strings.TrimSpace(s)
		return s, s == "running" || s == "degraded"
	})
	if state != "running" {
		failed, _ := c.run("systemctl", "--failed", "--no-pager")
		t.Errorf("system %s:\n%s", state, failed)
	}
	booted := time.Since(launched)
	c.waitActive()

	// The setup code on the serial console (ExecStartPost, as root), and in
	// a file only root and the service may read.
	code := waitFor(t, 10*time.Second, "the setup code on the console", func() (string, bool) {
		m := regexp.MustCompile(`setup code ([0-9A-Z]{5}-[0-9A-Z]{5})`).FindStringSubmatch(readFile(filepath.Join(dir, "console.log")))
		if m == nil {
			return "", false
		}
		return m[1], true
	})
	if st, _ := c.run("stat", "-c", "%a %U", "/var/lib/fieldgate/setup-code"); strings.TrimSpace(st) != "600 fieldgate" {
		t.Errorf("setup code file: %q, want 600 fieldgate", st)
	}
	if j, _ := c.run("journalctl", "-u", "fieldgate", "--no-pager"); !strings.Contains(j, code) {
		t.Errorf("the setup code is not in the journal")
	}

	// First boot: refused without the code, done with it; then a change.
	jar := filepath.Join(dir, "cookies")
	if st, body := c.http(jar, "", "POST", "/api/v1/setup", `{"password": "correct horse battery", "gateway_id": "thief"}`); st != 403 {
		t.Fatalf("setup without the code: %d %s", st, body)
	}
	st, body := c.http(jar, "", "POST", "/api/v1/setup", fmt.Sprintf(`{"password": "correct horse battery", "gateway_id": "site-7", "setup_code": %q}`, code))
	if st != 200 {
		t.Fatalf("setup: %d %s", st, body)
	}
	csrf := jsonField(t, body, "csrf")
	if st, body := c.http(jar, csrf, "PUT", "/api/v1/config/log", `{"level": "debug", "format": "json"}`); st != 200 {
		t.Fatalf("config change: %d %s", st, body)
	}
	saved, _ := c.run("cat", "/var/lib/fieldgate/config/fieldgate.yaml")
	if !strings.Contains(saved, "site-7") || !strings.Contains(saved, "level: debug") {
		t.Fatalf("saved config:\n%s", saved)
	}
	factory, _ := c.run("cat", "/etc/fieldgate/fieldgate.yaml")
	if want := readFile(filepath.Join(repo, "systemd/fieldgate.yaml")); factory != want {
		t.Errorf("the factory config changed:\n%s", factory)
	}
	if _, err := c.run("sh", "-c", "test ! -e /var/lib/fieldgate/setup-code"); err != nil {
		t.Errorf("setup code file left after setup")
	}

	// Restart: the change is still there.
	if out, err := c.run("systemctl", "restart", "fieldgate"); err != nil {
		t.Fatalf("restart: %v %s", err, out)
	}
	c.waitActive()
	if st, body := c.http(jar, "", "POST", "/api/v1/login", `{"password": "correct horse battery"}`); st != 200 {
		t.Fatalf("login after restart: %d %s", st, body)
	}
	_, cfg := c.http(jar, "", "GET", "/api/v1/config", "")
	if !strings.Contains(cfg, `"site-7"`) || !strings.Contains(cfg, `"debug"`) {
		t.Fatalf("config after restart lost the change:\n%.2000s", cfg)
	}

	// The watchdog: a stopped gateway sends no WATCHDOG=1 and is restarted.
	mainPID := c.show("MainPID")
	restarts := c.show("NRestarts")
	stopped := time.Now()
	if out, err := c.run("kill", "-STOP", mainPID); err != nil {
		t.Fatalf("SIGSTOP: %v %s", err, out)
	}
	waitFor(t, time.Duration(watchdogSec*4+20)*time.Second, "the watchdog restart", func() (string, bool) {
		p, n, a := c.show("MainPID"), c.show("NRestarts"), c.show("ActiveState")
		return p, p != mainPID && p != "0" && n != restarts && a == "active"
	})
	restartedIn := time.Since(stopped)
	if j, _ := c.run("journalctl", "-u", "fieldgate", "--no-pager"); !strings.Contains(j, "Watchdog timeout") {
		t.Errorf("no watchdog timeout in the journal")
	}

	// A clean stop.
	if out, err := c.run("systemctl", "stop", "fieldgate"); err != nil {
		t.Fatalf("stop: %v %s", err, out)
	}
	if r, a := c.show("Result"), c.show("ActiveState"); r != "success" || a != "inactive" {
		t.Errorf("after stop: Result=%s ActiveState=%s", r, a)
	}
	t.Logf("%s: build and stage %v; boot to %s %v; watchdog restart %v after SIGSTOP (WatchdogSec=%ds); in the container %v; whole test %v",
		strings.TrimSpace(firstLine(c.must("systemctl", "--version"))), built.Round(time.Millisecond), state, booted.Round(time.Millisecond),
		restartedIn.Round(time.Millisecond), watchdogSec, time.Since(launched).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// container drives the systemd in the namespaces of pid.
type container struct {
	t   *testing.T
	pid int
	dir string
}

// run runs a command inside every namespace and the root of the
// container (systemctl reaches systemd over its private socket there).
func (c *container) run(args ...string) (string, error) {
	ns := []string{"-t", fmt.Sprint(c.pid), "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w", "--"}
	out, err := exec.Command("nsenter", append(ns, args...)...).CombinedOutput()
	return string(out), err
}

func (c *container) must(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("%q: %v\n%s", args, err, out)
	}
	return out
}

// show is one property of fieldgate.service.
func (c *container) show(prop string) string {
	c.t.Helper()
	return strings.TrimSpace(c.must("systemctl", "show", "-p", prop, "--value", "fieldgate"))
}

// waitActive waits for the service to be active and its page ready.
func (c *container) waitActive() {
	c.t.Helper()
	waitFor(c.t, 60*time.Second, "fieldgate active and ready", func() (string, bool) {
		if c.show("ActiveState") != "active" {
			return "", false
		}
		st, _ := c.http("", "", "GET", "/readyz", "")
		return "", st == 200
	})
}

// http sends a request to the page (port 80) from inside the container's
// network namespace with curl, keeping cookies in jar.
func (c *container) http(jar, csrf, method, path, body string) (int, string) {
	c.t.Helper()
	args := []string{"-t", fmt.Sprint(c.pid), "-n", "--", "curl", "-s", "-m", "10", "-X", method, "-w", "\n%{http_code}"}
	if jar != "" {
		args = append(args, "-b", jar, "-c", jar)
	}
	if csrf != "" {
		args = append(args, "-H", "X-CSRF-Token: "+csrf)
	}
	if body != "" {
		args = append(args, "-H", "Content-Type: application/json", "--data-binary", body)
	}
	out, _ := exec.Command("nsenter", append(args, "http://127.0.0.1"+path)...).Output()
	s := strings.TrimRight(string(out), "\n")
	i := strings.LastIndex(s, "\n")
	code := 0
	fmt.Sscan(s[i+1:], &code)
	if i < 0 {
		return code, ""
	}
	return code, s[:i]
}

// need fails (or skips under SKIP_PEERS=1) where this machine cannot run
// the test: not root, no unshare/nsenter/curl/ip, no systemd, no overlayfs.
func need(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		peertest.Missing(t, "root (unshare of mount, pid, net and cgroup namespaces)", "run the tests as root, as make test does")
	}
	peertest.Need(t, "unshare", "util-linux")
	peertest.Need(t, "nsenter", "util-linux")
	peertest.Need(t, "curl", "curl")
	peertest.Need(t, "ip", "iproute2")
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		peertest.Missing(t, "/lib/systemd/systemd", "apt-get install systemd")
	}
	if !strings.Contains(readFile("/proc/filesystems"), "\toverlay\n") {
		peertest.Missing(t, "overlayfs in /proc/filesystems", "modprobe overlay")
	}
}

// cgroup2Mount is where the host's cgroup2 hierarchy is mounted.
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 2 && fields[2] == "cgroup2" {
			return fields[1]
		}
	}
	peertest.Missing(t, "a cgroup2 hierarchy", "mount -t cgroup2 none /sys/fs/cgroup/unified")
	return ""
}

// buildStage builds fieldgate and lays out dir/stage as the Yocto recipe
// installs it (fieldgate_git.bb do_install), plus the test's own: the
// target it boots, the watchdog drop-in and the masks.
func buildStage(t *testing.T, dir string) {
	t.Helper()
	s := filepath.Join(dir, "stage")
	bin := filepath.Join(s, "usr/bin/fieldgate")
	// A plain build shares the build cache with the other tests; the
	// container is the host's root, so its libc is there if cgo is on.
	build := exec.Command("go", "build", "-o", bin, "./cmd/fieldgate")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build fieldgate: %v\n%s", err, out)
	}
	install := func(src, dst string, mode os.FileMode) {
		data, err := os.ReadFile(filepath.Join(repo, src))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(s, dst), string(data), mode)
	}
	install("systemd/fieldgate.service", "usr/lib/systemd/system/fieldgate.service", 0o644)
	install("systemd/sysusers.d/fieldgate.conf", "usr/lib/sysusers.d/fieldgate.conf", 0o644)
	install("systemd/tmpfiles.d/fieldgate.conf", "usr/lib/tmpfiles.d/fieldgate.conf", 0o644)
	install("systemd/sysctl.d/60-fieldgate-quic.conf", "usr/lib/sysctl.d/60-fieldgate-quic.conf", 0o644)
	install("systemd/fieldgate.yaml", "etc/fieldgate/fieldgate.yaml", 0o644)
	etc := filepath.Join(s, "etc/systemd/system")
	// SYSTEMD_AUTO_ENABLE = "enable": WantedBy=multi-user.target.
	symlink(t, "/usr/lib/systemd/system/fieldgate.service", filepath.Join(etc, "multi-user.target.wants/fieldgate.service"))
	writeFile(t, filepath.Join(etc, "fieldgate-test.target"), `[Unit]
Description=fieldgate under test
Requires=basic.target
After=basic.target
Wants=fieldgate.service
`, 0o644)
	writeFile(t, filepath.Join(etc, "fieldgate.service.d/watchdog-test.conf"), fmt.Sprintf("[Service]\nWatchdogSec=%ds\n", watchdogSec), 0o644)
	for _, target := range earlyTargets {
		for _, base := range []string{"/usr/lib/systemd/system", "/etc/systemd/system"} {
			entries, _ := os.ReadDir(filepath.Join(base, target+".wants"))
			for _, e := range entries {
				if !keep[e.Name()] {
					symlink(t, "/dev/null", filepath.Join(etc, e.Name()))
				}
			}
		}
	}
	// Generators (fstab, getty, …) read the host's settings: none run.
	gens, _ := os.ReadDir("/usr/lib/systemd/system-generators")
	for _, g := range gens {
		symlink(t, "/dev/null", filepath.Join(s, "etc/systemd/system-generators", g.Name()))
	}
	writeFile(t, filepath.Join(s, "etc/fstab"), "", 0o644)
}

func writeFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

// removeCgroup removes the test's cgroup and what systemd made below it,
// deepest first (the namespace's processes are gone by then).
func removeCgroup(t *testing.T, cg string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var dirs []string
		filepath.WalkDir(cg, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		var err error
		for i := len(dirs) - 1; i >= 0; i-- {
			if e := os.Remove(dirs[i]); e != nil && !os.IsNotExist(e) {
				err = e
			}
		}
		if err == nil || time.Now().After(deadline) {
			if err != nil {
				t.Errorf("cgroup %s left: %v", cg, err)
			}
			return
		}
		time.Sleep(100 * time.Millisecond) // processes still exiting: poll
	}
}

// waitFor polls f until it reports done, or fails after d naming what.
func waitFor[T any](t *testing.T, d time.Duration, what string, f func() (T, bool)) T {
	t.Helper()
	var v T
	if !testwait.Until(d, func() bool {
		var ok bool
		v, ok = f()
		return ok
	}) {
		t.Fatalf("no %s within %v", what, d)
	}
	return v
}

func readFile(p string) string {
	data, _ := os.ReadFile(p)
	return string(data)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func jsonField(t *testing.T, body, field string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("bad JSON %q: %v", body, err)
	}
	s, _ := m[field].(string)
	return s
}

func randomHex() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}
