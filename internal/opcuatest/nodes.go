package opcuatest

import (
	"strconv"
	"time"

	"github.com/gopcua/opcua/ua"
)

// NodeIds of the server's address space (testdata/opcua/server.mjs). All
// live in namespace 1, the server's own, with string identifiers, under
// Objects/Test. Variables are read/write unless said otherwise.
const (
	NodeTest     = "ns=1;s=Test"         // folder Objects/Test
	NodeScalars  = "ns=1;s=Test.Scalars" // folder with one variable per built-in scalar type (Scalars)
	NodeArrays   = "ns=1;s=Test.Arrays"  // folder with the array variables
	NodeDynamic  = "ns=1;s=Test.Dynamic" // folder with Counter and Sine
	NodeWritable = "ns=1;s=Test.Writable"

	NodeDoubleArray = "ns=1;s=Test.DoubleArray" // Double[] {1.5, -2.25, 3}
	NodeInt32Array  = "ns=1;s=Test.Int32Array"  // Int32[] {1, -2, 3, 2147483647}
	NodeStringArray = "ns=1;s=Test.StringArray" // String[] {"a", "b", "ç"}

	// NodeCounter is a read-only UInt32 incremented every 100 ms.
	NodeCounter = "ns=1;s=Test.Counter"
	// NodeSine is a read-only Double, sin(2πt/10 s), updated every 100 ms.
	NodeSine = "ns=1;s=Test.Sine"

	// NodeSetpoint is a writable Double AnalogItem (initially 20) with
	// EURange and InstrumentRange 0..100; a write outside is refused with
	// BadOutOfRange. A write of another type gets BadTypeMismatch.
	NodeSetpoint = "ns=1;s=Test.Setpoint"
	// NodeWritableInt16 is a writable Int16, initially 7.
	NodeWritableInt16 = "ns=1;s=Test.WritableInt16"
	// NodeReadOnly is a read-only Double 42.5: writes get BadNotWritable.
	NodeReadOnly = "ns=1;s=Test.ReadOnly"

	// NodeFlaky is a read-only Double whose status toggles every
	// Options.FlakyPeriod: Good with value 1, then BadSensorFailure with
	// value 0.
	NodeFlaky = "ns=1;s=Test.Flaky"
	// NodeFaulty is a read-only Double 5, status BadSensorFailure while
	// NodeFaultyBad is true, Good otherwise.
	NodeFaulty = "ns=1;s=Test.Faulty"
	// NodeFaultyBad is a writable Boolean (initially false) that drives
	// NodeFaulty's status: the test's "make it bad" command.
	NodeFaultyBad = "ns=1;s=Test.FaultyBad"

	// A hierarchy to browse: Test/Tree (folder)/Plant (folder)/Line1
	// (folder)/Press4 (object) with the variables Temp (Double 81.25) and
	// Running (Boolean true).
	NodeTree          = "ns=1;s=Test.Tree"
	NodePlant         = "ns=1;s=Test.Tree.Plant"
	NodeLine1         = "ns=1;s=Test.Tree.Plant.Line1"
	NodePress4        = "ns=1;s=Test.Tree.Plant.Line1.Press4"
	NodePress4Temp    = "ns=1;s=Test.Tree.Plant.Line1.Press4.Temp"
	NodePress4Running = "ns=1;s=Test.Tree.Plant.Line1.Press4.Running"

	// NodeBench is the folder of the Options.BenchVariables variables
	// (see BenchNode).
	NodeBench = "ns=1;s=Test.Bench"
)

// BenchNode returns the NodeId of bench variable i: a read-only Double set
// to the same increasing count (1, 2, 3…) every Options.BenchInterval.
func BenchNode(i int) string { return "ns=1;s=Test.Bench." + strconv.Itoa(i) }

// Scalar is one variable of a built-in scalar type, in Test/Scalars.
type Scalar struct {
	Type string // OPC UA built-in type name, also the browse name
	Node string // NodeId, "ns=1;s=Test.<Type>"
	// Want is the initial value as gopcua's Variant.Value() returns it.
	Want any
}

// Scalars lists one variable per OPC UA built-in scalar type.
var Scalars = []Scalar{
	{"Boolean", "ns=1;s=Test.Boolean", true},
	{"SByte", "ns=1;s=Test.SByte", int8(-100)},
	{"Byte", "ns=1;s=Test.Byte", uint8(200)},
	{"Int16", "ns=1;s=Test.Int16", int16(-30000)},
	{"UInt16", "ns=1;s=Test.UInt16", uint16(60000)},
	{"Int32", "ns=1;s=Test.Int32", int32(-2000000000)},
	{"UInt32", "ns=1;s=Test.UInt32", uint32(4000000000)},
	{"Int64", "ns=1;s=Test.Int64", int64(-4294967298)},
	{"UInt64", "ns=1;s=Test.UInt64", uint64(4294967298)},
	{"Float", "ns=1;s=Test.Float", float32(3.5)},
	{"Double", "ns=1;s=Test.Double", 2.718281828459045},
	{"String", "ns=1;s=Test.String", "héllo OPC UA"},
	{"DateTime", "ns=1;s=Test.DateTime", time.Date(2024, 5, 6, 7, 8, 9, 123e6, time.UTC)},
	{"Guid", "ns=1;s=Test.Guid", ua.NewGUID("72962B91-FA75-4AE6-8D28-B404DC7DAF63")},
	{"ByteString", "ns=1;s=Test.ByteString", []byte{0x00, 0x01, 0xfe, 0xff}},
	{"LocalizedText", "ns=1;s=Test.LocalizedText", ua.NewLocalizedTextWithLocale("Hello", "en")},
	{"QualifiedName", "ns=1;s=Test.QualifiedName", &ua.QualifiedName{NamespaceIndex: 1, Name: "Quality"}},
	{"NodeId", "ns=1;s=Test.NodeId", ua.NewStringNodeID(1, "Test.Double")},
	{"StatusCode", "ns=1;s=Test.StatusCode", ua.StatusBadOutOfRange},
}
