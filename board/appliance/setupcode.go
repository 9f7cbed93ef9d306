package appliance

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/fieldgate/fieldgate/internal/atomicfile"
)

// codeAlphabet has no 0/O or 1/I: a code read off a serial console is
// typed back without doubt. 32 symbols, 5 bits each.
const codeAlphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"

// codeLen symbols make 50 random bits: with the page's doubling delay per
// address, guessing is out of reach.
const codeLen = 10

// EnsureSetupCode returns the setup code kept in dataDir/setup-code,
// creating one (mode 0600) when there is none; created tells which.
func EnsureSetupCode(dataDir string) (code string, created bool, err error) {
	code, err = ReadSetupCode(dataDir)
	if err == nil {
		return code, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", false, err
	}
	code = newCode()
	if err := atomicfile.Write(filepath.Join(dataDir, SetupCodeFile), []byte(code+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("appliance: write setup code: %w", err)
	}
	return code, true, nil
}

// ReadSetupCode returns the setup code in dataDir; an error wrapping
// os.ErrNotExist when there is none (setup done, or never started).
func ReadSetupCode(dataDir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dataDir, SetupCodeFile))
	if err != nil {
		return "", fmt.Errorf("appliance: read setup code: %w", err)
	}
	code := normalize(string(data))
	if len(code) != codeLen {
		return "", fmt.Errorf("appliance: setup code file %s: %d symbols, want %d", filepath.Join(dataDir, SetupCodeFile), len(code), codeLen)
	}
	return Format(code), nil
}

// RemoveSetupCode deletes the setup code once the first-boot setup is done.
func RemoveSetupCode(dataDir string) error {
	if err := os.Remove(filepath.Join(dataDir, SetupCodeFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("appliance: remove setup code: %w", err)
	}
	return nil
}

// CheckSetupCode reports whether got is the code want, ignoring case,
// spaces and dashes, in constant time for codes of the right length.
func CheckSetupCode(want, got string) bool {
	w, g := normalize(want), normalize(got)
	return len(w) == codeLen && subtle.ConstantTimeCompare([]byte(w), []byte(g)) == 1
}

// Format writes a code as two groups of five: "ABCDE-FGHJK".
func Format(code string) string {
	c := normalize(code)
	if len(c) != codeLen {
		return c
	}
	return c[:5] + "-" + c[5:]
}

// normalize upper-cases s and drops everything but letters and digits.
func normalize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(s) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// newCode draws codeLen symbols of codeAlphabet from crypto/rand.
func newCode() string {
	b := make([]byte, codeLen)
	rand.Read(b) // never fails (crypto/rand panics on broken systems)
	for i := range b {
		b[i] = codeAlphabet[int(b[i])%32]
	}
	return Format(string(b))
}
