package opcuatest_test

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/fieldgate/fieldgate/internal/opcuatest"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// connect opens a gopcua session to srv's endpoint with the given security
// (policy "None" or a gopcua policy name) and user.
func connect(t *testing.T, srv *opcuatest.Server, policy string, mode ua.MessageSecurityMode, username, password string) (*opcua.Client, error) {
	t.Helper()
	return connectAs(t, srv.Endpoint(), srv.ClientCertFile, srv.ClientKeyFile, policy, mode, username, password)
}

// connectAs is connect with the client certificate certFile/keyFile.
func connectAs(t *testing.T, endpoint, certFile, keyFile, policy string, mode ua.MessageSecurityMode, username, password string) (*opcua.Client, error) {
	t.Helper()
	if username != "" {
		return dial(t, endpoint, certFile, keyFile, policy, mode, ua.UserTokenTypeUserName, opcua.AuthUsername(username, password))
	}
	return dial(t, endpoint, certFile, keyFile, policy, mode, ua.UserTokenTypeAnonymous, opcua.AuthAnonymous())
}

// dial connects with the user token auth of type token.
func dial(t *testing.T, endpoint, certFile, keyFile, policy string, mode ua.MessageSecurityMode, token ua.UserTokenType, auth opcua.Option) (*opcua.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	eps, err := opcua.GetEndpoints(ctx, endpoint)
	if err != nil {
		return nil, fmt.Errorf("get endpoints: %w", err)
	}
	ep, err := opcua.SelectEndpoint(eps, policy, mode)
	if err != nil {
		return nil, fmt.Errorf("select endpoint: %w", err)
	}
	opts := []opcua.Option{opcua.AutoReconnect(false), auth, opcua.SecurityFromEndpoint(ep, token)}
	if mode != ua.MessageSecurityModeNone || token != ua.UserTokenTypeAnonymous {
		opts = append(opts, opcua.CertificateFile(certFile), opcua.PrivateKeyFile(keyFile))
	}
	c, err := opcua.NewClient(endpoint, opts...)
	if err != nil {
		return nil, fmt.Errorf("new client: %w", err)
	}
	if err := c.Connect(ctx); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c, nil
}

func read(t *testing.T, c *opcua.Client, nodes ...string) []*ua.DataValue {
	t.Helper()
	req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth}
	for _, n := range nodes {
		req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: ua.MustParseNodeID(n), AttributeID: ua.AttributeIDValue})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Read(ctx, req)
	if err != nil {
		t.Fatalf("read %v: %v", nodes, err)
	}
	if len(resp.Results) != len(nodes) {
		t.Fatalf("read %d nodes: %d results", len(nodes), len(resp.Results))
	}
	return resp.Results
}

