// Package opcua reads OPC UA servers and publishes their values on the
// gateway bus with the same model as southbound/modbus, and writes
// set-points back to them.
//
// Each configured server gets one client session (github.com/gopcua/opcua,
// used only in this package). Points are named by NodeId ("ns=2;s=Boiler.Temp")
// or by a browse path from the Objects folder ("2:Boiler/2:Temp", resolved with
// TranslateBrowsePathsToNodeIds when the session starts). They are read with
// monitored items of one subscription per server (mode "subscribe", the
// default) or by periodic Read requests (mode "poll", and the fallback for a
// server or a point that refuses monitored items).
//
// Readings go to {prefix}/{server}/{point} as
// {"v":…,"ts":…,"q":"good|bad|stale","unit":…} with ts the value's
// SourceTimestamp in milliseconds, and "status" (the OPC UA status code, by
// name) when it is not Good. The server's status goes to
// {prefix}/{server}/status (retained, {"state":"online|offline",…}). Set
// commands are taken from {prefix}/{server}/{point}/set with the result on
// {prefix}/{server}/{point}/set/result, exactly like Modbus.
//
// Security: the gateway's application certificate is made on first use and
// kept in the data directory; a server's certificate is used only when it is
// in the trust directory (never trust-all). An untrusted server is refused
// with an *UntrustedError naming its SHA-1 thumbprint, which Trust adds.
package opcua

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/fieldgate/fieldgate/internal/secret"
)

// Origin is the bus Origin of everything this package publishes. Set
// messages carrying it are ignored.
const Origin = "$southbound/opcua"

// Qualities of a published value (the same words as Modbus).
const (
	QualityGood  = "good"  // the server said Good (or Uncertain: see the "status" field)
	QualityBad   = "bad"   // the server said Bad for this value
	QualityStale = "stale" // the server is unreachable: the value is the last good one (or null)
)

// Security policies (Security.Policy), as OPC UA names them.
const (
	PolicyNone                = "None"
	PolicyBasic256Sha256      = "Basic256Sha256"
	PolicyAes128Sha256RsaOaep = "Aes128_Sha256_RsaOaep"
	PolicyAes256Sha256RsaPss  = "Aes256_Sha256_RsaPss"
)

// Message security modes (Security.Mode).
const (
	SecurityModeNone           = "None"
	SecurityModeSign           = "Sign"
	SecurityModeSignAndEncrypt = "SignAndEncrypt"
)

// How a point is read (Point.Mode, Server.Mode).
const (
	// ModeSubscribe reads a point with a monitored item: the server sends
	// changes (the default).
	ModeSubscribe = "subscribe"
	// ModePoll reads a point with a Read request every interval.
	ModePoll = "poll"
)

// Deadband types (Point.DeadbandType).
const (
	// DeadbandAbsolute: a change smaller than Deadband (in the raw value's
	// units) is not reported (the default).
	DeadbandAbsolute = "absolute"
	// DeadbandPercent: Deadband is a percentage of the variable's EURange;
	// only the server can apply it (subscribed points only).
	DeadbandPercent = "percent"
)

// Error kinds counted in ServerStats.Errors.
const (
	ErrKindConnection   = "connection"   // dial, secure channel or session lost
	ErrKindTimeout      = "timeout"      // a request got no answer in time
	ErrKindSecurity     = "security"     // untrusted or invalid certificate, policy refused
	ErrKindAuth         = "auth"         // user token refused (wrong password, unknown user)
	ErrKindStatus       = "status"       // a Read or Write answered with a Bad status
	ErrKindResolve      = "resolve"      // a NodeId or browse path that the server does not know
	ErrKindSubscription = "subscription" // creating a subscription or monitored item failed
)

// Defaults applied to fields left at their zero value.
const (
	DefaultPrefix      = "southbound"
	DefaultInterval    = time.Second      // publishing interval and poll interval
	DefaultTimeout     = 5 * time.Second  // one request
	DefaultQueueSize   = 1                // monitored item queue
	DefaultMaxInFlight = 4                // concurrent requests per server
	DefaultReconnect   = time.Second      // first wait before a reconnect
	MaxReconnect       = 30 * time.Second // longest wait between reconnects
)

// Config is the OPC UA section of the gateway config (`southbound.opcua:`).
// Zero values mean the documented defaults.
type Config struct {
	// Prefix is the first topic level of everything published (default
	// "southbound", shared with Modbus: server and device names must
	// differ).
	Prefix string `yaml:"prefix"`
	// QoS of readings and results (0 or 1; default 0). Status is always
	// retained QoS 1.
	QoS int `yaml:"qos"`
	// Servers are the OPC UA servers read.
	Servers []Server `yaml:"servers"`
}

