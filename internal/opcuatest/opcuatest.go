// Package opcuatest runs the real, independent OPC UA server the OPC UA
// tests and cmd/opcuabench use as their peer: node-opcua, started as
// `node testdata/opcua/server.mjs` on a loopback port the OS chooses, with
// the address space documented in that script and named by the Node*
// constants here. Start makes the server's and a test client's RSA
// application certificates in the test's temporary directory.
//
// A missing node or testdata/opcua/node_modules fails the test (skips it
// under SKIP_PEERS=1), like every other peer: see internal/peertest.
package opcuatest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/peertest"
)

// Security settings a server can offer, as Options.Security takes them.
const (
	SecurityNone                              = "None"
	SecurityBasic256Sha256Sign                = "Basic256Sha256:Sign"
	SecurityBasic256Sha256SignAndEncrypt      = "Basic256Sha256:SignAndEncrypt"
	SecurityAes128Sha256RsaOaepSignAndEncrypt = "Aes128_Sha256_RsaOaep:SignAndEncrypt"
	SecurityAes256Sha256RsaPssSignAndEncrypt  = "Aes256_Sha256_RsaPss:SignAndEncrypt"
)

// Application URIs written into the generated certificates' URI SAN. An OPC
// UA client must announce the URI of its own certificate.
const (
	ServerApplicationURI = "urn:fieldgate:opcuatest:server"
	ClientApplicationURI = "urn:fieldgate:opcuatest:client"
)

// StartTimeout bounds how long Start and Restart wait for the server to
// print its endpoint. node-opcua loads its standard address space first,
// which takes a few seconds on a busy 2-core machine.
const StartTimeout = 60 * time.Second

// Options says what the server offers. The zero value offers security None
// to anonymous users only.
type Options struct {
	// Security lists the security policy/mode pairs offered, each one of
	// the Security* constants ("None" or "<policy>:<mode>"). Empty means
	// SecurityNone only.
	Security []string
	// NoAnonymous refuses anonymous user tokens.
	NoAnonymous bool
	// Users are the accepted username tokens: user name → password.
	Users map[string]string
	// TrustedClientCerts are client certificate files (PEM or DER) the
	// server trusts, besides Server.ClientCertFile which it always trusts.
	TrustedClientCerts []string
	// TrustedUserCerts are certificate files (PEM or DER) accepted as X509
	// user identity tokens.
	TrustedUserCerts []string
	// AutoAcceptClientCerts makes the server accept any client
	// certificate. Off by default: trust is explicit.
	AutoAcceptClientCerts bool
	// BenchVariables adds ns=1;s=Test.Bench.0 … Test.Bench.<N-1>
	// (Double), all set to a new value every BenchInterval.
	BenchVariables int
	// BenchInterval is the update period of the bench variables; 0 means
	// one second.
	BenchInterval time.Duration
	// FlakyPeriod is the period of NodeFlaky's Good/Bad toggle; 0 means
	// 500 ms.
	FlakyPeriod time.Duration
	// MaxNotificationsPerPublish is the most notifications the server puts
	// in one PublishResponse; 0 keeps node-opcua's default, 1000.
	MaxNotificationsPerPublish int
	// Port is the TCP port to listen on; 0 lets the OS choose.
	Port int
}

// Server is a running node-opcua server. Its methods are safe for
// concurrent use.
type Server struct {
	// Dir holds the config, the certificates, the PKI store and
	// server.log (the node process's stderr).
	Dir string
	// CertFile and KeyFile are the server's application certificate and
	// RSA key, PEM. CertDER is the certificate, DER.
	CertFile, KeyFile string
	CertDER           []byte
	// ClientCertFile and ClientKeyFile are a client application
	// certificate and RSA key (PEM, URI ClientApplicationURI) the server
	// trusts; the file names end in .pem as gopcua's CertificateFile and
	// PrivateKeyFile expect. ClientCertDER is the certificate, DER.
	ClientCertFile, ClientKeyFile string
	ClientCertDER                 []byte
	// PKIDir is the server's certificate store (trusted/, rejected/…).
	PKIDir string

	node       string
	script     string
	configFile string

	mu       sync.Mutex
	opts     Options // TrustClientCert extends it
	cmd      *exec.Cmd
	done     chan struct{} // closed when cmd has exited
	stdin    io.WriteCloser
	replies  chan string // answers to stdin commands
	endpoint string
	port     int
}

// Start starts a server with opts for the test t and stops it when t ends.
// It fails t (or skips it under SKIP_PEERS=1) when node or the npm packages
// are missing.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	node, script := Need(t)
	s, err := launch(t.TempDir(), node, script, opts)
	if err != nil {
		t.Fatalf("opcuatest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("opcuatest: %v", err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(s.Dir, "server.log"))
			t.Logf("opcuatest: node-opcua server log (%s):\n%s", s.Endpoint(), tail(string(b), 4000))
		}
	})
	return s
}

