package coap

import (
	"crypto/ecdsa"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/fieldgate/fieldgate/protocols/mqtt"
)

// TestDTLSIdentityAsUsername: with dtls.identity_as_username, the PSK
// identity and the client certificate's CN are the broker username, so the
// ACL's %u rules hold per device without any password in the URL; a
// username in the query cannot claim another identity; plain CoAP is not
// affected.
func TestDTLSIdentityAsUsername(t *testing.T) {
	pki := newTestPKI(t)
	e := startEnv(t, func(b *mqtt.Config) {
		b.Auth.AllowAnonymous = false
		b.ACL = []mqtt.ACLRule{
			{Topic: "devices/%u/#", Action: "publish", Permission: "allow"},
		}
	}, func(c *Config) {
		c.DTLS.Enabled = true
		c.DTLS.IdentityAsUsername = true
		c.DTLS.PSK = []PSK{psk("dev-1", "s3cr3t-key")}
		c.DTLS.Cert, c.DTLS.Key = pki.certFile, pki.keyFile
	})
	addr := e.g.DTLSAddr().String()
	msgs := e.capture("devices/#")

	psk, err := dialDTLS(t, addr, pskClient("dev-1", "s3cr3t-key")...)
	if err != nil {
		t.Fatalf("PSK handshake: %v", err)
	}
	if code, body := do(t, psk, codes.POST, message.Confirmable, "/ps/devices/dev-1/t", nil, []byte("mine")); code != codes.Changed {
		t.Fatalf("PSK identity publishing to its own topic: %v (%s)", code, body)
	}
	if m := recv(t, msgs); m.Topic != "devices/dev-1/t" || string(m.Payload) != "mine" {
		t.Fatalf("got %s %q", m.Topic, m.Payload)
	}
	if code, _ := do(t, psk, codes.POST, message.Confirmable, "/ps/devices/dev-2/t", nil, []byte("theirs")); code != codes.Forbidden {
		t.Fatalf("PSK identity publishing to another device's topic: %v, want 4.03", code)
	}
	// A username in the query does not override what DTLS authenticated.
	if code, _ := do(t, psk, codes.POST, message.Confirmable, "/ps/devices/dev-2/t?clientid=x&username=dev-2", nil, []byte("claim")); code != codes.Forbidden {
		t.Fatalf("claiming another username over DTLS: %v, want 4.03", code)
	}

	// Without dtls.ca the server does not verify client certificates: the
	// CN of one a client offers anyway is not an identity.
	unverified, err := dialDTLS(t, addr,
		piondtls.WithCertificates(pki.client),
		piondtls.WithRootCAs(pki.roots),
		piondtls.WithServerName("127.0.0.1"),
	)
	if err != nil {
		t.Fatalf("certificate handshake: %v", err)
	}
	if code, _ := do(t, unverified, codes.POST, message.NonConfirmable, "/ps/devices/dev-cert/t", nil, []byte("cn")); code != codes.Unauthorized {
		t.Fatalf("unverified certificate's CN: %v, want 4.01", code)
	}

	// Plain CoAP: anonymous is refused, as before.
	plain := e.dial()
	if code, _ := do(t, plain, codes.POST, message.Confirmable, "/ps/devices/dev-1/t", nil, []byte("x")); code != codes.Unauthorized {
		t.Fatalf("anonymous plain CoAP: %v, want 4.01", code)
	}
	noMessage(t, msgs, 50*time.Millisecond)
}

// TestDTLSCertificateCNAsUsername: with dtls.ca, the verified client
// certificate's CN is the username.
func TestDTLSCertificateCNAsUsername(t *testing.T) {
	pki := newTestPKI(t)
	e := startEnv(t, func(b *mqtt.Config) {
		b.Auth.AllowAnonymous = false
		b.ACL = []mqtt.ACLRule{{Topic: "devices/%u/#", Action: "publish", Permission: "allow"}}
	}, func(c *Config) {
		c.DTLS.Enabled = true
		c.DTLS.IdentityAsUsername = true
		c.DTLS.Cert, c.DTLS.Key, c.DTLS.CA = pki.certFile, pki.keyFile, pki.caFile
	})
	msgs := e.capture("devices/#")
	cc, err := dialDTLS(t, e.g.DTLSAddr().String(),
		piondtls.WithCertificates(pki.client), // CN "dev-cert"
		piondtls.WithRootCAs(pki.roots),
		piondtls.WithServerName("127.0.0.1"),
	)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if code, body := do(t, cc, codes.POST, message.NonConfirmable, "/ps/devices/dev-cert/t", nil, []byte("cn")); code != codes.Changed {
		t.Fatalf("CN publishing to its own topic: %v (%s)", code, body)
	}
	if m := recv(t, msgs); m.Topic != "devices/dev-cert/t" || string(m.Payload) != "cn" {
		t.Fatalf("got %s %q", m.Topic, m.Payload)
	}
	if code, _ := do(t, cc, codes.POST, message.Confirmable, "/ps/devices/dev-1/t", nil, []byte("x")); code != codes.Forbidden {
		t.Fatalf("CN publishing to another device's topic: %v, want 4.03", code)
	}
	noMessage(t, msgs, 50*time.Millisecond)
}

// TestDTLSLibcoapCertificates: libcoap's coap-client (OpenSSL and GnuTLS
// builds) with a client certificate; with identity_as_username its CN is
// the username the ACL sees.
func TestDTLSLibcoapCertificates(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	writePEM(t, certFile, "CERTIFICATE", pki.client.Certificate[0])
	keyDER, err := x509.MarshalECPrivateKey(pki.client.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
	e := startEnv(t, func(b *mqtt.Config) {
		b.Auth.AllowAnonymous = false
		b.ACL = []mqtt.ACLRule{{Topic: "devices/%u/#", Action: "publish", Permission: "allow"}}
	}, func(c *Config) {
		c.DTLS.Enabled = true
		c.DTLS.IdentityAsUsername = true
		c.DTLS.Cert, c.DTLS.Key, c.DTLS.CA = pki.certFile, pki.keyFile, pki.caFile
	})
	base := "coaps://" + e.g.DTLSAddr().String() + "/ps/"
	msgs := e.capture("devices/#")
	for _, name := range []string{"coap-client-openssl", "coap-client-gnutls"} {
		t.Run(name, func(t *testing.T) {
			bin, err := exec.LookPath(name)
			if err != nil {
				if os.Getenv("CI") != "" {
					t.Fatalf("%s (Debian libcoap3-bin) not on PATH", name)
				}
				t.Skipf("%s (Debian libcoap3-bin) not on PATH", name)
			}
			ctx := ctxT(t)
			run(t, ctx, bin, "-m", "post", "-c", certFile, "-j", keyFile, "-C", pki.caFile,
				"-e", "cert-"+name, base+"devices/dev-cert/x?qos=1")
			if m := recv(t, msgs); m.Topic != "devices/dev-cert/x" || string(m.Payload) != "cert-"+name {
				t.Fatalf("got %s %q", m.Topic, m.Payload)
			}
			// Another device's topic: the ACL, with the CN as %u, refuses.
			out, _ := exec.CommandContext(ctx, bin, "-m", "post", "-c", certFile, "-j", keyFile, "-C", pki.caFile,
				"-e", "not mine", base+"devices/other/x?qos=1").CombinedOutput()
			if !strings.Contains(string(out), "4.03") {
				t.Fatalf("publish to another device's topic: %s, want 4.03", out)
			}
		})
	}
	noMessage(t, msgs, 50*time.Millisecond)
}
