package clock

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeOffset replaces the offset file atomically, as the fault suite does.
func writeOffset(t *testing.T, path, s string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// within reports whether got is want ± 5 s (the host clock moves meanwhile).
func within(got, want time.Time) bool {
	d := got.Sub(want)
	return d > -5*time.Second && d < 5*time.Second
}

func TestFileOffset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "offset")
	c := NewFileOffset(path)
	if now := c.Now(); !within(now, time.Now()) {
		t.Fatalf("missing file: Now %v, host %v", now, time.Now())
	}
	for _, tc := range []struct {
		file string
		want time.Duration
	}{
		{"1h", time.Hour},
		{" -1h\n", -time.Hour},
		{"", 0},
		{"90m", 90 * time.Minute},
	} {
		writeOffset(t, path, tc.file)
		deadline := time.Now().Add(5 * time.Second)
		for !within(c.Now(), time.Now().Add(tc.want)) {
			if time.Now().After(deadline) {
				t.Fatalf("file %q: Now %v, want host %+v", tc.file, c.Now(), tc.want)
			}
			time.Sleep(offsetRecheck) // polling the clock until it re-reads the file
		}
		if off, err := c.Offset(); off != tc.want || err != nil {
			t.Fatalf("file %q: Offset() = %v, %v", tc.file, off, err)
		}
	}
	// A malformed file keeps the last offset and reports the error.
	writeOffset(t, path, "an hour")
	deadline := time.Now().Add(5 * time.Second)
	for {
		off, err := c.Offset()
		if c.Now(); err != nil {
			if off != 90*time.Minute {
				t.Fatalf("malformed file: offset %v, want the last one (90m)", off)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("malformed file: no error reported")
		}
		time.Sleep(offsetRecheck)
	}
	if now := c.Now(); now.Round(0) != now {
		t.Error("Now carries a monotonic reading")
	}
}

func TestReadOffset(t *testing.T) {
	dir := t.TempDir()
	if d, err := ReadOffset(filepath.Join(dir, "none")); d != 0 || err != nil {
		t.Errorf("missing: %v, %v", d, err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("soon"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadOffset(bad); err == nil {
		t.Error("malformed: no error")
	}
}

func TestForProcess(t *testing.T) {
	t.Setenv(OffsetFileEnv, filepath.Join(t.TempDir(), "offset"))
	_, isFile := ForProcess(nil).(*FileOffset)
	if isFile != FaultInjection {
		t.Fatalf("ForProcess with %s set: FileOffset %v, build tag faultinject %v", OffsetFileEnv, isFile, FaultInjection)
	}
	t.Setenv(OffsetFileEnv, "")
	if _, ok := ForProcess(nil).(Real); !ok {
		t.Fatal("ForProcess without the variable is not Real")
	}
}
