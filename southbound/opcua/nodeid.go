package opcua

import (
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gopcua/opcua/ua"
)

// maxNodeIDLength bounds a NodeId or browse path string.
const maxNodeIDLength = 4096

var guidPattern = regexp.MustCompile(`^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$`)

// ParseNodeID parses a NodeId in the OPC UA string form: an optional
// "ns=<0-65535>;" and one of "i=<0-4294967295>", "s=<text>",
// "g=<xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx>" or "b=<base64>". Namespace
// URIs (nsu=) and server indexes (svr=) are refused: name the namespace by
// its index.
func ParseNodeID(s string) (*ua.NodeID, error) {
	if s == "" {
		return nil, errors.New("empty NodeId")
	}
	if len(s) > maxNodeIDLength || !utf8.ValidString(s) {
		return nil, fmt.Errorf("a NodeId is UTF-8 of at most %d bytes", maxNodeIDLength)
	}
	ns := uint16(0)
	rest := s
	switch {
	case strings.HasPrefix(rest, "nsu="):
		return nil, fmt.Errorf("%q: namespace URIs (nsu=) are not supported, use ns=<index>", s)
	case strings.HasPrefix(rest, "svr="):
		return nil, fmt.Errorf("%q: server indexes (svr=) are not supported", s)
	case strings.HasPrefix(rest, "ns="):
		num, after, ok := strings.Cut(rest[3:], ";")
		if !ok {
			return nil, fmt.Errorf("%q: ns=<index> must be followed by ';' and the identifier, e.g. ns=2;s=Boiler.Temp", s)
		}
		n, err := strconv.ParseUint(num, 10, 16)
		if err != nil || num == "" || num[0] == '+' {
			return nil, fmt.Errorf("%q: the namespace index must be a number from 0 to 65535, got %q", s, num)
		}
		ns, rest = uint16(n), after
	}
	if len(rest) < 2 || rest[1] != '=' {
		return nil, fmt.Errorf("%q: the identifier must be i=<number>, s=<text>, g=<guid> or b=<base64>", s)
	}
	id := rest[2:]
	switch rest[0] {
	case 'i':
		n, err := strconv.ParseUint(id, 10, 32)
		if err != nil || id == "" || id[0] == '+' {
			return nil, fmt.Errorf("%q: i= takes a number from 0 to 4294967295, got %q", s, id)
		}
		return ua.NewNumericNodeID(ns, uint32(n)), nil
	case 's':
		if id == "" {
			return nil, fmt.Errorf("%q: s= takes a non-empty text", s)
		}
		return ua.NewStringNodeID(ns, id), nil
	case 'g':
		if !guidPattern.MatchString(id) {
			return nil, fmt.Errorf("%q: g= takes a GUID like 72962B91-FA75-4AE6-8D28-B404DC7DAF63, got %q", s, id)
		}
		return ua.NewGUIDNodeID(ns, id), nil
	case 'b':
		b, err := base64.StdEncoding.DecodeString(id)
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("%q: b= takes non-empty standard base64, got %q", s, id)
		}
		return ua.NewByteStringNodeID(ns, b), nil
	}
	return nil, fmt.Errorf("%q: the identifier must be i=<number>, s=<text>, g=<guid> or b=<base64>", s)
}

// formatNodeID is the string form of id that ParseNodeID reads back.
func formatNodeID(id *ua.NodeID) string {
	if id == nil {
		return ""
	}
	if id.Type() == ua.NodeIDTypeGUID {
		g := strings.ToUpper(id.StringID())
		if id.Namespace() == 0 {
			return "g=" + g
		}
		return fmt.Sprintf("ns=%d;g=%s", id.Namespace(), g)
	}
	return id.String()
}

