package web

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/fieldgate/fieldgate/gateway/config"
	"github.com/fieldgate/fieldgate/internal/secret"
)

// Redacted replaces every secret in a config the API returns. A config sent
// back with Redacted in a secret field keeps the running value of that
// field, so a downloaded config can be edited and uploaded again without
// retyping passwords.
//
// A field is a secret by its type, secret.String, whose marshalling gives
// Redacted (and "" when unset): no list of secret field names to keep up to
// date, and nothing to forget when a section gains a secret.
const Redacted = secret.Redacted

// configMap returns c as the generic tree of its YAML form (what a config
// file holds), with secrets redacted and null fields removed. It is what
// the API returns as JSON.
func configMap(c config.Config) (map[string]any, error) {
	data, err := yaml.Marshal(c) // secret.String marshals as Redacted
	if err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	dropNulls(m)
	return m, nil
}

// dropNulls removes null values from maps, in place.
func dropNulls(v any) {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if x == nil {
				delete(t, k)
				continue
			}
			dropNulls(x)
		}
	case []any:
		for _, x := range t {
			dropNulls(x)
		}
	}
}

// configYAML returns the redacted config as a YAML file.
func configYAML(c config.Config) ([]byte, error) {
	m, err := configMap(c)
	if err != nil {
		return nil, err
	}
	data, err := yaml.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return append([]byte("# fieldgate config (secrets redacted: uploading it back keeps them)\n"), data...), nil
}

// parseConfig parses an uploaded config (YAML or JSON, which is YAML too)
// and puts back the running value of every secret sent as Redacted.
func parseConfig(data []byte, running config.Config) (config.Config, error) {
	c, err := config.Parse(data)
	if err != nil {
		return config.Config{}, err
	}
	restoreSecrets(reflect.ValueOf(&c).Elem(), reflect.ValueOf(running))
	return c, nil
}

// lineRef matches the line references of parse errors, which mean nothing
// when the YAML was generated from a JSON section.
var lineRef = regexp.MustCompile(` \(line \d+(, column \d+)?\)`)

// withSection returns the running config with the section at path (dotted
// YAML keys, e.g. "uplink" or "southbound.modbus") replaced by section,
// parsed strictly and with redacted secrets restored.
func withSection(running config.Config, path string, section any) (config.Config, error) {
	m, err := sectionTree(running, path, section)
	if err != nil {
		return config.Config{}, err
	}
	data, err := yaml.Marshal(m)
	if err != nil {
		return config.Config{}, fmt.Errorf("encode config: %w", err)
	}
	c, err := parseConfig(data, running)
	if err != nil {
		var lines []error
		for _, l := range strings.Split(err.Error(), "\n") {
			lines = append(lines, errors.New(lineRef.ReplaceAllString(l, "")))
		}
		return config.Config{}, errors.Join(lines...)
	}
	return c, nil
}

// sectionTree is the running config as its generic YAML tree with the
// section at path replaced by section.
func sectionTree(running config.Config, path string, section any) (map[string]any, error) {
	m, err := configMap(running)
	if err != nil {
		return nil, err
	}
	keys := strings.Split(path, ".")
	node := m
	for _, k := range keys[:len(keys)-1] {
		next, ok := node[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			node[k] = next
		}
		node = next
	}
	node[keys[len(keys)-1]] = section
	return m, nil
}

// restoreSecrets walks next and old (same type) in parallel and puts old's
// value into every secret of next that was sent as Redacted (a Kept
// secret.String). Elements of slices of structs are matched by their
// username, name or identity field when they have one (users and PSKs may
// be reordered), by index otherwise. A Kept secret without a counterpart
// stays Kept, and validation refuses it with its path: the caller must type
// that secret.
func restoreSecrets(next, old reflect.Value) {
	if next.Type() == secretType {
		if next.Interface().(secret.String).Kept() && old.IsValid() {
			next.Set(old)
		}
		return
	}
	switch next.Kind() {
	case reflect.Pointer:
		if next.IsNil() {
			return
		}
		if old.Kind() != reflect.Pointer || old.IsNil() {
			restoreSecrets(next.Elem(), reflect.Value{})
			return
		}
		restoreSecrets(next.Elem(), old.Elem())
	case reflect.Struct:
		for i := range next.NumField() {
			if !next.Type().Field(i).IsExported() {
				continue
			}
			var of reflect.Value
			if old.IsValid() {
				of = old.Field(i)
			}
			restoreSecrets(next.Field(i), of)
		}
	case reflect.Slice:
		for i := range next.Len() {
			restoreSecrets(next.Index(i), counterpart(next.Index(i), old, i))
		}
	case reflect.Map:
		// No secret lives in a map in the config schema (a test in
		// gateway/config checks it).
	}
}

var secretType = reflect.TypeFor[secret.String]()

// counterpart finds the element of old matching elem: same Username, Name
// or Identity field for structs that have one, else the same index.
func counterpart(elem, old reflect.Value, i int) reflect.Value {
	if !old.IsValid() {
		return reflect.Value{}
	}
	if elem.Kind() == reflect.Struct {
		for _, key := range []string{"Username", "Name", "Identity"} {
			f := elem.FieldByName(key)
			if !f.IsValid() || f.Kind() != reflect.String {
				continue
			}
			for j := range old.Len() {
				if old.Index(j).FieldByName(key).String() == f.String() {
					return old.Index(j)
				}
			}
			return reflect.Value{}
		}
	}
	if i < old.Len() {
		return old.Index(i)
	}
	return reflect.Value{}
}

// FieldError is one problem of a request, tied to the field at fault
// (a config path such as "uplink.servers[0].host", or a request field).
type FieldError struct {
	Field string `json:"field"`
	Error string `json:"error"`
	// Words is the whole error as the page shows it: where, in the forms'
	// words, then the reason ("Device 2 “boiler”, point “temp”: Scale must
	// be a number"). See errwords.go.
	Words string `json:"words,omitempty"`
}

// fieldErrors splits an error of "path: reason" lines into field errors,
// with their words (list elements by number only: fieldErrorsIn names
// them). Lines without a path get the field "".
func fieldErrors(err error) []FieldError {
	return describeFields(nil, splitFieldErrors(err))
}

// fieldErrorsIn is fieldErrors for an error of the config tree (a
// configMap, or a sectionTree): its list elements are named ("Device 2
// “boiler”").
func fieldErrorsIn(tree map[string]any, err error) []FieldError {
	return describeFields(tree, splitFieldErrors(err))
}

// configFieldErrors is fieldErrorsIn for an error of c.
func configFieldErrors(c config.Config, err error) []FieldError {
	tree, _ := configMap(c)
	return fieldErrorsIn(tree, err)
}

// sectionFieldErrors is fieldErrorsIn for an error of the running config
// with a section replaced (see withSection).
func sectionFieldErrors(running config.Config, path string, section any, err error) []FieldError {
	tree, _ := sectionTree(running, path, section)
	return fieldErrorsIn(tree, err)
}

func splitFieldErrors(err error) []FieldError {
	var out []FieldError
	for _, l := range strings.Split(err.Error(), "\n") {
		if l == "" {
			continue
		}
		path, reason, ok := strings.Cut(l, ": ")
		if !ok || strings.ContainsAny(path, " \t") {
			out = append(out, FieldError{Error: l})
			continue
		}
		out = append(out, FieldError{Field: path, Error: reason})
	}
	return out
}
