package appliance

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSetupCodeLifecycle(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadSetupCode(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("no code yet: %v", err)
	}
	code, created, err := EnsureSetupCode(dir)
	if err != nil || !created {
		t.Fatalf("ensure: %q %v %v", code, created, err)
	}
	if len(code) != 11 || code[5] != '-' {
		t.Fatalf("code %q: want XXXXX-XXXXX", code)
	}
	info, err := os.Stat(filepath.Join(dir, SetupCodeFile))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("code file: %v %v", info, err)
	}
	again, created, err := EnsureSetupCode(dir)
	if err != nil || created || again != code {
		t.Fatalf("second ensure: %q %v %v, want %q kept", again, created, err, code)
	}
	for _, got := range []string{code, strings.ToLower(code), strings.ReplaceAll(code, "-", " ")} {
		if !CheckSetupCode(code, got) {
			t.Errorf("CheckSetupCode(%q) = false", got)
		}
	}
	for _, got := range []string{"", "ABCDE-FGHJK", code[:10], code + "2"} {
		if CheckSetupCode(code, got) {
			t.Errorf("CheckSetupCode(%q) = true", got)
		}
	}
	if CheckSetupCode("", "") {
		t.Error("an empty code matched")
	}
	if err := RemoveSetupCode(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSetupCode(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after remove: %v", err)
	}
	// Codes differ and use only the unambiguous alphabet.
	seen := map[string]bool{}
	for range 200 {
		c := newCode()
		if seen[c] || strings.ContainsAny(c, "01IO") {
			t.Fatalf("code %q repeated or ambiguous", c)
		}
		seen[c] = true
	}
}

func TestReadSetupCodeRefusesGarbage(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, SetupCodeFile), []byte("short\n"), 0o600)
	if _, err := ReadSetupCode(dir); err == nil || errors.Is(err, os.ErrNotExist) {
		t.Fatalf("garbage code file: %v", err)
	}
}

func TestWipeKeepsLockAndLostFound(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "fieldgate.yaml")
	for _, p := range []string{SavedConfig(dir), filepath.Join(dir, "web-auth.json"), filepath.Join(dir, "outbox", "seg-1"), filepath.Join(dir, "lost+found", "x"), outside} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	if err := RequestReset(dir, time.Now()); err != nil || !ResetRequested(dir) {
		t.Fatalf("request: %v", err)
	}
	removed, err := Wipe(dir, outside)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	if want := []string{ConfigDir, "outbox", "web-auth.json"}; len(removed) != 4 || !slices.Equal(removed[1:], want) || removed[0] != outside {
		t.Fatalf("removed %v", removed)
	}
	left, _ := os.ReadDir(dir)
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{LockFile, "lost+found"}) {
		t.Fatalf("left %v", names)
	}
	if _, err := os.Stat(outside); !errors.Is(err, os.ErrNotExist) || ResetRequested(dir) {
		t.Fatalf("outside config or marker left: %v", err)
	}
}

func TestLockIsExclusive(t *testing.T) {
	dir := t.TempDir()
	l, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(dir); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pid") {
		t.Fatalf("second lock: %v", err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	l2, err := Lock(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	l2.Unlock()
}