// ParseBrowsePath parses a browse path from the Objects folder: browse
// names separated by '/', each "<namespace index>:<name>" (a name without
// index is in namespace 0). A leading '/' is allowed. In a name, '&'
// escapes the next character, so "&/" is a '/', "&:" a ':' and "&&" a '&'.
func ParseBrowsePath(s string) ([]*ua.QualifiedName, error) {
	if len(s) > maxNodeIDLength || !utf8.ValidString(s) {
		return nil, fmt.Errorf("a browse path is UTF-8 of at most %d bytes", maxNodeIDLength)
	}
	s = strings.TrimPrefix(s, "/")
	if s == "" {
		return nil, errors.New("empty browse path: name the browse names from Objects, e.g. 2:Boiler/2:Temp")
	}
	var out []*ua.QualifiedName
	var elem []byte
	colon := -1 // position in elem of the first unescaped ':'
	flush := func() error {
		if len(elem) == 0 {
			return fmt.Errorf("browse path %q has an empty element", s)
		}
		q := &ua.QualifiedName{Name: string(elem)}
		if colon >= 0 {
			num := string(elem[:colon])
			n, err := strconv.ParseUint(num, 10, 16)
			if err != nil || num == "" || num[0] == '+' {
				return fmt.Errorf("browse path %q: %q must start with a namespace index from 0 to 65535 and ':'", s, string(elem))
			}
			q.NamespaceIndex, q.Name = uint16(n), string(elem[colon+1:])
			if q.Name == "" {
				return fmt.Errorf("browse path %q: %q has no name after the ':'", s, string(elem))
			}
		}
		out = append(out, q)
		elem, colon = elem[:0:0], -1
		return nil
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '&':
			if i+1 == len(s) {
				return nil, fmt.Errorf("browse path %q ends with a lone '&'", s)
			}
			i++
			elem = append(elem, s[i])
		case c == '/':
			if err := flush(); err != nil {
				return nil, err
			}
		case c == ':' && colon < 0:
			colon = len(elem)
			elem = append(elem, c)
		default:
			elem = append(elem, c)
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	if len(out) > 64 {
		return nil, fmt.Errorf("browse path %q has more than 64 elements", s)
	}
	return out, nil
}

// formatBrowseName is a browse name as one element of a browse path.
func formatBrowseName(q *ua.QualifiedName) string {
	if q == nil {
		return ""
	}
	r := strings.NewReplacer("&", "&&", "/", "&/", ":", "&:")
	return strconv.Itoa(int(q.NamespaceIndex)) + ":" + r.Replace(q.Name)
}

// builtin is an OPC UA built-in data type.
type builtin struct {
	id   ua.TypeID
	name string
}

// builtins are the built-in types by TypeID (which is also the numeric
// NodeId of the DataType in namespace 0).
var builtins = []builtin{
	{ua.TypeIDBoolean, "Boolean"}, {ua.TypeIDSByte, "SByte"}, {ua.TypeIDByte, "Byte"},
	{ua.TypeIDInt16, "Int16"}, {ua.TypeIDUint16, "UInt16"}, {ua.TypeIDInt32, "Int32"},
	{ua.TypeIDUint32, "UInt32"}, {ua.TypeIDInt64, "Int64"}, {ua.TypeIDUint64, "UInt64"},
	{ua.TypeIDFloat, "Float"}, {ua.TypeIDDouble, "Double"}, {ua.TypeIDString, "String"},
	{ua.TypeIDDateTime, "DateTime"}, {ua.TypeIDGUID, "Guid"}, {ua.TypeIDByteString, "ByteString"},
	{ua.TypeIDXMLElement, "XmlElement"}, {ua.TypeIDNodeID, "NodeId"}, {ua.TypeIDExpandedNodeID, "ExpandedNodeId"},
	{ua.TypeIDStatusCode, "StatusCode"}, {ua.TypeIDQualifiedName, "QualifiedName"},
	{ua.TypeIDLocalizedText, "LocalizedText"}, {ua.TypeIDExtensionObject, "ExtensionObject"},
	{ua.TypeIDDataValue, "DataValue"}, {ua.TypeIDVariant, "Variant"}, {ua.TypeIDDiagnosticInfo, "DiagnosticInfo"},
}

// typeByName finds a built-in type by name, case-insensitively.
func typeByName(name string) (builtin, bool) {
	for _, b := range builtins {
		if strings.EqualFold(b.name, name) {
			return b, true
		}
	}
	return builtin{}, false
}

// typeByID finds a built-in type by TypeID.
func typeByID(id ua.TypeID) (builtin, bool) {
	for _, b := range builtins {
		if b.id == id {
			return b, true
		}
	}
	return builtin{}, false
}

func typeNames() []string {
	names := make([]string, len(builtins))
	for i, b := range builtins {
		names[i] = b.name
	}
	return names
}

// dataTypeBuiltin maps a DataType NodeId to the built-in type its values
// travel as: the built-in types themselves (ns=0;i=1…25) and the common
// subtypes of namespace 0. ok is false for structures and unknown types.
func dataTypeBuiltin(id *ua.NodeID) (builtin, bool) {
	if id == nil || id.Namespace() != 0 || id.Type() == ua.NodeIDTypeString || id.Type() == ua.NodeIDTypeGUID || id.Type() == ua.NodeIDTypeByteString {
		return builtin{}, false
	}
	n := id.IntID()
	if n >= 1 && n <= 25 {
		return typeByID(ua.TypeID(n))
	}
	switch n {
	case 29: // Enumeration
		return typeByID(ua.TypeIDInt32)
	case 290: // Duration
		return typeByID(ua.TypeIDDouble)
	case 294: // UtcTime
		return typeByID(ua.TypeIDDateTime)
	case 295, 291: // LocaleId, NumericRange
		return typeByID(ua.TypeIDString)
	case 289: // Counter
		return typeByID(ua.TypeIDUint32)
	case 288: // IntegerId
		return typeByID(ua.TypeIDUint32)
	case 311, 30, 2000, 2001, 2002, 2003: // ApplicationInstanceCertificate, Image, ImageBMP/GIF/JPG/PNG
		return typeByID(ua.TypeIDByteString)
	}
	return builtin{}, false
}
