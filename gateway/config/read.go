package config

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// MaxFileSize bounds a config file (4 MiB; the default config is about
// 20 KiB and a large site's a few hundred). A bigger file is refused before
// it is read, so that a wrong path or a hostile file cannot make the
// gateway or `fieldgate config check` spend seconds and gigabytes parsing
// it.
const MaxFileSize = 4 << 20

// ReadFile reads the config file at path, refusing one larger than
// MaxFileSize by its size before reading it (and, should it grow meanwhile
// or not be a regular file, after reading MaxFileSize+1 bytes).
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if info.Mode().IsRegular() && info.Size() > MaxFileSize {
		return nil, tooLarge(info.Size())
	}
	return ReadAll(f)
}

// ReadAll reads a config from r (stdin, an upload), reading at most
// MaxFileSize+1 bytes: more is refused.
func ReadAll(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, errors.New("config: larger than the 4 MiB limit")
	}
	return data, nil
}

// CheckSize refuses a config of n bytes when it is larger than MaxFileSize
// (e.g. the file a config change would write, which the next start must be
// able to read).
func CheckSize(n int) error {
	if n > MaxFileSize {
		return tooLarge(int64(n))
	}
	return nil
}

// tooLarge is the error for a config of size bytes.
func tooLarge(size int64) error {
	return fmt.Errorf("config: config file is %s, larger than the %d MiB limit", mib(size), MaxFileSize>>20)
}

// mib writes n bytes in MiB, with one decimal below 10 MiB.
func mib(n int64) string {
	if n < 10<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d MiB", n>>20)
}
