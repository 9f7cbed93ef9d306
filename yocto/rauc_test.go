package yocto

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/peertest"
)

// The layer's TEST-ONLY RAUC keys (fieldgate-appliance.conf's defaults).
const (
	testKeys       = layer + "/files/rauc-test-keys"
	layerKeyring   = testKeys + "/fieldgate-TEST-ONLY-ca.cert.pem"
	layerSignCert  = testKeys + "/fieldgate-TEST-ONLY-signing.cert.pem"
	layerSignKey   = testKeys + "/fieldgate-TEST-ONLY-signing.key.pem"
	raucSystemConf = layer + "/recipes-core/rauc/files/system.conf"
)

// raucPeers fails the test (skips it under SKIP_PEERS=1) when Debian's
// rauc or the tools the test makes its keys and image with are missing.
func raucPeers(t *testing.T) {
	t.Helper()
	peertest.Need(t, "rauc", "rauc")
	peertest.Need(t, "mksquashfs", "squashfs-tools")
	peertest.Need(t, "openssl", "openssl")
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		if _, err := os.Stat("/usr/sbin/mkfs.ext4"); err != nil {
			peertest.Missing(t, "mkfs.ext4", "apt-get install e2fsprogs")
		}
	}
}

// cmdOut runs a command in dir with a generous limit and returns its
// combined output and error.
func cmdOut(t *testing.T, dir, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+os.Getenv("PATH")+":/usr/sbin:/sbin")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	out, err := cmdOut(t, dir, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// testCA makes a CA and a bundle-signing certificate it issues, as a
// product's update CA would be made, under dir/name-*.pem. It returns the
// paths of the CA certificate, the signing certificate and its key.
func testCA(t *testing.T, dir, name string) (ca, cert, key string) {
	t.Helper()
	p := func(s string) string { return filepath.Join(dir, name+"-"+s) }
	mustRun(t, dir, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
		"-keyout", p("ca.key.pem"), "-out", p("ca.cert.pem"), "-days", "2",
		"-subj", "/O=fieldgate test/CN="+name+" update CA",
		"-addext", "basicConstraints=critical,CA:TRUE",
		"-addext", "keyUsage=critical,keyCertSign,cRLSign")
	mustRun(t, dir, "openssl", "req", "-newkey", "rsa:2048", "-nodes",
		"-keyout", p("signing.key.pem"), "-out", p("signing.csr"),
		"-subj", "/O=fieldgate test/CN="+name+" bundle signing")
	ext := p("ext.cnf")
	if err := os.WriteFile(ext, []byte("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, dir, "openssl", "x509", "-req", "-in", p("signing.csr"),
		"-CA", p("ca.cert.pem"), "-CAkey", p("ca.key.pem"), "-CAcreateserial",
		"-out", p("signing.cert.pem"), "-days", "2", "-extfile", ext)
	return p("ca.cert.pem"), p("signing.cert.pem"), p("signing.key.pem")
}

// bundleContent writes a bundle directory: a tiny ext4 root file system
// image (random content, so that the compressed bundle is not trivially
// small) and a manifest in the format and with the compatible string the
// layer's fieldgate-bundle recipe uses. It returns the directory and the
// sha256 of the image.
func bundleContent(t *testing.T, dir, compatible string) (string, string) {
	t.Helper()
	root := filepath.Join(dir, "rootfs")
	content := filepath.Join(dir, "content")
	for _, d := range []string{filepath.Join(root, "etc"), filepath.Join(root, "usr/bin"), content} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc/os-release"), []byte("ID=fieldgate\nVERSION_ID=0.1.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	noise := make([]byte, 64<<10)
	for i := range noise {
		noise[i] = byte(i*7919 + i/251*31 + i*i)
	}
	sum := sha256.Sum256(noise)
	noise = append(noise, sum[:]...)
	if err := os.WriteFile(filepath.Join(root, "usr/bin/fieldgate"), noise, 0o755); err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(content, "rootfs.ext4")
	mustRun(t, dir, "mkfs.ext4", "-q", "-F", "-d", root, "-L", "rootfs", image, "8M")
	manifest := "[update]\ncompatible=" + compatible + "\nversion=0.1.0\n\n[bundle]\nformat=verity\n\n[image.rootfs]\nfilename=rootfs.ext4\n"
	if err := os.WriteFile(filepath.Join(content, "manifest.raucm"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(data)
	return content, hex.EncodeToString(h[:])
}

// raucConf renders the layer's system.conf template as rauc-conf.bbappend
// does, with the keyring at keyring.
func raucConf(t *testing.T, dir, keyring string) string {
	t.Helper()
	tmpl := readFile(t, raucSystemConf)
	conf := strings.NewReplacer("@MACHINE@", "qemuarm64", "@DISK@", "/dev/vda",
		"@BOOTLOADER@", "noop", "@KEYRING@", keyring).Replace(tmpl)
	if regexp.MustCompile(`@[A-Z]+@`).MatchString(conf) {
		t.Fatalf("system.conf: a placeholder rauc-conf.bbappend does not fill in:\n%s", conf)
	}
	path := filepath.Join(dir, "system.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRaucBundle builds an update bundle with Debian's rauc from a tiny
// root file system image, signed with a CA made here, and checks that
// rauc accepts it with that CA as the keyring (directly and through the
// layer's system.conf) and refuses it with another CA's.
func TestRaucBundle(t *testing.T) {
	raucPeers(t)
	dir := t.TempDir()
	ca, cert, key := testCA(t, dir, "product")
	otherCA, _, _ := testCA(t, dir, "other")
	content, imageSum := bundleContent(t, dir, "fieldgate-qemuarm64")
	bundle := filepath.Join(dir, "update.raucb")
	mustRun(t, dir, "rauc", "bundle", "--cert", cert, "--key", key, content, bundle)

	info := mustRun(t, dir, "rauc", "info", "--keyring", ca, bundle)
	for _, want := range []string{"'fieldgate-qemuarm64'", "Bundle Format: \tverity", "Checksum:  " + imageSum, "CN = product bundle signing"} {
		if !strings.Contains(info, want) {
			t.Errorf("rauc info lacks %q:\n%s", want, info)
		}
	}
	// The layer's system.conf, with this CA as its keyring, accepts it too.
	if out, err := cmdOut(t, dir, "rauc", "info", "--conf", raucConf(t, dir, ca), bundle); err != nil {
		t.Errorf("rauc info with the layer's system.conf: %v\n%s", err, out)
	}
	// Another CA (and the layer's TEST-ONLY CA) refuses it.
	for name, keyring := range map[string]string{"another CA": otherCA, "the layer's TEST-ONLY CA": absPath(t, layerKeyring)} {
		out, err := cmdOut(t, dir, "rauc", "info", "--keyring", keyring, bundle)
		if err == nil {
			t.Errorf("rauc info accepted a bundle with %s as the keyring:\n%s", name, out)
		} else if !strings.Contains(out, "signature verification failed") {
			t.Errorf("rauc info with %s failed for another reason: %v\n%s", name, err, out)
		}
	}
	out, err := cmdOut(t, dir, "rauc", "info", "--conf", raucConf(t, t.TempDir(), otherCA), bundle)
	if err == nil || !strings.Contains(out, "signature verification failed") {
		t.Errorf("rauc info with system.conf naming another CA: err %v\n%s", err, out)
	}
	t.Logf("bundle of %d bytes, image sha256 %s", fileSize(t, bundle), imageSum)
}

// TestRaucLayerTestKeys checks the TEST-ONLY keys the layer signs test
// bundles with: a bundle signed with them is accepted by the keyring the
// test images install, and refused by a CA made here.
func TestRaucLayerTestKeys(t *testing.T) {
	raucPeers(t)
	dir := t.TempDir()
	otherCA, _, _ := testCA(t, dir, "other")
	content, _ := bundleContent(t, dir, "fieldgate-raspberrypi4-64")
	bundle := filepath.Join(dir, "update.raucb")
	certFile, keyFile, abs := absPath(t, layerSignCert), absPath(t, layerSignKey), absPath(t, layerKeyring)
	mustRun(t, dir, "rauc", "bundle", "--cert", certFile, "--key", keyFile, content, bundle)
	if out, err := cmdOut(t, dir, "rauc", "info", "--conf", raucConf(t, dir, abs), bundle); err != nil {
		t.Errorf("the layer's keyring refuses a bundle signed with the layer's TEST-ONLY key: %v\n%s", err, out)
	}
	if out, err := cmdOut(t, dir, "rauc", "info", "--keyring", otherCA, bundle); err == nil || !strings.Contains(out, "signature verification failed") {
		t.Errorf("another CA accepted a bundle signed with the TEST-ONLY key: err %v\n%s", err, out)
	}
	// The committed keys are clearly test keys, and the key is the one the
	// certificate is for.
	for _, f := range []string{layerKeyring, layerSignCert, layerSignKey} {
		if !strings.Contains(filepath.Base(f), "TEST-ONLY") {
			t.Errorf("%s: a committed RAUC key or certificate is not named TEST-ONLY", f)
		}
	}
	certPub := mustRun(t, dir, "openssl", "x509", "-in", certFile, "-noout", "-pubkey")
	keyPub := mustRun(t, dir, "openssl", "pkey", "-in", keyFile, "-pubout")
	if certPub != keyPub {
		t.Errorf("%s is not the key of %s", layerSignKey, layerSignCert)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func absPath(t *testing.T, path string) string {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}
