package opcua

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/opcuatest"
	"github.com/fieldgate/fieldgate/internal/secret"
	"github.com/fieldgate/fieldgate/internal/testwait"
)

// TestPeer runs the tests that can share one node-opcua server (starting
// one costs seconds of CPU), in an order where no test sees another's
// writes.
func TestPeer(t *testing.T) {
	srv := opcuatest.Start(t, opcuatest.Options{FlakyPeriod: 200 * time.Millisecond})
	t.Run("ScalarsAndArrays", func(t *testing.T) { testScalarsAndArrays(t, srv) })
	t.Run("Browse", func(t *testing.T) { testBrowse(t, srv) })
	t.Run("DeadbandAndPolling", func(t *testing.T) { testDeadbandAndPolling(t, srv) })
	t.Run("NetworkCut", func(t *testing.T) { testNetworkCut(t, srv) })
	t.Run("Writes", func(t *testing.T) { testWrites(t, srv) })
}

// testScalarsAndArrays reads every built-in scalar type and the arrays of
// the node-opcua server (security None, anonymous) with a subscription,
// and checks their JSON.
func testScalarsAndArrays(t *testing.T, srv *opcuatest.Server) {
	want := map[string]string{
		"Boolean": `true`, "SByte": `-100`, "Byte": `200`, "Int16": `-30000`, "UInt16": `60000`,
		"Int32": `-2000000000`, "UInt32": `4000000000`, "Int64": `-4294967298`, "UInt64": `4294967298`,
		"Float": `3.5`, "Double": `2.718281828459045`, "String": `"héllo OPC UA"`,
		"DateTime": `"2024-05-06T07:08:09.123Z"`, "Guid": `"72962B91-FA75-4AE6-8D28-B404DC7DAF63"`,
		"ByteString": `"AAH+/w=="`, "LocalizedText": `"Hello"`, "QualifiedName": `"1:Quality"`,
		"NodeId": `"ns=1;s=Test.Double"`, "StatusCode": `"BadOutOfRange"`,
		"DoubleArray": `[1.5,-2.25,3]`, "Int32Array": `[1,-2,3,2147483647]`, "StringArray": `["a","b","ç"]`,
	}
	s := Server{Name: "plc", Endpoint: srv.Endpoint()}
	for _, sc := range opcuatest.Scalars {
		s.Points = append(s.Points, Point{Name: sc.Type, Node: sc.Node})
	}
	s.Points = append(s.Points,
		Point{Name: "DoubleArray", Node: opcuatest.NodeDoubleArray},
		Point{Name: "Int32Array", Node: opcuatest.NodeInt32Array},
		Point{Name: "StringArray", Node: opcuatest.NodeStringArray, Mode: ModePoll},
		Point{Name: "temp", BrowsePath: "1:Test/1:Tree/1:Plant/1:Line1/1:Press4/1:Temp", Unit: "°C"},
	)
	r := newRig(t, Config{Servers: []Server{s}}, Options{})
	r.waitStatus("plc", "online")
	for name, js := range want {
		p := r.waitValue("plc", name, "a good value", func(p map[string]any) bool { return p["q"] == QualityGood })
		var w any
		d := json.NewDecoder(strings.NewReader(js))
		d.UseNumber()
		if err := d.Decode(&w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(p["v"], w) {
			t.Errorf("%s: v = %#v, want %s (payload %s)", name, p["v"], js, r.rec.raw("southbound/plc/"+name))
		}
		if _, ok := p["ts"].(json.Number); !ok {
			t.Errorf("%s: no ts in %v", name, p)
		}
	}
	p := r.waitValue("plc", "temp", "the browse path point", func(p map[string]any) bool { return p["q"] == QualityGood })
	if num(p["v"]) != 81.25 || p["unit"] != "°C" {
		t.Errorf("temp = %v", p)
	}
	st := r.svc.Stats()[0]
	if st.Subscribed != len(s.Points)-1 || st.Polled != 1 || st.Notifications == 0 || st.Connects != 1 {
		t.Errorf("stats = %+v", st)
	}
}

// TestSecurity connects over every security policy with SignAndEncrypt
// and a username (and with a user certificate), with the gateway's certificate made in the test and
// the server's trusted explicitly; a wrong password and an untrusted
// server certificate are refused with clear errors, and trusting the
// server (as the page does) brings it online.
func TestSecurity(t *testing.T) {
	data := t.TempDir()
	gwCert := appCertFile(t, data)
	userCert, userKey := filepath.Join(data, "user-cert.pem"), filepath.Join(data, "user-key.pem")
	if _, err := opcuatest.WriteAppCert(userCert, userKey, "operator", "urn:fieldgate:test:operator"); err != nil {
		t.Fatal(err)
	}
	srv := opcuatest.Start(t, opcuatest.Options{
		TrustedUserCerts: []string{userCert},
		Security: []string{opcuatest.SecurityNone, opcuatest.SecurityBasic256Sha256SignAndEncrypt, opcuatest.SecurityBasic256Sha256Sign,
			opcuatest.SecurityAes128Sha256RsaOaepSignAndEncrypt, opcuatest.SecurityAes256Sha256RsaPssSignAndEncrypt},
		NoAnonymous:        true,
		Users:              map[string]string{"gateway": "s3cret"},
		TrustedClientCerts: []string{gwCert},
	})
	trustDir := filepath.Join(t.TempDir(), "trusted")
	if _, err := Trust(trustDir, srv.CertDER); err != nil {
		t.Fatal(err)
	}
	user := Auth{Username: "gateway", Password: secret.New("s3cret")}
	point := []Point{{Name: "temp", Node: opcuatest.NodePress4Temp}}
	servers := []Server{
		{Name: "none", Endpoint: srv.Endpoint(), Auth: user, Points: point},
		{Name: "basic256sha256", Endpoint: srv.Endpoint(), Security: Security{Policy: PolicyBasic256Sha256, Mode: SecurityModeSignAndEncrypt}, Auth: user, Points: point},
		{Name: "sign", Endpoint: srv.Endpoint(), Security: Security{Policy: PolicyBasic256Sha256, Mode: SecurityModeSign}, Auth: user, Points: point},
		{Name: "aes128", Endpoint: srv.Endpoint(), Security: Security{Policy: "Aes128Sha256RsaOaep", Mode: SecurityModeSignAndEncrypt}, Auth: user, Points: point},
		{Name: "aes256", Endpoint: srv.Endpoint(), Security: Security{Policy: PolicyAes256Sha256RsaPss, Mode: SecurityModeSignAndEncrypt}, Auth: user, Points: point},
		{Name: "badpw", Endpoint: srv.Endpoint(), Security: Security{Policy: PolicyBasic256Sha256, Mode: SecurityModeSignAndEncrypt},
			Auth: Auth{Username: "gateway", Password: secret.New("wrong")}, Points: point},
		{Name: "anon", Endpoint: srv.Endpoint(), Points: point},
		{Name: "usercert", Endpoint: srv.Endpoint(), Security: Security{Policy: PolicyBasic256Sha256, Mode: SecurityModeSignAndEncrypt},
			Auth: Auth{Certificate: userCert, Key: userKey}, Points: point},
	}
	r := newRig(t, Config{Servers: servers}, Options{DataDir: data, TrustDir: trustDir})
	for _, s := range append(servers[:5:5], servers[7]) {
		r.waitStatus(s.Name, "online")
		p := r.waitValue(s.Name, "temp", "a good value", func(p map[string]any) bool { return p["q"] == QualityGood })
		if num(p["v"]) != 81.25 {
			t.Errorf("%s: temp = %v", s.Name, p)
		}
	}
	st := r.waitStatus("badpw", "offline")
	if err, _ := st["err"].(string); !strings.Contains(err, `user "gateway": wrong username or password`) || strings.Contains(err, "wrong\"") {
		t.Errorf("wrong password: err = %q", err)
	}
	st = r.waitStatus("anon", "offline")
	if err, _ := st["err"].(string); !strings.Contains(err, "accepts no anonymous user token") {
		t.Errorf("anonymous: err = %q", err)
	}
	testwait.For(t, wait, "the wrong password counted", func() bool { return r.svc.Stats()[5].Errors[ErrKindAuth] > 0 })
	for _, info := range r.svc.Servers()[1:5] {
		if info.Server == nil || info.Server.Thumbprint != Thumbprint(srv.CertDER) || info.Untrusted != nil {
			t.Errorf("%s: server certificate %+v, untrusted %+v", info.Name, info.Server, info.Untrusted)
		}
	}

	tp, der, err := ServerCertificate(context.Background(), srv.Endpoint())
	if err != nil || tp != Thumbprint(srv.CertDER) || !bytes.Equal(der, srv.CertDER) {
		t.Errorf("ServerCertificate = %s, %v", tp, err)
	}

	// A second gateway (same certificate) with an empty trust list.
	r2 := newRig(t, Config{Servers: servers[1:2]}, Options{DataDir: data, TrustDir: filepath.Join(t.TempDir(), "trust2")})
	st = r2.waitStatus("basic256sha256", "offline")
	if err, _ := st["err"].(string); !strings.Contains(err, tp) || !strings.Contains(err, "not trusted") {
		t.Errorf("untrusted: err = %q, want the thumbprint %s", err, tp)
	}
	var untrusted *Certificate
	testwait.For(t, wait, "the untrusted certificate offered", func() bool {
		untrusted = r2.svc.Servers()[0].Untrusted
		return untrusted != nil
	})
	if untrusted.Thumbprint != tp || untrusted.ApplicationURI != opcuatest.ServerApplicationURI {
		t.Errorf("untrusted = %+v", untrusted)
	}
	if r2.svc.Stats()[0].Errors[ErrKindSecurity] == 0 {
		t.Error("the refusal is not counted as a security error")
	}
	if _, err := r2.svc.Trust(untrusted.DER); err != nil {
		t.Fatal(err)
	}
	r2.waitStatus("basic256sha256", "online")
	if info := r2.svc.Servers()[0]; info.Untrusted != nil {
		t.Errorf("still untrusted after trust: %+v", info.Untrusted)
	}
}

// testWrites covers the set command results: accepted, refused as
// read-only, out of range, type mismatch (before sending), not writable,
// expired, unknown point.
func testWrites(t *testing.T, srv *opcuatest.Server) {
	s := Server{Name: "plc", Endpoint: srv.Endpoint(), Points: []Point{
		{Name: "setpoint", Node: opcuatest.NodeSetpoint, Writable: true, Unit: "°C"},
		{Name: "int16", Node: opcuatest.NodeWritableInt16, Writable: true},
		{Name: "scaled", Node: opcuatest.NodeWritableInt16, Writable: true, Scale: 0.5},
		{Name: "readonly", Node: opcuatest.NodeReadOnly, Writable: true},
		{Name: "notwritable", Node: opcuatest.NodeSetpoint},
		{Name: "array", Node: opcuatest.NodeDoubleArray, Writable: true},
		{Name: "faultybad", Node: opcuatest.NodeFaultyBad, Writable: true},
		{Name: "faulty", Node: opcuatest.NodeFaulty},
	}}
	r := newRig(t, Config{Servers: []Server{s}}, Options{})
	r.waitStatus("plc", "online")
	r.waitValue("plc", "setpoint", "the setpoint", func(p map[string]any) bool { return p["q"] == QualityGood })

	ok := func(point, payload string) {
		t.Helper()
		res := r.set("plc", point, payload)
		if res["ok"] != true || res["err"] != nil {
			t.Errorf("set %s %s: %v", point, payload, res)
		}
	}
	refused := func(point, payload, want string) {
		t.Helper()
		res := r.set("plc", point, payload)
		if err, _ := res["err"].(string); res["ok"] != false || !strings.Contains(err, want) {
			t.Errorf("set %s %s: %v, want an error with %q", point, payload, res, want)
		}
	}
	ok("setpoint", `{"id":"a1","v":55.5}`)
	if res := r.rec.last("southbound/plc/setpoint/set/result"); res["id"] != "a1" {
		t.Errorf("result id = %v", res["id"])
	}
	r.waitValue("plc", "setpoint", "the written setpoint", func(p map[string]any) bool { return num(p["v"]) == 55.5 && p["unit"] == "°C" })
	ok("int16", `-12`)
	r.waitValue("plc", "int16", "the written Int16", func(p map[string]any) bool { return num(p["v"]) == -12 })
	ok("scaled", `"21"`) // raw 42
	r.waitValue("plc", "int16", "the scaled write", func(p map[string]any) bool { return num(p["v"]) == 42 })
	ok("array", `[4,5.5]`)
	r.waitValue("plc", "array", "the written array", func(p map[string]any) bool {
		a, _ := p["v"].([]any)
		return len(a) == 2 && num(a[1]) == 5.5
	})

	refused("readonly", `1`, "read-only (BadNotWritable)")
	refused("setpoint", `150`, "out of the range the server accepts for setpoint (BadOutOfRange)")
	refused("int16", `"abc"`, `refused before sending: type mismatch: Int16 needs a number, got the text "abc"`)
	refused("int16", `40000`, "out of range for Int16 (-32768 to 32767)")
	refused("scaled", `0.25`, "not a multiple of the scale")
	refused("notwritable", `1`, "point notwritable is not writable")
	refused("setpoint", `{"v":1,"expires":1000}`, "expired at 1000")
	refused("setpoint", `{"id":1}`, `command object has no "v"`)
	refused("nosuch", `1`, `no point "nosuch" on server plc`)
	st := r.svc.Stats()[0]
	if st.Writes != 13 || st.WriteErrors != 9 {
		t.Errorf("writes %d, errors %d; want 13 and 9", st.Writes, st.WriteErrors)
	}

	// A value whose status goes Bad is published bad with its status.
	ok("faultybad", `true`)
	p := r.waitValue("plc", "faulty", "a bad value", func(p map[string]any) bool { return p["q"] == QualityBad })
	if p["v"] != nil || p["status"] != "BadSensorFailure" {
		t.Errorf("faulty = %v", p)
	}
	ok("faultybad", `false`)
	p = r.waitValue("plc", "faulty", "good again", func(p map[string]any) bool { return p["q"] == QualityGood && num(p["v"]) == 5 })
	if _, has := p["status"]; has {
		t.Errorf("a good value carries a status: %v", p)
	}
}

// testDeadbandAndPolling checks a server-side absolute deadband, a percent
// deadband on an AnalogItem, polled points, and a value whose status
// toggles between Good and Bad.
func testDeadbandAndPolling(t *testing.T, srv *opcuatest.Server) {
	s := Server{Name: "plc", Endpoint: srv.Endpoint(), Interval: 100 * time.Millisecond, Points: []Point{
		{Name: "sine", Node: opcuatest.NodeSine, Deadband: 0.5, SamplingInterval: 50 * time.Millisecond},
		{Name: "sine_all", Node: opcuatest.NodeSine},
		{Name: "counter", Node: opcuatest.NodeCounter, Mode: ModePoll},
		{Name: "flaky", Node: opcuatest.NodeFlaky},
		{Name: "setpoint", Node: opcuatest.NodeSetpoint, Writable: true, Deadband: 10, DeadbandType: DeadbandPercent},
		// A deadband on a text: the server refuses the filter, the point is polled.
		{Name: "text", Node: "ns=1;s=Test.String", Deadband: 1},
	}}
	r := newRig(t, Config{Servers: []Server{s}}, Options{})
	r.waitStatus("plc", "online")
	testwait.For(t, wait, "10 sine values through the deadband", func() bool { return r.rec.count("southbound/plc/sine") >= 4 })
	testwait.For(t, wait, "20 polled counter values", func() bool { return r.rec.count("southbound/plc/counter") >= 20 })
	r.waitValue("plc", "flaky", "a bad flaky value", func(p map[string]any) bool { return p["q"] == QualityBad && p["status"] == "BadSensorFailure" })
	r.waitValue("plc", "flaky", "a good flaky value", func(p map[string]any) bool { return p["q"] == QualityGood && num(p["v"]) == 1 })

	sines := r.rec.payloads("southbound/plc/sine")
	for i := 1; i < len(sines); i++ {
		if d := num(sines[i]["v"]) - num(sines[i-1]["v"]); d < 0.5 && d > -0.5 {
			t.Errorf("sine %d moved %v, less than the deadband 0.5", i, d)
		}
	}
	if all := r.rec.count("southbound/plc/sine_all"); all <= 2*len(sines) {
		t.Errorf("%d values without deadband, %d with: the deadband filtered little", all, len(sines))
	}
	counts := r.rec.payloads("southbound/plc/counter")
	for i := 1; i < len(counts); i++ {
		if num(counts[i]["v"]) <= num(counts[i-1]["v"]) {
			t.Errorf("polled counter did not increase: %v then %v", counts[i-1]["v"], counts[i]["v"])
		}
	}
	st := r.svc.Stats()[0]
	r.waitValue("plc", "text", "the text", func(p map[string]any) bool { return p["v"] == "héllo OPC UA" })
	if st.Polled != 2 || st.Subscribed != 4 || st.Reads < 10 || st.Errors[ErrKindSubscription] != 1 {
		t.Errorf("stats %+v", st)
	}

	// Percent deadband: 10 % of the EURange 0..100 is 10.
	r.waitValue("plc", "setpoint", "the setpoint", func(p map[string]any) bool { return num(p["v"]) == 20 })
	n := r.rec.count("southbound/plc/setpoint")
	r.set("plc", "setpoint", `25`)
	r.set("plc", "setpoint", `45`)
	r.waitValue("plc", "setpoint", "the change beyond 10 %", func(p map[string]any) bool { return num(p["v"]) == 45 })
	for _, p := range r.rec.payloads("southbound/plc/setpoint")[n:] {
		if num(p["v"]) == 25 {
			t.Errorf("a change of 5 %% passed the 10 %% deadband: %v", p)
		}
	}
}

// TestServerRestart kills the server: the server goes offline and its
// values stale; when it is back, the session and the subscription are
// made again and values flow.
func TestServerRestart(t *testing.T) {
	srv := opcuatest.Start(t, opcuatest.Options{})
	s := Server{Name: "plc", Endpoint: srv.Endpoint(), Timeout: 2 * time.Second, Points: []Point{
		{Name: "counter", Node: opcuatest.NodeCounter},
		{Name: "readonly", Node: opcuatest.NodeReadOnly, Mode: ModePoll},
		{Name: "sp", Node: opcuatest.NodeSetpoint, Writable: true},
	}}
	r := newRig(t, Config{Servers: []Server{s}}, Options{})
	r.waitStatus("plc", "online")
	r.waitValue("plc", "counter", "a counter value", func(p map[string]any) bool { return p["q"] == QualityGood })
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	r.waitStatus("plc", "offline")
	stale := r.waitValue("plc", "counter", "a stale counter", func(p map[string]any) bool { return p["q"] == QualityStale })
	if num(stale["v"]) == 0 {
		t.Errorf("stale counter has no last value: %v", stale)
	}
	ro := r.waitValue("plc", "readonly", "a stale polled value", func(p map[string]any) bool { return p["q"] == QualityStale })
	if num(ro["v"]) != 42.5 {
		t.Errorf("stale readonly = %v", ro)
	}
	res := r.set("plc", "sp", `50`)
	if err, _ := res["err"].(string); !strings.HasPrefix(err, "server plc is offline: ") {
		t.Errorf("set while offline: %v", res)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	r.waitStatus("plc", "online")
	before := r.rec.count("southbound/plc/counter")
	testwait.For(t, wait, "counter values from the new subscription", func() bool { return r.rec.count("southbound/plc/counter") >= before+3 })
	if p := r.rec.last("southbound/plc/counter"); p["q"] != QualityGood {
		t.Errorf("counter after restart: %v", p)
	}
	r.waitValue("plc", "readonly", "a good polled value", func(p map[string]any) bool { return p["q"] == QualityGood })
	st := r.svc.Stats()[0]
	if st.Reconnects < 1 || st.Connects < 2 || st.Errors[ErrKindConnection] == 0 {
		t.Errorf("stats %+v", st)
	}
	if st.Recreated < 1 || st.Resumed != 0 {
		t.Errorf("a restarted server's session is recreated, not resumed: %+v", st)
	}
}

// testBrowse walks the address space from Objects down to a variable.
func testBrowse(t *testing.T, srv *opcuatest.Server) {
	r := newRig(t, Config{Servers: []Server{{Name: "plc", Endpoint: srv.Endpoint()}}}, Options{})
	r.waitStatus("plc", "online")
	ctx := context.Background()
	root, err := r.svc.Browse(ctx, "plc", "")
	if err != nil {
		t.Fatal(err)
	}
	var test *BrowseEntry
	for i := range root {
		if root[i].BrowseName == "1:Test" {
			test = &root[i]
		}
	}
	if test == nil || test.NodeID != opcuatest.NodeTest || test.NodeClass != "Object" || !test.HasChildren || test.BrowsePath != "1:Test" {
		t.Fatalf("Objects has no Test folder: %+v", root)
	}
	press, err := r.svc.BrowsePath(ctx, "plc", opcuatest.NodePress4, "1:Test/1:Tree/1:Plant/1:Line1/1:Press4")
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]BrowseEntry{}
	for _, e := range press {
		byName[e.BrowseName] = e
	}
	temp := byName["1:Temp"]
	if temp.NodeID != opcuatest.NodePress4Temp || temp.NodeClass != "Variable" || temp.DataType != "Double" || temp.Access != "RW" ||
		temp.BrowsePath != "1:Test/1:Tree/1:Plant/1:Line1/1:Press4/1:Temp" || temp.DisplayName != "Temp" {
		t.Errorf("Temp = %+v", temp)
	}
	if b, _ := json.Marshal(temp.Value); string(b) != "81.25" {
		t.Errorf("Temp value = %s", b)
	}
	if run := byName["1:Running"]; run.DataType != "Boolean" || fmt.Sprintf("%s", run.Value) != "true" {
		t.Errorf("Running = %+v", run)
	}
	arrays, err := r.svc.Browse(ctx, "plc", opcuatest.NodeArrays)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range arrays {
		if e.BrowseName == "1:Int32Array" {
			if b, _ := json.Marshal(e); !e.Array || !strings.Contains(string(b), `"value":[1,-2,3,2147483647]`) || e.BrowsePath != "" {
				t.Errorf("Int32Array = %s", b)
			}
		}
	}
	if _, err := r.svc.Browse(ctx, "nosuch", ""); err == nil {
		t.Error("browse of an unknown server did not fail")
	}
	r.stop()
	if st := r.rec.last("southbound/plc/status"); st["state"] != "offline" || st["err"] != "stopped" {
		t.Errorf("status after stop: %v", st)
	}
	if _, err := r.svc.Browse(ctx, "plc", ""); err == nil || !strings.Contains(err.Error(), "offline") {
		t.Errorf("browse after stop: %v", err)
	}
	// The browsed entry becomes a point: by its NodeId and its path.
	cfg := Config{Servers: []Server{{Name: "plc", Endpoint: srv.Endpoint(), Points: []Point{
		{Name: "a", Node: temp.NodeID}, {Name: "b", BrowsePath: temp.BrowsePath}}}}}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
}
