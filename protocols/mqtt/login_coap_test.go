package mqtt_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/fieldgate/fieldgate/internal/secret"
	"github.com/fieldgate/fieldgate/protocols/coap"
	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// TestLoginForgedCoAPDatagrams is issue 17's item 4 as it was reported,
// with real CoAP datagrams: on the default config (plus one user), five CoAP
// publishes with a bad password "from" 127.0.0.88 (a UDP source anyone on
// the LAN can forge), then a correct MQTT login over TCP from 127.0.0.88.
// That login used to get CONNACK 0x05 (v5 0x86) for up to 16 minutes; it
// must get 0.
//
// It lives in package mqtt_test because protocols/coap imports
// protocols/mqtt; the test only uses both packages' public API.
func TestLoginForgedCoAPDatagrams(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	bcfg := mqtt.DefaultConfig()
	bcfg.Listeners.TCP.Address = "127.0.0.1:0"
	bcfg.Listeners.WebSocket.Enabled = false
	bcfg.Auth.Users = []mqtt.User{{Username: "alice", PasswordHash: secret.New(string(hash))}}
	if err := bcfg.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := mqtt.New(bcfg, mqtt.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	bdone := make(chan error, 1)
	go func() { bdone <- b.Run(ctx) }()
	ccfg := coap.DefaultConfig()
	ccfg.Address = "127.0.0.1:0"
	g, err := coap.New(ccfg, b, log)
	if err != nil {
		cancel()
		<-bdone
		t.Fatal(err)
	}
	gdone := make(chan error, 1)
	go func() { gdone <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-gdone
		<-bdone
	})

	const victim = "127.0.0.88"
	forger, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(victim)})
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	gw := g.Addr().(*net.UDPAddr)
	for i := 0; i < 5; i++ {
		code := coapPost(t, forger, gw, uint16(100+i), "t", "u=alice", "p=forged")
		if code != 0x81 { // 4.01 Unauthorized
			t.Fatalf("forged datagram %d: CoAP code %d.%02d, want 4.01", i+1, code>>5, code&31)
		}
	}
	if n := b.Stats().AuthFailures.Load(); n != 5 {
		t.Fatalf("AuthFailures = %d after 5 forged datagrams, want 5", n)
	}
	start := time.Now()
	for _, level := range []byte{4, 5} {
		if code := connectFrom(t, b.Addr("tcp"), victim, level, "alice", "pw"); code != 0 {
			t.Fatalf("MQTT level %d login from %s after 5 forged CoAP failures: CONNACK %#x, want 0", level, victim, code)
		}
	}
	t.Logf("correct MQTT logins from %s accepted %s after the forged datagrams", victim, time.Since(start).Round(time.Millisecond))
	// The forged failures throttle only plain-UDP logins from that address:
	// even a correct CoAP login from it waits for block_for.
	if code := coapPost(t, forger, gw, 200, "t", "u=alice", "p=pw"); code != 0x81 {
		t.Errorf("correct CoAP login from %s right after: %d.%02d, want 4.01 (throttled)", victim, code>>5, code&31)
	}
	other, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.89")})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if code := coapPost(t, other, gw, 300, "t", "u=alice", "p=pw"); code>>5 != 2 {
		t.Errorf("correct CoAP login from another address: %d.%02d, want 2.xx", code>>5, code&31)
	}
}

// coapPost sends a confirmable POST /ps/{topic}?{query...} with payload "x"
// from conn and returns the response code (class<<5 | detail). An empty ACK
// (separate response) is skipped; a confirmable response is acknowledged.
func coapPost(t *testing.T, conn *net.UDPConn, to *net.UDPAddr, mid uint16, topic string, query ...string) byte {
	t.Helper()
	token := []byte{byte(mid >> 8), byte(mid)}
	msg := []byte{0x40 | byte(len(token)), 0x02, byte(mid >> 8), byte(mid)} // CON, POST
	msg = append(msg, token...)
	last := 0
	opt := func(num int, v string) {
		delta, n := num-last, len(v)
		last = num
		if delta >= 13 || n >= 13 {
			t.Fatalf("option %d too long for this encoder", num)
		}
		msg = append(msg, byte(delta<<4|n))
		msg = append(msg, v...)
	}
	opt(11, "ps") // Uri-Path
	opt(11, topic)
	for _, q := range query {
		opt(15, q) // Uri-Query
	}
	msg = append(msg, 0xFF, 'x')
	if _, err := conn.WriteToUDP(msg, to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_ = conn.SetReadDeadline(deadline)
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no CoAP response within 10 s: %v", err)
		}
		if n < 4 {
			continue
		}
		typ, tkl, code := buf[0]>>4&3, int(buf[0]&15), buf[1]
		if typ == 0 { // a confirmable (separate) response: acknowledge it
			_, _ = conn.WriteToUDP([]byte{0x60, 0, buf[2], buf[3]}, to)
		}
		if code == 0 || n < 4+tkl || string(buf[4:4+tkl]) != string(token) {
			continue
		}
		return code
	}
}

// connectFrom sends a raw CONNECT (protocol level 4 or 5) from the loopback
// address ip and returns the CONNACK's reason code.
func connectFrom(t *testing.T, addr, ip string, level byte, user, pass string) byte {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", ip, err)
	}
	defer c.Close()
	str := func(b []byte, s string) []byte {
		return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
	}
	body := str(nil, "MQTT")
	body = append(body, level, 0xC2, 0, 60) // username, password, clean start
	if level == 5 {
		body = append(body, 0)
	}
	body = str(body, "victim")
	body = str(body, user)
	body = str(body, pass)
	pkt := append([]byte{0x10, byte(len(body))}, body...)
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	h := make([]byte, 4)
	if _, err := io.ReadFull(r, h); err != nil || h[0] != 0x20 {
		t.Fatalf("no CONNACK: % x %v", h, err)
	}
	return h[3]
}
