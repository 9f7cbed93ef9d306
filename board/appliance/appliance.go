// Package appliance keeps the appliance's life-cycle state on the data
// partition: where the saved config lives, the one-time first-boot setup
// code, the lock that makes one gateway the owner of a data directory, and
// the factory reset (its request marker and the wipe).
//
// Everything here is a file under the data directory, so that it survives
// reboots and updates (the data partition is kept by an update) and a
// factory reset removes it with the rest.
package appliance

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/internal/atomicfile"
)

// Names under the data directory.
const (
	// ConfigDir holds the saved config (SavedConfig).
	ConfigDir = "config"
	// ConfigFile is the saved config's name in ConfigDir.
	ConfigFile = "fieldgate.yaml"
	// SetupCodeFile holds the first-boot setup code (mode 0600) until the
	// first-boot setup is done.
	SetupCodeFile = "setup-code"
	// ResetMarkerFile asks the next start to wipe the data directory
	// (written by the page's factory reset before the gateway exits).
	ResetMarkerFile = "factory-reset"
	// LockFile is locked (flock) by the gateway that owns the directory.
	LockFile = "fieldgate.lock"
)

// SavedConfig is where the gateway saves its config under dataDir:
// dataDir/config/fieldgate.yaml.
func SavedConfig(dataDir string) string {
	return filepath.Join(dataDir, ConfigDir, ConfigFile)
}

// RequestReset leaves the marker that makes the next start (Reset) wipe
// dataDir. It is written atomically: a power cut leaves it or nothing.
func RequestReset(dataDir string, now time.Time) error {
	data := []byte("factory reset requested at " + now.UTC().Format(time.RFC3339) + "\n")
	if err := atomicfile.Write(filepath.Join(dataDir, ResetMarkerFile), data, 0o600); err != nil {
		return fmt.Errorf("appliance: request factory reset: %w", err)
	}
	return nil
}

// ResetRequested reports whether RequestReset left its marker in dataDir.
func ResetRequested(dataDir string) bool {
	_, err := os.Lstat(filepath.Join(dataDir, ResetMarkerFile))
	return err == nil
}

// Wipe removes everything the gateway keeps: every entry of dataDir (the
// saved config, the web credentials, the database and outbox, uploaded
// certificates, the setup code) but the lock file and a file system's
// lost+found, and savedConfig when it lies outside dataDir ("" = none).
// The reset marker goes last, so that a wipe cut short by a power cut is
// done again at the next start. It returns the names removed.
func Wipe(dataDir, savedConfig string) ([]string, error) {
	entries, err := os.ReadDir(dataDir)
	if errors.Is(err, os.ErrNotExist) {
		entries = nil
	} else if err != nil {
		return nil, fmt.Errorf("appliance: wipe %s: %w", dataDir, err)
	}
	var removed []string
	var errs []error
	if savedConfig != "" && !within(dataDir, savedConfig) {
		switch err := os.Remove(savedConfig); {
		case err == nil:
			removed = append(removed, savedConfig)
		case !errors.Is(err, os.ErrNotExist):
			errs = append(errs, fmt.Errorf("appliance: remove %s: %w", savedConfig, err))
		}
	}
	for _, e := range entries {
		switch e.Name() {
		case LockFile, "lost+found", ResetMarkerFile:
			continue
		}
		p := filepath.Join(dataDir, e.Name())
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("appliance: remove %s: %w", p, err))
			continue
		}
		removed = append(removed, e.Name())
	}
	if len(errs) > 0 {
		return removed, errors.Join(errs...)
	}
	if err := os.Remove(filepath.Join(dataDir, ResetMarkerFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return removed, fmt.Errorf("appliance: remove the reset marker: %w", err)
	}
	if err := syncDir(dataDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return removed, fmt.Errorf("appliance: wipe %s: %w", dataDir, err)
	}
	return removed, nil
}

// within reports whether path lies inside dir.
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// syncDir makes the removals in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
