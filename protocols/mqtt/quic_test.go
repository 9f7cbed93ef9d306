package mqtt

import (
	"context"
	"crypto/tls"
	"net"
	"net/url"
	"testing"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/quic-go/quic-go"

	"github.com/fieldgate/fieldgate/internal/quicconn"
	"github.com/fieldgate/fieldgate/internal/testpki"
)

// TestQUICListener: an MQTT 5 client over a QUIC stream (ALPN "mqtt")
// publishes to a subscriber on TCP; a client offering another ALPN is
// refused in the handshake.
func TestQUICListener(t *testing.T) {
	pki := testpki.New(t, "quic test CA")
	tb := startBroker(t, "-", func(c *Config) {
		c.Listeners.TLS.TLSFiles = TLSFiles{Cert: pki.CertFile, Key: pki.KeyFile, MinVersion: "1.2"}
		c.Listeners.QUIC.Enabled = true
		c.Listeners.QUIC.Address = "127.0.0.1:0"
	})
	addr := tb.Addr("quic")
	if addr == "" {
		t.Fatal("no quic listener")
	}
	sub := connectV5(t, tb, "tcp-sub", nil)
	sub.sub(t, "q/#", 1, nil)

	c := dialQUICv3(t, addr, &tls.Config{RootCAs: pki.Pool, NextProtos: []string{quicconn.ALPN}}, "over-quic")
	if tok := c.Publish("q/1", 1, false, "via quic"); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("publish over quic: %v", tok.Error())
	}
	if m := recv(t, sub.Msgs, waitFor, "message from the quic client"); string(m.Payload) != "via quic" {
		t.Fatalf("got %q", m.Payload)
	}
	c.Disconnect(100)

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := quic.DialAddr(ctx, addr, &tls.Config{RootCAs: pki.Pool, NextProtos: []string{"h3"}}, nil); err == nil {
		t.Fatal("a client with ALPN h3 was accepted")
	} else {
		t.Logf("wrong ALPN: %v", err)
	}
}

// TestQUICResumes0RTT: a client returning with a session ticket sends its
// CONNECT as 0-RTT data and is served.
func TestQUICResumes0RTT(t *testing.T) {
	pki := testpki.New(t, "quic test CA")
	tb := startBroker(t, "-", func(c *Config) {
		c.Listeners.TLS.TLSFiles = TLSFiles{Cert: pki.CertFile, Key: pki.KeyFile, MinVersion: "1.2"}
		c.Listeners.QUIC.Enabled = true
		c.Listeners.QUIC.Address = "127.0.0.1:0"
	})
	tc := &tls.Config{RootCAs: pki.Pool, NextProtos: []string{quicconn.ALPN}, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	for i := range 2 {
		var used bool
		c := dialQUICv3(t, tb.Addr("quic"), tc, "early", func(qc *quic.Conn) { used = qc.ConnectionState().Used0RTT })
		c.Disconnect(100)
		if i == 1 && !used {
			t.Fatal("the second connection did not use 0-RTT")
		}
		// The session ticket came with the handshake, before the CONNACK.
	}
}

// dialQUICv3 connects an MQTT 3.1.1 client (paho.mqtt.golang, which writes
// each packet at once; paho.golang does not, and corrupts a QUIC stream)
// over a QUIC stream opened with 0-RTT when tc holds a session ticket. Each
// connected QUIC connection is passed to the inspect functions.
func dialQUICv3(t *testing.T, addr string, tc *tls.Config, id string, inspect ...func(*quic.Conn)) pahov3.Client {
	t.Helper()
	o := pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetAutoReconnect(false)
	var last *quic.Conn
	o.SetCustomOpenConnectionFn(func(*url.URL, pahov3.ClientOptions) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		qc, err := quic.DialAddrEarly(ctx, addr, tc, nil)
		if err != nil {
			return nil, err
		}
		st, err := qc.OpenStreamSync(ctx)
		if err != nil {
			return nil, err
		}
		last = qc
		return quicconn.New(qc, st), nil
	})
	c := pahov3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("connect over quic: %v", tok.Error())
	}
	for _, f := range inspect {
		f(last)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}
