package check

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestErrors(t *testing.T) {
	var e Errors
	if e.Err() != nil {
		t.Fatal("no problem, yet an error")
	}
	file := filepath.Join(t.TempDir(), "ok.pem")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.IntRange("n", 5, 1, 10)
	e.OneOf("mode", "a", "a", "b")
	e.Address("addr", ":1883", ":1883")
	if !e.Readable("cert", file) {
		t.Fatal("a regular file is not readable")
	}
	if e.Err() != nil {
		t.Fatalf("good values refused: %v", e.Err())
	}

	e.IntRange("n", 11, 1, 10)
	e.OneOf("mode", "c", "a", "b")
	e.Address("addr", "1883", ":1883")
	e.Address("addr2", ":http", ":1883")
	e.Readable("dir", t.TempDir())
	e.Readable("missing", filepath.Join(t.TempDir(), "nope"))
	e.Addf("x", "bad %d", 1)
	want := []string{
		"n: must be between 1 and 10, got 11",
		`mode: must be one of a, b, got "c"`,
		`addr: must be host:port (e.g. ":1883"), got "1883"`,
		`addr2: port must be a number between 0 and 65535, got "http"`,
		"dir: ",
		"missing: open ",
		"x: bad 1",
	}
	got := strings.Split(e.Err().Error(), "\n")
	if len(got) != len(want) {
		t.Fatalf("errors:\n%s", e.Err())
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("error %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
	if !errors.Is(e.Err(), os.ErrNotExist) {
		t.Error("Add does not keep the error wrapped")
	}
}