// Need returns the node program and the path of server.mjs, or fails t
// (skips it under SKIP_PEERS=1) when either node or testdata/opcua's npm
// packages are missing.
func Need(t testing.TB) (node, script string) {
	t.Helper()
	node, script, err := Find()
	if err != nil {
		peertest.Missing(t, err.Error(), "apt-get install nodejs npm; cd testdata/opcua && npm ci")
	}
	return node, script
}

// Find returns the node program and the path of server.mjs, or an error
// saying what is missing.
func Find() (node, script string, err error) {
	node, err = exec.LookPath("node")
	if err != nil {
		return "", "", errors.New("no node on PATH (apt-get install nodejs)")
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", "", errors.New("cannot locate the source tree")
	}
	dir := filepath.Join(filepath.Dir(file), "..", "..", "testdata", "opcua")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "node-opcua")); err != nil {
		return "", "", fmt.Errorf("no node-opcua in %s/node_modules (cd testdata/opcua && npm ci)", dir)
	}
	return node, filepath.Join(dir, "server.mjs"), nil
}

// Launch starts a server outside a test (cmd/opcuabench): dir is an empty
// directory it owns. The caller must Close the server.
func Launch(dir string, opts Options) (*Server, error) {
	node, script, err := Find()
	if err != nil {
		return nil, fmt.Errorf("opcuatest: OPC UA peer missing: %w", err)
	}
	return launch(dir, node, script, opts)
}

func launch(dir, node, script string, opts Options) (*Server, error) {
	s := &Server{
		Dir:            dir,
		CertFile:       filepath.Join(dir, "server-cert.pem"),
		KeyFile:        filepath.Join(dir, "server-key.pem"),
		ClientCertFile: filepath.Join(dir, "client-cert.pem"),
		ClientKeyFile:  filepath.Join(dir, "client-key.pem"),
		PKIDir:         filepath.Join(dir, "pki"),
		opts:           opts,
		node:           node,
		script:         script,
		configFile:     filepath.Join(dir, "config.json"),
		port:           opts.Port,
	}
	var err error
	if s.CertDER, err = WriteAppCert(s.CertFile, s.KeyFile, "fieldgate opcuatest server", ServerApplicationURI); err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	if s.ClientCertDER, err = WriteAppCert(s.ClientCertFile, s.ClientKeyFile, "fieldgate opcuatest client", ClientApplicationURI); err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

// peerConfig is the JSON config server.mjs reads.
type peerConfig struct {
	Port                         int      `json:"port"`
	Host                         string   `json:"host"`
	Security                     []string `json:"security,omitempty"`
	AllowAnonymous               bool     `json:"allowAnonymous"`
	Users                        []user   `json:"users,omitempty"`
	CertificateFile              string   `json:"certificateFile"`
	PrivateKeyFile               string   `json:"privateKeyFile"`
	ApplicationURI               string   `json:"applicationUri"`
	PKIDir                       string   `json:"pkiDir"`
	TrustedClientCertificates    []string `json:"trustedClientCertificates"`
	TrustedUserCertificates      []string `json:"trustedUserCertificates,omitempty"`
	AutoAcceptClientCertificates bool     `json:"autoAcceptClientCertificates"`
	BenchVariables               int      `json:"benchVariables,omitempty"`
	BenchIntervalMs              int64    `json:"benchIntervalMs,omitempty"`
	FlakyPeriodMs                int64    `json:"flakyPeriodMs,omitempty"`
	MaxNotificationsPerPublish   int      `json:"maxNotificationsPerPublish,omitempty"`
}

type user struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func (s *Server) writeConfig(port int) error {
	c := peerConfig{
		Port:                         port,
		Host:                         "127.0.0.1",
		Security:                     s.opts.Security,
		AllowAnonymous:               !s.opts.NoAnonymous,
		CertificateFile:              s.CertFile,
		PrivateKeyFile:               s.KeyFile,
		ApplicationURI:               ServerApplicationURI,
		PKIDir:                       s.PKIDir,
		TrustedClientCertificates:    append([]string{s.ClientCertFile}, s.opts.TrustedClientCerts...),
		TrustedUserCertificates:      s.opts.TrustedUserCerts,
		AutoAcceptClientCertificates: s.opts.AutoAcceptClientCerts,
		BenchVariables:               s.opts.BenchVariables,
		BenchIntervalMs:              s.opts.BenchInterval.Milliseconds(),
		FlakyPeriodMs:                s.opts.FlakyPeriod.Milliseconds(),
		MaxNotificationsPerPublish:   s.opts.MaxNotificationsPerPublish,
	}
	for name, pass := range s.opts.Users {
		c.Users = append(c.Users, user{Username: name, Password: pass})
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode peer config: %w", err)
	}
	if err := os.WriteFile(s.configFile, b, 0o600); err != nil {
		return fmt.Errorf("write peer config: %w", err)
	}
	return nil
}

// start runs the node process on s.port (0: any) and waits for its
// endpoint line. On a fixed port it retries while the port is still held
// by the process just killed.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	deadline := time.Now().Add(StartTimeout)
	for {
		err := s.startOnce()
		if err == nil || s.port == 0 || time.Now().After(deadline) || !errors.Is(err, errAddrInUse) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var errAddrInUse = errors.New("address in use")

func (s *Server) startOnce() error {
	if err := s.writeConfig(s.port); err != nil {
		return err
	}
	logFile, err := os.OpenFile(filepath.Join(s.Dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open server log: %w", err)
	}
	defer logFile.Close() // the child has its own copy
	var stderr bytes.Buffer
	cmd := exec.Command(s.node, s.script, "--config", s.configFile)
	cmd.Dir = filepath.Dir(s.script)
	cmd.Stderr = io.MultiWriter(logFile, &lockedBuffer{b: &stderr})
	cmd.SysProcAttr = sysProcAttr()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("node stdout: %w", err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("node stdin: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	done := make(chan struct{})
	lines := make(chan string, 1)
	replies := make(chan string, 16)
	// This goroutine owns the process: it reads the endpoint line and the
	// answers to commands from stdout, then waits for the process, closing
	// done when it exits.
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			var ch chan string
			switch {
			case strings.HasPrefix(line, "opc.tcp://"):
				ch = lines
			case strings.HasPrefix(line, "ok ") || strings.HasPrefix(line, "error "):
				ch = replies
			default:
				continue
			}
			select {
			case ch <- line:
			default:
			}
		}
		_ = cmd.Wait()
	}()
	timer := time.NewTimer(StartTimeout)
	defer timer.Stop()
	select {
	case line := <-lines:
		port, err := portOf(line)
		if err != nil {
			_ = cmd.Process.Kill()
			<-done
			return err
		}
		s.cmd, s.done, s.endpoint, s.port = cmd, done, line, port
		s.stdin, s.replies = stdin, replies
		return nil
	case <-done:
		msg := stderr.String()
		if strings.Contains(msg, "EADDRINUSE") {
			return fmt.Errorf("node-opcua server on port %d: %w", s.port, errAddrInUse)
		}
		return fmt.Errorf("node-opcua server exited before listening (%s): %s", cmd.ProcessState, tail(msg, 2000))
	case <-timer.C:
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("node-opcua server did not print its endpoint within %s: %s", StartTimeout, tail(stderr.String(), 2000))
	}
}

func portOf(endpoint string) (int, error) {
	i := strings.LastIndexByte(endpoint, ':')
	port, err := strconv.Atoi(strings.TrimRight(endpoint[i+1:], "/"))
	if i < 0 || err != nil {
		return 0, fmt.Errorf("parse endpoint %q: no port", endpoint)
	}
	return port, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// lockedBuffer lets exec's stderr copier and the reader share a buffer.
type lockedBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil
	}
	return l.b.Write(p)
}

// Endpoint returns the server's endpoint URL, opc.tcp://127.0.0.1:<port>.
// It stays the same across Restart.
func (s *Server) Endpoint() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endpoint
}

// Port returns the TCP port the server listens on.
func (s *Server) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.port
}