func write(t *testing.T, c *opcua.Client, node string, v any) ua.StatusCode {
	t.Helper()
	variant, err := ua.NewVariant(v)
	if err != nil {
		t.Fatalf("variant %v: %v", v, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Write(ctx, &ua.WriteRequest{NodesToWrite: []*ua.WriteValue{{
		NodeID: ua.MustParseNodeID(node), AttributeID: ua.AttributeIDValue,
		Value: &ua.DataValue{EncodingMask: ua.DataValueValue, Value: variant},
	}}})
	if err != nil {
		t.Fatalf("write %s: %v", node, err)
	}
	return resp.Results[0]
}

// checkAll reads every variable of the address space and checks its value.
func checkAll(t *testing.T, c *opcua.Client) {
	t.Helper()
	var nodes []string
	for _, s := range opcuatest.Scalars {
		nodes = append(nodes, s.Node)
	}
	for i, dv := range read(t, c, nodes...) {
		s := opcuatest.Scalars[i]
		if dv.Status != ua.StatusOK {
			t.Errorf("%s: status %v", s.Type, dv.Status)
			continue
		}
		got := dv.Value.Value()
		if want, ok := s.Want.(time.Time); ok {
			if g, ok := got.(time.Time); !ok || !g.Equal(want) {
				t.Errorf("%s = %v, want %v", s.Type, got, want)
			}
			continue
		}
		if !reflect.DeepEqual(got, s.Want) {
			t.Errorf("%s = %#v (%T), want %#v", s.Type, got, got, s.Want)
		}
	}

	others := []struct {
		node string
		want any
	}{
		{opcuatest.NodeDoubleArray, []float64{1.5, -2.25, 3}},
		{opcuatest.NodeInt32Array, []int32{1, -2, 3, 2147483647}},
		{opcuatest.NodeStringArray, []string{"a", "b", "ç"}},
		{opcuatest.NodeSetpoint, 20.0},
		{opcuatest.NodeWritableInt16, int16(7)},
		{opcuatest.NodeReadOnly, 42.5},
		{opcuatest.NodeFaulty, 5.0},
		{opcuatest.NodeFaultyBad, false},
		{opcuatest.NodePress4Temp, 81.25},
		{opcuatest.NodePress4Running, true},
	}
	nodes = nodes[:0]
	for _, o := range others {
		nodes = append(nodes, o.node)
	}
	for i, dv := range read(t, c, nodes...) {
		o := others[i]
		if dv.Status != ua.StatusOK || !reflect.DeepEqual(dv.Value.Value(), o.want) {
			t.Errorf("%s = %#v (status %v), want %#v", o.node, dv.Value.Value(), dv.Status, o.want)
		}
	}

	// Counter and Sine change every 100 ms, with a source timestamp.
	first := read(t, c, opcuatest.NodeCounter, opcuatest.NodeSine)
	if first[0].SourceTimestamp.IsZero() {
		t.Errorf("counter has no source timestamp")
	}
	testwait.For(t, 10*time.Second, "counter and sine to change", func() bool {
		now := read(t, c, opcuatest.NodeCounter, opcuatest.NodeSine)
		return now[0].Value.Value().(uint32) != first[0].Value.Value().(uint32) &&
			now[1].Value.Value().(float64) != first[1].Value.Value().(float64)
	})
	// Flaky goes Bad and Good again.
	for _, want := range []ua.StatusCode{ua.StatusBadSensorFailure, ua.StatusOK} {
		testwait.For(t, 10*time.Second, "flaky status "+want.Error(), func() bool {
			return read(t, c, opcuatest.NodeFlaky)[0].Status == want
		})
	}
}

func TestNoneAnonymous(t *testing.T) {
	srv := opcuatest.Start(t, opcuatest.Options{FlakyPeriod: 200 * time.Millisecond})
	c, err := connect(t, srv, "None", ua.MessageSecurityModeNone, "", "")
	if err != nil {
		t.Fatal(err)
	}
	checkAll(t, c)

	for _, w := range []struct {
		node string
		v    any
		want ua.StatusCode
	}{
		{opcuatest.NodeSetpoint, 55.5, ua.StatusOK},
		{opcuatest.NodeSetpoint, 150.0, ua.StatusBadOutOfRange},
		{opcuatest.NodeSetpoint, -1.0, ua.StatusBadOutOfRange},
		{opcuatest.NodeSetpoint, "x", ua.StatusBadTypeMismatch},
		{opcuatest.NodeWritableInt16, int16(-3), ua.StatusOK},
		{opcuatest.NodeWritableInt16, 1.5, ua.StatusBadTypeMismatch},
		{opcuatest.NodeReadOnly, 1.0, ua.StatusBadNotWritable},
	} {
		if got := write(t, c, w.node, w.v); got != w.want {
			t.Errorf("write %v to %s: %v, want %v", w.v, w.node, got, w.want)
		}
	}
	got := read(t, c, opcuatest.NodeSetpoint, opcuatest.NodeWritableInt16)
	if got[0].Value.Value() != 55.5 || got[1].Value.Value() != int16(-3) {
		t.Errorf("after writes: setpoint %v, int16 %v; want 55.5, -3", got[0].Value.Value(), got[1].Value.Value())
	}

	if st := write(t, c, opcuatest.NodeFaultyBad, true); st != ua.StatusOK {
		t.Fatalf("write FaultyBad: %v", st)
	}
	testwait.For(t, 5*time.Second, "Faulty to go bad", func() bool {
		return read(t, c, opcuatest.NodeFaulty)[0].Status == ua.StatusBadSensorFailure
	})
	write(t, c, opcuatest.NodeFaultyBad, false)
	testwait.For(t, 5*time.Second, "Faulty to go good", func() bool {
		return read(t, c, opcuatest.NodeFaulty)[0].Status == ua.StatusOK
	})

	// Browse the hierarchy.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	refs, err := c.Node(ua.MustParseNodeID(opcuatest.NodePress4)).ReferencedNodes(ctx, 0, ua.BrowseDirectionForward, ua.NodeClassVariable, true)
	if err != nil {
		t.Fatalf("browse Press4: %v", err)
	}
	var ids []string
	for _, r := range refs {
		ids = append(ids, r.ID.String())
	}
	if !reflect.DeepEqual(ids, []string{opcuatest.NodePress4Temp, opcuatest.NodePress4Running}) {
		t.Errorf("Press4 variables: %v", ids)
	}
}

func TestSecureUsername(t *testing.T) {
	dir := t.TempDir()
	userCert, userKey := filepath.Join(dir, "user-cert.pem"), filepath.Join(dir, "user-key.pem")
	userDER, err := opcuatest.WriteAppCert(userCert, userKey, "operator", "urn:fieldgate:opcuatest:operator")
	if err != nil {
		t.Fatal(err)
	}
	srv := opcuatest.Start(t, opcuatest.Options{
		TrustedUserCerts: []string{userCert},
		Security: []string{
			opcuatest.SecurityBasic256Sha256SignAndEncrypt,
			opcuatest.SecurityAes128Sha256RsaOaepSignAndEncrypt,
			opcuatest.SecurityAes256Sha256RsaPssSignAndEncrypt,
		},
		NoAnonymous: true,
		Users:       map[string]string{"gateway": "s3cret"},
		FlakyPeriod: 200 * time.Millisecond,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	eps, err := opcua.GetEndpoints(ctx, srv.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	for _, ep := range eps {
		if ep.SecurityMode == ua.MessageSecurityModeNone {
			t.Errorf("endpoint %s %v offered; only SignAndEncrypt was asked", ep.SecurityPolicyURI, ep.SecurityMode)
		}
	}

	c, err := connect(t, srv, ua.SecurityPolicyURIBasic256Sha256, ua.MessageSecurityModeSignAndEncrypt, "gateway", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	checkAll(t, c)

	for _, policy := range []string{ua.SecurityPolicyURIAes128Sha256RsaOaep, ua.SecurityPolicyURIAes256Sha256RsaPss} {
		c, err := connect(t, srv, policy, ua.MessageSecurityModeSignAndEncrypt, "gateway", "s3cret")
		if err != nil {
			t.Fatalf("%s: %v", policy, err)
		}
		if dv := read(t, c, opcuatest.NodeReadOnly)[0]; dv.Value.Value() != 42.5 {
			t.Errorf("%s: read only = %v", policy, dv.Value.Value())
		}
	}

	if _, err := connect(t, srv, ua.SecurityPolicyURIBasic256Sha256, ua.MessageSecurityModeSignAndEncrypt, "gateway", "wrong"); err == nil {
		t.Errorf("wrong password accepted")
	}
	if _, err := connect(t, srv, ua.SecurityPolicyURIBasic256Sha256, ua.MessageSecurityModeSignAndEncrypt, "", ""); err == nil {
		t.Errorf("anonymous accepted with NoAnonymous")
	}

	// An X509 user token with a trusted user certificate.
	key, err := readRSAKey(userKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err = dial(t, srv.Endpoint(), srv.ClientCertFile, srv.ClientKeyFile, ua.SecurityPolicyURIBasic256Sha256, ua.MessageSecurityModeSignAndEncrypt,
		ua.UserTokenTypeCertificate, authX509(userDER, key))
	if err != nil {
		t.Fatalf("X509 user token: %v", err)
	}
	if dv := read(t, c, opcuatest.NodeReadOnly)[0]; dv.Value.Value() != 42.5 {
		t.Errorf("X509 user: read only = %v", dv.Value.Value())
	}
	// An untrusted user certificate is refused.
	otherCert, otherKey := filepath.Join(dir, "other-cert.pem"), filepath.Join(dir, "other-key.pem")
	otherDER, err := opcuatest.WriteAppCert(otherCert, otherKey, "intruder", "urn:fieldgate:opcuatest:intruder")
	if err != nil {
		t.Fatal(err)
	}
	if key, err = readRSAKey(otherKey); err != nil {
		t.Fatal(err)
	}
	_, err = dial(t, srv.Endpoint(), srv.ClientCertFile, srv.ClientKeyFile, ua.SecurityPolicyURIBasic256Sha256, ua.MessageSecurityModeSignAndEncrypt,
		ua.UserTokenTypeCertificate, authX509(otherDER, key))
	if err == nil {
		t.Errorf("untrusted X509 user token accepted")
	}
}

func TestRestartKeepsPort(t *testing.T) {
	srv := opcuatest.Start(t, opcuatest.Options{BenchVariables: 10, BenchInterval: 100 * time.Millisecond})
	port, endpoint := srv.Port(), srv.Endpoint()
	c, err := connect(t, srv, "None", ua.MessageSecurityModeNone, "", "")
	if err != nil {
		t.Fatal(err)
	}
	first := read(t, c, opcuatest.BenchNode(9))[0].Value.Value().(float64)
	testwait.For(t, 10*time.Second, "bench variable to change", func() bool {
		return read(t, c, opcuatest.BenchNode(9))[0].Value.Value().(float64) > first
	})

	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if srv.PID() != 0 {
		t.Errorf("PID %d after Kill", srv.PID())
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if srv.Port() != port || srv.Endpoint() != endpoint {
		t.Fatalf("after restart: %s, want %s", srv.Endpoint(), endpoint)
	}
	c2, err := connect(t, srv, "None", ua.MessageSecurityModeNone, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if dv := read(t, c2, opcuatest.NodeReadOnly)[0]; dv.Value.Value() != 42.5 {
		t.Errorf("after restart: read only = %v", dv.Value.Value())
	}
}

func TestClientCertTrust(t *testing.T) {
	srv := opcuatest.Start(t, opcuatest.Options{Security: []string{opcuatest.SecurityBasic256Sha256SignAndEncrypt}})
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "other-cert.pem"), filepath.Join(dir, "other-key.pem")
	if _, err := opcuatest.WriteAppCert(cert, key, "other client", "urn:fieldgate:opcuatest:other"); err != nil {
		t.Fatal(err)
	}
	if _, err := connectAs(t, srv.Endpoint(), cert, key, ua.SecurityPolicyURIBasic256Sha256, ua.MessageSecurityModeSignAndEncrypt, "", ""); err == nil {
		t.Fatal("untrusted client certificate accepted")
	}
	if err := srv.TrustClientCert(cert); err != nil {
		t.Fatal(err)
	}
	testwait.NoError(t, 30*time.Second, func() error {
		_, err := connectAs(t, srv.Endpoint(), cert, key, ua.SecurityPolicyURIBasic256Sha256, ua.MessageSecurityModeSignAndEncrypt, "", "")
		return err
	})
}

func readRSAKey(file string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", file)
	}
	return x509.ParsePKCS1PrivateKey(block.Bytes)
}

// authX509 is an X509 user identity token of certificate der and key.
func authX509(der []byte, key *rsa.PrivateKey) opcua.Option {
	return func(cfg *opcua.Config) error {
		if err := opcua.AuthCertificate(der)(cfg); err != nil {
			return err
		}
		return opcua.AuthPrivateKey(key)(cfg)
	}
}