// Server is one OPC UA server and the points read from it.
type Server struct {
	// Name is the server's topic level: letters, digits, '-', '_', '.'.
	Name string `yaml:"name"`
	// Endpoint is the server's URL, opc.tcp://host:port[/path].
	Endpoint string `yaml:"endpoint"`
	// Security is the secure channel's policy and mode (default None/None).
	Security Security `yaml:"security"`
	// Auth is the user identity (default anonymous).
	Auth Auth `yaml:"auth"`
	// Mode is how points without a mode of their own are read:
	// "subscribe" (default) or "poll".
	Mode string `yaml:"mode"`
	// Interval is the subscription's publishing interval and the poll
	// interval (default 1s).
	Interval time.Duration `yaml:"interval"`
	// Timeout bounds one request (default 5s).
	Timeout time.Duration `yaml:"timeout"`
	// QueueSize is the monitored items' queue size on the server (default 1).
	QueueSize int `yaml:"queue_size"`
	// MaxInFlight bounds the requests sent and not yet answered (reads,
	// writes, browses; default 4).
	MaxInFlight int `yaml:"max_in_flight"`
	// Points are the values read from the server.
	Points []Point `yaml:"points"`
}

// Security is a secure channel's security policy and message mode. Policy
// None goes with mode None; every other policy with Sign or SignAndEncrypt.
type Security struct {
	// Policy is None, Basic256Sha256, Aes128_Sha256_RsaOaep or
	// Aes256_Sha256_RsaPss ("Aes128Sha256RsaOaep" and "Aes256Sha256RsaPss"
	// are accepted too).
	Policy string `yaml:"policy"`
	// Mode is None, Sign or SignAndEncrypt.
	Mode string `yaml:"mode"`
}

// Auth is the user identity given to the session: anonymous (all empty),
// a user name and password, or a user certificate and its key.
type Auth struct {
	Username string        `yaml:"username"`
	Password secret.String `yaml:"password"`
	// Certificate and Key are files (PEM or DER) of an X.509 user
	// certificate and its RSA private key.
	Certificate string `yaml:"certificate"`
	Key         string `yaml:"key"`
}

// Point is one variable of a server.
type Point struct {
	// Name is the point's topic level.
	Name string `yaml:"name"`
	// Node is the variable's NodeId: ns=2;s=Boiler.Temp, ns=3;i=1001,
	// ns=1;g=<guid>, ns=1;b=<base64>. Exactly one of Node and BrowsePath.
	Node string `yaml:"node"`
	// BrowsePath is the variable's path of browse names from the Objects
	// folder, each "ns:Name", separated by '/': "2:Boiler/2:Temp" ('&'
	// escapes a '/', ':' or '&' in a name).
	BrowsePath string `yaml:"browse_path"`
	// Type is the variable's OPC UA built-in type (Boolean, SByte, Byte,
	// Int16, UInt16, Int32, UInt32, Int64, UInt64, Float, Double, String,
	// DateTime, Guid, ByteString, LocalizedText, …). Optional: the server's
	// DataType attribute is read when the session starts; a set value is
	// converted to this type.
	Type string `yaml:"type"`
	// Unit is published beside the value.
	Unit string `yaml:"unit"`
	// Scale and Offset turn a numeric value into the published one:
	// v = raw*scale + offset (scale 0 means 1); a set value is converted
	// back.
	Scale  float64 `yaml:"scale"`
	Offset float64 `yaml:"offset"`
	// Decimals, when set, rounds a float value to this many decimal
	// places. Unset: a Float is published with the shortest decimal form
	// of its 32 bits, a scaled value with the decimals of scale and offset.
	Decimals *int `yaml:"decimals,omitempty"`
	// Deadband, when above 0, is the data-change filter of a subscribed
	// point (applied by the server) and the change a polled point needs
	// to be published again.
	Deadband float64 `yaml:"deadband"`
	// DeadbandType is "absolute" (default) or "percent" (of the EURange;
	// subscribed points only).
	DeadbandType string `yaml:"deadband_type"`
	// SamplingInterval is how often the server samples the variable for a
	// monitored item (default: the server's Interval).
	SamplingInterval time.Duration `yaml:"sampling_interval"`
	// Mode is "subscribe" or "poll" (default: the server's Mode).
	Mode string `yaml:"mode"`
	// Writable accepts set-points on {prefix}/{server}/{point}/set.
	Writable bool `yaml:"writable"`
	// Description says what the point is, for people (at most 256 bytes).
	Description string `yaml:"description,omitempty"`
}

// ServerStats are one server's counters.
type ServerStats struct {
	Name   string
	Online bool
	// Reads counts Read requests (polls, DataType reads, ReadNow);
	// ReadValues the values they returned.
	Reads, ReadValues uint64
	// Notifications counts data-change notifications received.
	Notifications uint64
	// Writes and WriteErrors count set commands executed and refused or
	// failed (refusals before sending included).
	Writes, WriteErrors uint64
	// Errors counts failures by kind (ErrKind*).
	Errors map[string]uint64
	// Connects counts sessions established, Reconnects those after a
	// lost or failed one.
	Connects, Reconnects uint64
	// Resumed counts reconnects that re-activated the lost session on a
	// new secure channel and kept its subscription (the changes the
	// server queued meanwhile arrive); Recreated those that made a new
	// session and subscription. Reconnects = Resumed + Recreated.
	Resumed, Recreated uint64
	// Subscribed and Polled are how many points are read each way in the
	// current session.
	Subscribed, Polled int
	// Dropped counts set commands dropped because the queue was full.
	Dropped uint64
	// PublishErrors counts messages the bus refused.
	PublishErrors uint64
	LastError     string
	LastErrorTime time.Time
	// RoundTripP50 and RoundTripP99 are the median and 99th percentile of
	// the time from request to answer of the last 256 answered requests
	// (reads, writes, browses); zero before the first.
	RoundTripP50, RoundTripP99 time.Duration
}