// PID returns the node process id, or 0 when it is not running.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Kill kills the server with SIGKILL, as a crash or power cut would, and
// waits for the process to exit. Connected clients see their socket
// reset. Killing a stopped server does nothing.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked(syscall.SIGKILL)
}

// Restart starts the server again on the same port, with the same
// certificates and options, after Kill (or kills it first if it runs).
func (s *Server) Restart() error {
	if err := s.Kill(); err != nil {
		return err
	}
	return s.start()
}

// Close stops the server with SIGTERM (SIGKILL after 5 s) and waits for it.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked(syscall.SIGTERM)
}

func (s *Server) stopLocked(sig syscall.Signal) error {
	if s.cmd == nil {
		return nil
	}
	cmd, done := s.cmd, s.done
	s.cmd, s.done, s.stdin, s.replies = nil, nil, nil, nil
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal node-opcua server: %w", err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	return nil
}

// command sends one command line to the running server and waits for its
// answer. s.mu must be held.
func (s *Server) commandLocked(line string) error {
	if s.cmd == nil {
		return errors.New("node-opcua server not running")
	}
	for len(s.replies) > 0 { // answers to commands that timed out
		<-s.replies
	}
	if _, err := io.WriteString(s.stdin, line+"\n"); err != nil {
		return fmt.Errorf("send %q to node-opcua server: %w", line, err)
	}
	select {
	case reply := <-s.replies:
		if strings.HasPrefix(reply, "ok ") {
			return nil
		}
		return fmt.Errorf("node-opcua server: %s", reply)
	case <-s.done:
		return errors.New("node-opcua server exited")
	case <-time.After(30 * time.Second):
		return fmt.Errorf("node-opcua server did not answer %q", line)
	}
}
