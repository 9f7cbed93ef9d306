package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fieldgate/fieldgate/internal/secret"
)

// maxNodes bounds the YAML nodes Parse visits, so that aliases cannot make a
// small file expand into a huge one ("billion laughs").
const maxNodes = 100_000

// Parse decodes a YAML config on top of Default(): omitted fields keep their
// defaults. It checks the version first, then decodes strictly: unknown keys,
// duplicate keys and values of the wrong type are errors naming the field's
// path and line. All such errors are returned, joined. Parse does not
// validate values; call Validate for that.
func Parse(data []byte) (Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return Config{}, missingVersion()
		}
		return Config{}, fmt.Errorf("yaml: %w", stripYAMLPrefix(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Config{}, errors.New("yaml: the file holds more than one document (found a second ---)")
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return Config{}, missingVersion()
	}
	if root.Kind != yaml.MappingNode {
		return Config{}, fmt.Errorf("config: must be a mapping of keys to values (line %d)", root.Line)
	}
	if err := checkVersion(root); err != nil {
		return Config{}, err
	}

	c := Default()
	d := decoder{}
	d.decode(root, reflect.ValueOf(&c).Elem(), "")
	if len(d.errs) > 0 {
		return Config{}, errors.Join(d.errs...)
	}
	return c, nil
}

func missingVersion() error {
	return fmt.Errorf("version: missing (this build knows version %d: start the file with \"version: %d\")", Version, Version)
}

// checkVersion finds the top-level version key and checks it is known before
// anything else is interpreted.
func checkVersion(root *yaml.Node) error {
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Value != "version" {
			continue
		}
		n, err := strconv.Atoi(v.Value)
		if v.Kind != yaml.ScalarNode || v.Tag != "!!int" || err != nil {
			return fmt.Errorf("version: must be the number %d, got %q (line %d)", Version, v.Value, v.Line)
		}
		if n != Version {
			return fmt.Errorf("version: unsupported version %d, this build knows version %d (line %d)", n, Version, v.Line)
		}
		return nil
	}
	return missingVersion()
}

// decoder walks a YAML node tree alongside the Go value it fills, so that
// every error can name the field's path and line.
type decoder struct {
	errs  []error
	nodes int
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, fmt.Errorf("%s: %s (line %d)", path, fmt.Sprintf(format, args...), n.Line))
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	secretType   = reflect.TypeFor[secret.String]()
)

// decode sets v from n. Structs are mappings whose keys are the fields'
// yaml tags; slices are sequences; everything else is a scalar decoded by
// yaml.v3.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	d.nodes++
	if d.nodes > maxNodes {
		if d.nodes == maxNodes+1 {
			d.errorf(n, "config", "too many values (more than %d, aliases included)", maxNodes)
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return
		}
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		// An empty value keeps the default, except that it empties a list.
		if v.Kind() == reflect.Slice {
			v.Set(reflect.Zero(v.Type()))
		}
		return
	}
	switch {
	case v.Type() == secretType:
		// A secret is a struct that decodes from one string.
		d.decodeScalar(n, v, path)
	case v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Struct:
		// An optional section (a Modbus device's tcp: or rtu:): present
		// means set. Decoded into a copy so the default is not shared.
		p := reflect.New(v.Type().Elem())
		if !v.IsNil() {
			p.Elem().Set(v.Elem())
		}
		d.decodeStruct(n, p.Elem(), path)
		v.Set(p)
	case v.Kind() == reflect.Struct:
		d.decodeStruct(n, v, path)
	case v.Kind() == reflect.Slice:
		d.decodeSlice(n, v, path)
	default:
		d.decodeScalar(n, v, path)
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, pathOr(path), "expected a mapping (key: value lines), got %s", describe(n))
		return
	}
	fields := fieldsOf(v)
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, pathOr(path), "keys must be plain names, got %s", describe(k))
			continue
		}
		kpath := join(path, k.Value)
		if k.Tag == "!!merge" {
			d.errorf(k, kpath, "merge keys are not supported: write the fields out")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errorf(k, kpath, "duplicate key, first defined at line %d", first)
			continue
		}
		seen[k.Value] = k.Line
		f, ok := fields[k.Value]
		if !ok {
			d.errorf(k, kpath, "unknown field")
			continue
		}
		d.decode(val, f, kpath)
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, pathOr(path), "expected a list, got %s", describe(n))
		return
	}
	if len(n.Content) == 0 {
		v.Set(reflect.Zero(v.Type()))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, e := range n.Content {
		d.decode(e, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
	}
	v.Set(s)
}

func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, path string) {
	want := kindName(v.Type())
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected %s, got %s", want, describe(n))
		return
	}
	// Decode into a fresh value so that a failed decode leaves v untouched.
	p := reflect.New(v.Type())
	if err := n.Decode(p.Interface()); err != nil {
		d.errorf(n, path, "expected %s, got %q", want, n.Value)
		return
	}
	v.Set(p.Elem())
}

// fieldsOf maps the yaml keys of the struct v to its fields, descending into
// fields tagged ",inline".
func fieldsOf(v reflect.Value) map[string]reflect.Value {
	fields := make(map[string]reflect.Value)
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") && sf.Type.Kind() == reflect.Struct {
			for k, f := range fieldsOf(v.Field(i)) {
				fields[k] = f
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		fields[name] = v.Field(i)
	}
	return fields
}

// kindName says in words what a Go type expects in YAML.
func kindName(t reflect.Type) string {
	if t == durationType {
		return "a duration such as 10s, 5m or 1h30m"
	}
	if t == secretType {
		return "a string"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	default:
		return t.String()
	}
}

// describe says in words what a YAML node is.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	default:
		return "something else"
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func pathOr(path string) string {
	if path == "" {
		return "config"
	}
	return path
}

// stripYAMLPrefix removes yaml.v3's "yaml: " so that it is not doubled.
func stripYAMLPrefix(err error) error {
	return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
}