// ServerInfo is a server's configuration and state, for a status page.
type ServerInfo struct {
	Name     string `json:"name"`
	Endpoint string `json:"endpoint"`
	// Policy and Mode are the configured security; Auth is "anonymous",
	// "username" or "certificate".
	Policy string `json:"policy"`
	Mode   string `json:"mode"`
	Auth   string `json:"auth"`
	Points int    `json:"points"`
	Online bool   `json:"online"`
	// LastError is why the server is offline (or the last error).
	LastError string `json:"last_error,omitempty"`
	// Server is the certificate the server presented last (nil before
	// the first connection, or with policy None when the endpoint sent
	// none).
	Server *Certificate `json:"server,omitempty"`
	// Untrusted is set while the server is refused because its
	// certificate is not in the trust directory: the page offers to trust
	// it (Service.Trust(Untrusted.DER)).
	Untrusted *Certificate `json:"untrusted,omitempty"`
}

// Certificate describes an X.509 certificate for people.
type Certificate struct {
	// Thumbprint is the SHA-1 of the DER bytes in upper-case hex, as OPC
	// UA tools show it.
	Thumbprint     string    `json:"thumbprint"`
	Subject        string    `json:"subject"`
	ApplicationURI string    `json:"application_uri,omitempty"`
	NotBefore      time.Time `json:"not_before"`
	NotAfter       time.Time `json:"not_after"`
	DER            []byte    `json:"der"`
}

// BrowseEntry is one node found by Browse.
type BrowseEntry struct {
	// NodeID is the node's NodeId in the string form Point.Node takes.
	NodeID string `json:"node_id"`
	// BrowseName is "ns:Name"; BrowsePath the path from Objects that
	// Point.BrowsePath takes (empty when the browse did not start at
	// Objects).
	BrowseName  string `json:"browse_name"`
	BrowsePath  string `json:"browse_path,omitempty"`
	DisplayName string `json:"display_name"`
	// NodeClass is Object, Variable, Method, ObjectType, VariableType,
	// ReferenceType, DataType or View.
	NodeClass string `json:"node_class"`
	// HasChildren says whether browsing this node may find more.
	HasChildren bool `json:"has_children"`
	// For variables: the built-in DataType name (or the NodeId of a
	// structured type), whether the value is an array, the value as it
	// would be published and its status when not Good, and the access
	// level ("RO", "RW", "WO" or "" for none). Value holds a
	// json.RawMessage (nil when unreadable).
	DataType string `json:"data_type,omitempty"`
	Array    bool   `json:"array,omitempty"`
	Value    any    `json:"value,omitempty"`
	Status   string `json:"status,omitempty"`
	Access   string `json:"access,omitempty"`
}

// Options are the Service's collaborators. Zero values pick the defaults.
type Options struct {
	// Logger receives the service's logs (default slog.Default()).
	Logger *slog.Logger
	// Now is the wall clock for command expiry and for values the server
	// sends without a SourceTimestamp (default time.Now).
	Now func() time.Time
	// ClockSynced reports whether the wall clock can be trusted; when it
	// returns false, payloads carry "ts_sync": false. Default: the time is
	// after 2024-01-01.
	ClockSynced func(time.Time) bool
	// DataDir is where the gateway's application certificate and key are
	// kept (DataDir/opcua/cert.der and key.pem, made on first use). Empty:
	// only servers with security None and anonymous or username auth can
	// be used, and the certificate is made in memory.
	DataDir string
	// TrustDir holds the trusted server certificates, one DER file per
	// certificate (<thumbprint>.der; .pem and .crt files are read too).
	// Default DataDir/opcua/trusted.
	TrustDir string
	// ApplicationURI is the gateway's OPC UA application URI, put in its
	// certificate (default "urn:fieldgate:<hostname>").
	ApplicationURI string
	// ApplicationName is the gateway's OPC UA application name (default
	// "fieldgate").
	ApplicationName string
}

// UntrustedError is the error of a connection refused because the
// server's certificate is not in the trust directory. errors.As finds it in
// ServerInfo-level errors and in ServerCertificate's.
type UntrustedError struct {
	Endpoint string
	Cert     Certificate
}

// Error names the thumbprint to trust and where.
func (e *UntrustedError) Error() string {
	return fmt.Sprintf("server certificate %s (%s) of %s is not trusted: trust this thumbprint on the page, or put the certificate in the trust directory", e.Cert.Thumbprint, e.Cert.Subject, e.Endpoint)
}
