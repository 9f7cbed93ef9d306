package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fieldgate/fieldgate/internal/secret"
)

// Marshal returns c as a config file: every field under its YAML key, in
// declaration order, durations written the way they are read ("1m30s")
// rather than as nanoseconds. Parse(Marshal(c)) == c.
//
// Secrets (secret.String) are written in clear: this is the file the
// gateway reads back, and the one place that reveals them for output. What
// leaves the box (the API, the config download, the diagnostics bundle)
// goes through the secrets' own marshalling, which redacts them.
func Marshal(c Config) ([]byte, error) {
	n, err := node(reflect.ValueOf(c))
	if err != nil {
		return nil, err
	}
	return yaml.Marshal(n)
}

// node converts v to a YAML node.
func node(v reflect.Value) (*yaml.Node, error) {
	if v.Type() == durationType {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: time.Duration(v.Int()).String()}, nil
	}
	if v.Type() == secretType {
		s := v.Interface().(secret.String)
		if s.Kept() {
			return nil, errors.New("config: a secret is still the <redacted> placeholder")
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s.Reveal()}, nil
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
		}
		return node(v.Elem())
	case reflect.Struct:
		m := &yaml.Node{Kind: yaml.MappingNode}
		if err := addFields(m, v); err != nil {
			return nil, err
		}
		return m, nil
	case reflect.Slice, reflect.Array:
		s := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for i := range v.Len() {
			e, err := node(v.Index(i))
			if err != nil {
				return nil, err
			}
			if e.Kind != yaml.ScalarNode {
				s.Style = 0 // block style for lists of structs
			}
			s.Content = append(s.Content, e)
		}
		return s, nil
	case reflect.Map:
		m := &yaml.Node{Kind: yaml.MappingNode}
		iter := v.MapRange()
		for iter.Next() {
			k, err := node(iter.Key())
			if err != nil {
				return nil, err
			}
			val, err := node(iter.Value())
			if err != nil {
				return nil, err
			}
			m.Content = append(m.Content, k, val)
		}
		return m, nil
	default:
		var n yaml.Node
		if err := n.Encode(v.Interface()); err != nil {
			return nil, fmt.Errorf("config: encode %s: %w", v.Type(), err)
		}
		return &n, nil
	}
}

// yamlKey is how the YAML codec names struct field f: its key (the tag's
// name, else the lower-cased field name), whether it is ",inline", and
// false when the field is not in the YAML at all (unexported, or "-").
func yamlKey(f reflect.StructField) (name string, inline, ok bool) {
	if !f.IsExported() {
		return "", false, false
	}
	name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return "", false, false
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, strings.Contains(opts, "inline"), true
}

// addFields adds v's fields to the mapping m, descending into ",inline".
func addFields(m *yaml.Node, v reflect.Value) error {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, inline, ok := yamlKey(f)
		if !ok {
			continue
		}
		if inline {
			if err := addFields(m, v.Field(i)); err != nil {
				return err
			}
			continue
		}
		val, err := node(v.Field(i))
		if err != nil {
			return err
		}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: name}, val)
	}
	return nil
}
