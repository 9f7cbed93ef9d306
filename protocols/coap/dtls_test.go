package coap

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/fieldgate/fieldgate/bus"
)

// dialDTLS makes the DTLS handshake with the gateway explicitly, within
// 3 s, and returns a go-coap client on the connection (closed at test
// end). pion's client (and so go-coap's dtls.Dial) only shakes hands on the
// first write, and a server that cannot decrypt a client's Finished (wrong
// key) drops it silently, as RFC 6347 §4.1.2.7 wants: a failing handshake
// would otherwise surface only as a request timing out.
func dialDTLS(t *testing.T, addr string, opts ...piondtls.ClientOption) (*udpClient.Conn, error) {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := piondtls.ClientWithOptions(pc, raddr, opts...)
	if err != nil {
		_ = pc.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		return nil, err
	}
	cc := dtls.Client(conn, options.WithCloseSocket())
	t.Cleanup(func() { _ = cc.Close(); <-cc.Done() })
	return cc, nil
}

func pskClient(identity, key string) []piondtls.ClientOption {
	return []piondtls.ClientOption{
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(key), nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	}
}

func TestDTLSPSK(t *testing.T) {
	e := startEnv(t, nil, func(c *Config) {
		c.DTLS.Enabled = true
		c.DTLS.PSK = []PSK{psk("dev-1", "s3cr3t-key"), psk("dev-2", "other-key")}
	})
	addr := e.g.DTLSAddr().String()
	msgs := e.capture("dtls/#")

	t.Run("go-coap dtls.Dial publishes", func(t *testing.T) {
		// go-coap's own dialer, handshake on the first request.
		cc, err := dtls.Dial(addr, dtls.NewDTLSClientOptions(pskClient("dev-1", "s3cr3t-key")...))
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer func() { _ = cc.Close(); <-cc.Done() }()
		if code, body := do(t, cc, codes.POST, message.Confirmable, "/ps/dtls/x", nil, []byte("secure")); code != codes.Changed {
			t.Fatalf("publish over DTLS: %v (%s)", code, body)
		}
		if m := recv(t, msgs); string(m.Payload) != "secure" || m.QoS != 1 {
			t.Fatalf("got %q qos %d", m.Payload, m.QoS)
		}
	})
	t.Run("observe and block-wise", func(t *testing.T) {
		cc, err := dialDTLS(t, addr, pskClient("dev-2", "other-key")...)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		obs := newObserver()
		if _, err := cc.Observe(ctxT(t), "/ps/dtls/obs", obs.fn); err != nil {
			t.Fatal(err)
		}
		eventually(t, "observer over DTLS", func() bool { return e.g.Stats().Observers == 1 })
		big := bytes.Repeat([]byte("abcdefghij"), 300) // 3000 bytes: Block2
		if err := e.b.Publish(ctxT(t), bus.Message{Topic: "dtls/obs", Payload: big, QoS: 1}); err != nil {
			t.Fatal(err)
		}
		if n := obs.next(t); !bytes.Equal(n.payload, big) {
			t.Fatalf("notification over DTLS: %d bytes", len(n.payload))
		}
		if m := recv(t, msgs); m.Topic != "dtls/obs" {
			t.Fatalf("capture got %s", m.Topic)
		}
		up := numbered(5000) // Block1
		if code, body := do(t, cc, codes.PUT, message.Confirmable, "/ps/dtls/up", nil, up); code != codes.Changed {
			t.Fatalf("block-wise upload over DTLS: %v (%s)", code, body)
		}
		if m := recv(t, msgs); !bytes.Equal(m.Payload, up) {
			t.Fatalf("upload over DTLS: %d bytes", len(m.Payload))
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		if _, err := dialDTLS(t, addr, pskClient("dev-1", "wrong-key")...); err == nil {
			t.Fatal("handshake with a wrong key succeeded")
		}
	})
	t.Run("unknown identity", func(t *testing.T) {
		if _, err := dialDTLS(t, addr, pskClient("nobody", "s3cr3t-key")...); err == nil {
			t.Fatal("handshake with an unknown identity succeeded")
		}
	})
	noMessage(t, msgs, 50*time.Millisecond)
}

// testPKI is a CA with a server and a client certificate; the CA and the
// server's certificate and key are PEM files, as the config names them.
type testPKI struct {
	caFile, certFile, keyFile string
	roots                     *x509.CertPool
	client                    tls.Certificate
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, caCert, caDER := makeCert(t, "fieldgate test CA", nil, nil)
	serverKey, _, serverDER := makeCert(t, "gateway", caCert, caKey)
	clientKey, _, clientDER := makeCert(t, "dev-cert", caCert, caKey)
	p := testPKI{
		caFile:   filepath.Join(dir, "ca.pem"),
		certFile: filepath.Join(dir, "server.pem"),
		keyFile:  filepath.Join(dir, "server.key"),
		roots:    x509.NewCertPool(),
		client:   tls.Certificate{Certificate: [][]byte{clientDER}, PrivateKey: clientKey},
	}
	p.roots.AddCert(caCert)
	keyDER, err := x509.MarshalECPrivateKey(serverKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, p.caFile, "CERTIFICATE", caDER)
	writePEM(t, p.certFile, "CERTIFICATE", serverDER)
	writePEM(t, p.keyFile, "EC PRIVATE KEY", keyDER)
	return p
}

// makeCert makes an ECDSA P-256 certificate: a CA when parent is nil
// (self-signed), else a leaf for 127.0.0.1 signed by parent.
func makeCert(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	signer, signerKey := parent, parentKey
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
		signer, signerKey = tmpl, key
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, der
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestDTLSCertificates(t *testing.T) {
	pki := newTestPKI(t)
	e := startEnv(t, nil, func(c *Config) {
		c.DTLS.Enabled = true
		c.DTLS.Cert, c.DTLS.Key, c.DTLS.CA = pki.certFile, pki.keyFile, pki.caFile
	})
	addr := e.g.DTLSAddr().String()
	msgs := e.capture("pki/#")

	t.Run("client certificate", func(t *testing.T) {
		cc, err := dialDTLS(t, addr,
			piondtls.WithCertificates(pki.client),
			piondtls.WithRootCAs(pki.roots),
			piondtls.WithServerName("127.0.0.1"),
		)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		if code, body := do(t, cc, codes.POST, message.NonConfirmable, "/ps/pki/x", nil, []byte("signed")); code != codes.Changed {
			t.Fatalf("publish: %v (%s)", code, body)
		}
		if m := recv(t, msgs); string(m.Payload) != "signed" || m.QoS != 0 {
			t.Fatalf("got %q qos %d", m.Payload, m.QoS)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		if _, err := dialDTLS(t, addr, piondtls.WithRootCAs(pki.roots), piondtls.WithServerName("127.0.0.1")); err == nil {
			t.Fatal("handshake without a client certificate succeeded though dtls.ca is set")
		}
	})
	t.Run("client certificate of another CA", func(t *testing.T) {
		other := newTestPKI(t)
		if _, err := dialDTLS(t, addr, piondtls.WithCertificates(other.client), piondtls.WithRootCAs(pki.roots), piondtls.WithServerName("127.0.0.1")); err == nil {
			t.Fatal("handshake with a certificate of another CA succeeded")
		}
	})
	t.Run("server not trusted", func(t *testing.T) {
		other := newTestPKI(t)
		if _, err := dialDTLS(t, addr, piondtls.WithCertificates(pki.client), piondtls.WithRootCAs(other.roots), piondtls.WithServerName("127.0.0.1")); err == nil {
			t.Fatal("client accepted a server certificate of an unknown CA")
		}
	})
	noMessage(t, msgs, 50*time.Millisecond)
}

// TestDTLSLibcoap talks DTLS PSK with libcoap's coap-client built on
// OpenSSL and on GnuTLS (Debian libcoap3-bin).
func TestDTLSLibcoap(t *testing.T) {
	e := startEnv(t, nil, func(c *Config) {
		c.DTLS.Enabled = true
		c.DTLS.PSK = []PSK{psk("dev-1", "s3cr3t-key")}
	})
	base := "coaps://" + e.g.DTLSAddr().String() + "/ps/"
	msgs := e.capture("lc/#")
	for _, name := range []string{"coap-client-openssl", "coap-client-gnutls"} {
		t.Run(name, func(t *testing.T) {
			bin, err := exec.LookPath(name)
			if err != nil {
				t.Skipf("%s (Debian libcoap3-bin) not on PATH", name)
			}
			ctx := ctxT(t)
			run(t, ctx, bin, "-m", "post", "-u", "dev-1", "-k", "s3cr3t-key", "-e", "over-"+name, base+"lc/x?qos=1")
			if m := recv(t, msgs); string(m.Payload) != "over-"+name || m.QoS != 1 {
				t.Fatalf("got %q qos %d", m.Payload, m.QoS)
			}
			big := numbered(3000)
			file := filepath.Join(t.TempDir(), "big")
			if err := os.WriteFile(file, big, 0o600); err != nil {
				t.Fatal(err)
			}
			run(t, ctx, bin, "-m", "put", "-b", "256", "-u", "dev-1", "-k", "s3cr3t-key", "-f", file, base+"lc/big")
			if m := recv(t, msgs); !bytes.Equal(m.Payload, big) {
				t.Fatalf("block-wise upload over DTLS: %d bytes", len(m.Payload))
			}
			// A wrong key: the handshake fails, nothing is published.
			_ = exec.CommandContext(ctx, bin, "-m", "post", "-B", "2", "-u", "dev-1", "-k", "wrong-key", "-e", "forged", base+"lc/x").Run()
			noMessage(t, msgs, 50*time.Millisecond)
		})
	}
}
