package config

import (
	"fmt"
	"reflect"

	"github.com/fieldgate/fieldgate/internal/secret"
)

// SecretField is one secret of a config: its path as in the file
// ("coap.dtls.psk[0].key") and the field itself.
type SecretField struct {
	Path  string
	Value *secret.String
}

// SecretFields returns every secret (every field of type secret.String) of
// c that is present: list entries and set optional sections included. The
// pointers point into c, so a caller may replace the values.
func (c *Config) SecretFields() []SecretField {
	var out []SecretField
	walkSecrets(reflect.ValueOf(c).Elem(), "", func(path string, s *secret.String) {
		out = append(out, SecretField{Path: path, Value: s})
	})
	return out
}

// walkSecrets calls fn for every secret.String reachable from v (which
// must be addressable), with its path of YAML keys.
func walkSecrets(v reflect.Value, path string, fn func(path string, s *secret.String)) {
	if v.Type() == secretType {
		fn(path, v.Addr().Interface().(*secret.String))
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			walkSecrets(v.Elem(), path, fn)
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name, inline, ok := yamlKey(f)
			if !ok {
				continue
			}
			if inline {
				walkSecrets(v.Field(i), path, fn)
				continue
			}
			walkSecrets(v.Field(i), join(path, name), fn)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			walkSecrets(v.Index(i), fmt.Sprintf("%s[%d]", path, i), fn)
		}
	case reflect.Map:
		// Map values are not addressable; the schema keeps no secret in a
		// map (the guard test in this package checks it).
	}
}
