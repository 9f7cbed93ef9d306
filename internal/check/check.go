// Package check collects the problems a config section's Validate finds,
// each one line "path: reason", so that every part reports them the same
// way and all at once. A part embeds Errors in its own validator and adds
// the checks only it needs (topic filters, Modbus names, ...).
package check

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Errors is the list of problems found so far. The zero value is ready.
type Errors struct {
	errs []error
}

// Addf records a problem with the field at path.
func (e *Errors) Addf(path, format string, args ...any) {
	e.errs = append(e.errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

// Add records an error about the field at path, keeping it wrapped.
func (e *Errors) Add(path string, err error) {
	e.errs = append(e.errs, fmt.Errorf("%s: %w", path, err))
}

// Err returns every problem joined (one per line), or nil.
func (e *Errors) Err() error { return errors.Join(e.errs...) }

// IntRange checks lo <= got <= hi.
func (e *Errors) IntRange(path string, got, lo, hi int) {
	if got < lo || got > hi {
		e.Addf(path, "must be between %d and %d, got %d", lo, hi, got)
	}
}

// OneOf checks that got is one of allowed.
func (e *Errors) OneOf(path, got string, allowed ...string) {
	if !slices.Contains(allowed, got) {
		e.Addf(path, "must be one of %s, got %q", strings.Join(allowed, ", "), got)
	}
}

// Address checks a "host:port" with a numeric port; example is shown in
// the error (e.g. ":1883").
func (e *Errors) Address(path, addr, example string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		e.Addf(path, "must be host:port (e.g. %q), got %q", example, addr)
		return
	}
	if !e.Host(path, host) {
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		e.Addf(path, "port must be a number between 0 and 65535, got %q", port)
	}
}

// Host checks the host part of an address: a host of only digits and dots
// must be an IPv4 address. It reports whether the host is acceptable.
func (e *Errors) Host(path, host string) bool {
	if looksIPv4(host) && net.ParseIP(host) == nil {
		e.Addf(path, "%q is not an IPv4 address: four numbers 0-255 separated by dots", host)
		return false
	}
	return true
}

// looksIPv4 reports whether host is only digits and dots, which no host
// name can be (a top-level domain is never all digits): it is meant as an
// IPv4 address, so 192.168.1.300 is a typo, not a name to resolve.
func looksIPv4(host string) bool {
	if host == "" {
		return false
	}
	for _, r := range host {
		if (r < '0' || r > '9') && r != '.' {
			return false
		}
	}
	return true
}

// Readable checks that file is a readable regular file. It refuses devices
// and pipes, so that a config can never make validation block.
func (e *Errors) Readable(path, file string) bool {
	f, err := os.Open(file)
	if err != nil {
		e.Add(path, err)
		return false
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		e.Add(path, err)
		return false
	}
	if !info.Mode().IsRegular() {
		e.Addf(path, "%s is not a regular file", file)
		return false
	}
	return true
}
