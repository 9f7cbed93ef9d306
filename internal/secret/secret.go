// Package secret holds credentials of the config (passwords, password
// hashes, pre-shared keys) in a type that never shows them: every way of
// printing, logging or encoding a String gives Redacted, and only Reveal
// gives the clear value, so that the few places that need it (the TLS or
// DTLS handshake, the MQTT CONNECT, the config file written to disk) are
// easy to find.
//
// A config field holds a secret when its type is String; code that walks a
// config (redaction, restoring kept secrets after an upload, the guard test
// that every password- or key-like field is one) goes by the type, not by
// a list of field names.
package secret

import (
	"encoding/json"
	"fmt"
	"log/slog"
)

// Redacted is what a secret looks like everywhere but where it is used: in
// the API's configs, the config download, the diagnostics bundle, logs and
// formatted output. An empty secret shows as "" (it says only "not set").
const Redacted = "<redacted>"

// String is a secret text. The zero value is the empty secret. Strings are
// comparable with ==, which compares the clear values (and whether each is
// a Kept placeholder).
type String struct {
	v string
	// kept marks the placeholder decoded from Redacted: "keep the secret
	// that is stored", resolved by the code that holds the stored one.
	kept bool
}

// New returns the secret s.
func New(s string) String { return String{v: s} }

// Reveal returns the clear value. Call it only where the secret is used
// (a handshake, a login, the config file) and never to log or show it.
func (s String) Reveal() string { return s.v }

// IsZero reports whether the secret is empty (and not a Kept placeholder).
func (s String) IsZero() bool { return s.v == "" && !s.kept }

// Kept reports whether s was decoded from Redacted: a config sent back with
// its secrets redacted asks to keep the stored value. Such a String has no
// value of its own; the code that parses an upload replaces it with the
// stored secret, and config validation refuses one that is left.
func (s String) Kept() bool { return s.kept }

// shown is what every output shows for s.
func (s String) shown() string {
	if s.IsZero() {
		return ""
	}
	return Redacted
}

// String returns Redacted (or "" for an empty secret).
func (s String) String() string { return s.shown() }

// GoString returns Redacted (or "" for an empty secret), for %#v.
func (s String) GoString() string { return fmt.Sprintf("secret.String(%q)", s.shown()) }

// Format writes Redacted (or nothing for an empty secret) for every verb,
// so that %s, %v, %+v, %q and %x alike never show the clear value.
func (s String) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		fmt.Fprintf(f, "%q", s.shown())
	case 'v':
		if f.Flag('#') {
			f.Write([]byte(s.GoString()))
			return
		}
		f.Write([]byte(s.shown()))
	default:
		f.Write([]byte(s.shown()))
	}
}

// LogValue makes slog show Redacted (or "" for an empty secret).
func (s String) LogValue() slog.Value { return slog.StringValue(s.shown()) }

// MarshalText returns Redacted (or nothing for an empty secret): every
// encoder that knows encoding.TextMarshaler shows no secret.
func (s String) MarshalText() ([]byte, error) { return []byte(s.shown()), nil }

// UnmarshalText takes the clear value; Redacted decodes to a Kept
// placeholder.
func (s *String) UnmarshalText(text []byte) error {
	if string(text) == Redacted {
		*s = String{kept: true}
		return nil
	}
	*s = String{v: string(text)}
	return nil
}

// MarshalJSON returns Redacted (or "" for an empty secret) as a JSON string.
func (s String) MarshalJSON() ([]byte, error) { return json.Marshal(s.shown()) }

// UnmarshalJSON takes the clear value from a JSON string; Redacted decodes
// to a Kept placeholder.
func (s *String) UnmarshalJSON(data []byte) error {
	var v string
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("secret: must be a string: %w", err)
	}
	return s.UnmarshalText([]byte(v))
}

// MarshalYAML returns Redacted (or "" for an empty secret). The config file
// itself is written by gateway/config, which reveals secrets explicitly.
func (s String) MarshalYAML() (any, error) { return s.shown(), nil }

// UnmarshalYAML takes the clear value from a YAML scalar; Redacted decodes
// to a Kept placeholder. (yaml.v3 calls this form with a decoder of the
// node, so this package needs no YAML import.)
func (s *String) UnmarshalYAML(unmarshal func(any) error) error {
	var v string
	if err := unmarshal(&v); err != nil {
		return err
	}
	return s.UnmarshalText([]byte(v))
}
