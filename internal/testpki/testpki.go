// Package testpki makes throwaway certificate authorities and certificates
// for tests: a CA, a server certificate for 127.0.0.1 and localhost, and a
// client certificate, as PEM files in a test's temporary directory and as
// loaded values.
package testpki

import (
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
	"path/filepath"
	"testing"
	"time"
)

// PKI is one test CA with a server and a client certificate.
type PKI struct {
	CAFile, CertFile, KeyFile     string // CA bundle, server certificate and key
	ClientCertFile, ClientKeyFile string // client certificate (CN "device-7") and key
	Pool                          *x509.CertPool
	Client                        tls.Certificate
}

// New makes a PKI whose files live in t.TempDir(). The server certificate
// names 127.0.0.1, ::1 and localhost; the CA is named name.
func New(t testing.TB, name string) *PKI {
	t.Helper()
	dir := t.TempDir()
	serial := int64(time.Now().UnixNano())
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	newCert := func(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) *x509.Certificate {
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore = time.Now().Add(-time.Hour)
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	certPEM := func(c *x509.Certificate) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	keyPEM := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	write := func(file string, b []byte) string {
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey := newKey()
	ca := newCert(&x509.Certificate{
		Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil, &caKey.PublicKey, caKey)
	sk := newKey()
	srv := newCert(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "broker"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:    []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, &sk.PublicKey, caKey)
	ck := newKey()
	cli := newCert(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "device-7"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, &ck.PublicKey, caKey)
	client, err := tls.X509KeyPair(certPEM(cli), keyPEM(ck))
	if err != nil {
		t.Fatal(err)
	}
	p := &PKI{
		CAFile:         write("ca.pem", certPEM(ca)),
		CertFile:       write("server.pem", certPEM(srv)),
		KeyFile:        write("server.key", keyPEM(sk)),
		ClientCertFile: write("client.pem", certPEM(cli)),
		ClientKeyFile:  write("client.key", keyPEM(ck)),
		Pool:           x509.NewCertPool(),
		Client:         client,
	}
	p.Pool.AddCert(ca)
	return p
}
