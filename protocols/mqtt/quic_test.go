package mqtt

import (
	"context"
	"crypto/tls"
	"testing"

	"github.com/eclipse/paho.golang/paho"
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

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	qc, err := quic.DialAddr(ctx, addr, &tls.Config{RootCAs: pki.Pool, NextProtos: []string{quicconn.ALPN}}, nil)
	if err != nil {
		t.Fatalf("quic dial: %v", err)
	}
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conn := quicconn.New(qc, st)
	defer conn.Close()
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: "over-quic", CleanStart: true, KeepAlive: 30})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect over quic: %v %+v", err, ca)
	}
	if _, err := c.Publish(ctx, &paho.Publish{Topic: "q/1", QoS: 1, Payload: []byte("via quic")}); err != nil {
		t.Fatalf("publish over quic: %v", err)
	}
	if m := recv(t, sub.Msgs, waitFor, "message from the quic client"); string(m.Payload) != "via quic" {
		t.Fatalf("got %q", m.Payload)
	}
	_ = c.Disconnect(&paho.Disconnect{})

	if _, err := quic.DialAddr(ctx, addr, &tls.Config{RootCAs: pki.Pool, NextProtos: []string{"h3"}}, nil); err == nil {
		t.Fatal("a client with ALPN h3 was accepted")
	} else {
		t.Logf("wrong ALPN: %v", err)
	}
}
