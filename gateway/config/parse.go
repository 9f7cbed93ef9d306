package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
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
// duplicate keys and values of the wrong type are errors (*Error) naming the
// field's path, line and column. All such errors are returned, joined. Parse
// does not validate values; call Validate for that, or use ParseFile to have
// the problems Validate finds located in the YAML too.
func Parse(data []byte) (Config, error) {
	f, err := ParseFile("", data)
	if err != nil {
		return Config{}, err
	}
	return f.Config, nil
}

// File is a config parsed from YAML together with the position of every key
// and list item the YAML sets, so that a problem found after parsing (by
// Validate or Provision, which know only paths) can be pointed at its line.
type File struct {
	// Name names the file in errors ("fieldgate.yaml", "<stdin>"); empty
	// for a config without a name.
	Name string
	// Config is the file's values on top of Default().
	Config Config
	pos    positions
}

// ParseFile is Parse for a file named name: its errors are *Error values
// carrying name ("name:line:col: path: reason"), and the File it returns
// can locate later errors (Locate, Check).
func ParseFile(name string, data []byte) (*File, error) {
	d := decoder{file: name, pos: positions{}}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, d.missingVersion()
		}
		return nil, d.syntaxError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &Error{File: name, Pos: Pos{Line: extra.Line}, Err: errors.New("yaml: the file holds more than one document (found a second ---)")}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil, d.missingVersion()
	}
	if root.Kind != yaml.MappingNode {
		return nil, &Error{File: name, Pos: posOf(root), Path: "config", Err: errors.New("must be a mapping of keys to values")}
	}
	if err := d.checkVersion(root); err != nil {
		return nil, err
	}

	c := Default()
	d.decode(root, reflect.ValueOf(&c).Elem(), "")
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	return &File{Name: name, Config: c, pos: d.pos}, nil
}

// Locate returns err, what Validate or Provision said of f.Config (lines
// "path: reason", joined), with every line an *Error carrying f's name and
// the position of its field, or of the nearest enclosing key the file has;
// sorted by position. It returns nil for nil.
func (f *File) Locate(err error) error {
	return locateAll(err, f.Name, f.pos)
}

// Check validates f.Config and, when it is valid, provisions it (reads the
// files it names); the errors are located in the file.
func (f *File) Check() error {
	if err := f.Config.Validate(); err != nil {
		return f.Locate(err)
	}
	return f.Locate(f.Config.Provision())
}

// posOf is the position of a YAML node.
func posOf(n *yaml.Node) Pos { return Pos{Line: n.Line, Column: n.Column} }

func (d *decoder) missingVersion() error {
	return &Error{File: d.file, Path: "version", Err: fmt.Errorf("missing (this build knows version %d: start the file with \"version: %d\")", Version, Version)}
}

// syntaxLine matches yaml.v3's "line N: reason" after its "yaml: " prefix.
var syntaxLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// syntaxError makes a YAML syntax error an *Error at its line.
func (d *decoder) syntaxError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := syntaxLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: d.file, Pos: Pos{Line: line}, Err: errors.New("yaml: " + m[2])}
	}
	return &Error{File: d.file, Err: errors.New("yaml: " + msg)}
}

// checkVersion finds the top-level version key and checks it is known before
// anything else is interpreted.
func (d *decoder) checkVersion(root *yaml.Node) error {
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Value != "version" {
			continue
		}
		n, err := strconv.Atoi(v.Value)
		if v.Kind != yaml.ScalarNode || v.Tag != "!!int" || err != nil {
			return &Error{File: d.file, Pos: posOf(v), Path: "version", Err: fmt.Errorf("must be the number %d, got %q", Version, v.Value)}
		}
		if n != Version {
			return &Error{File: d.file, Pos: posOf(v), Path: "version", Err: fmt.Errorf("unsupported version %d, this build knows version %d", n, Version)}
		}
		return nil
	}
	return d.missingVersion()
}

// decoder walks a YAML node tree alongside the Go value it fills, so that
// every error can name the field's path and line.
type decoder struct {
	file  string    // the file's name for errors
	pos   positions // where each key and list item is
	errs  []error
	nodes int
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Pos: posOf(n), Path: path, Err: fmt.Errorf(format, args...)})
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
		// A scalar field is where its value is, as in a type error; a
		// section or a list is where its key is.
		if val.Kind == yaml.ScalarNode {
			d.pos[kpath] = posOf(val)
		} else {
			d.pos[kpath] = posOf(k)
		}
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
		epath := fmt.Sprintf("%s[%d]", path, i)
		d.pos[epath] = posOf(e)
		d.decode(e, s.Index(i), epath)
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
