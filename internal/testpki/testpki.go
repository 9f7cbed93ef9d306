// Package testpki makes throwaway certificate authorities and certificates
// for tests and benchmarks: a CA, a server certificate for 127.0.0.1 and
// localhost, and a client certificate, as PEM files and as loaded values.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
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
	p, err := Make(t.TempDir(), name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// issuer signs certificates.
type issuer struct {
	serial int64
}

func (is *issuer) issue(tmpl, parent *x509.Certificate, signer *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	is.serial++
	tmpl.SerialNumber = big.NewInt(is.serial)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	if parent == nil {
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// Make is New for programs (benchmarks): the files go to dir.
func Make(dir, name string) (*PKI, error) {
	is := &issuer{serial: time.Now().UnixNano()}
	ca, caKey, err := is.issue(&x509.Certificate{
		Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("testpki: CA: %w", err)
	}
	srv, srvKey, err := is.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "broker"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:    []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, caKey)
	if err != nil {
		return nil, fmt.Errorf("testpki: server certificate: %w", err)
	}
	cli, cliKey, err := is.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "device-7"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, caKey)
	if err != nil {
		return nil, fmt.Errorf("testpki: client certificate: %w", err)
	}
	srvKeyPEM, err := keyPEM(srvKey)
	if err != nil {
		return nil, err
	}
	cliKeyPEM, err := keyPEM(cliKey)
	if err != nil {
		return nil, err
	}
	client, err := tls.X509KeyPair(certPEM(cli), cliKeyPEM)
	if err != nil {
		return nil, err
	}
	p := &PKI{
		CAFile:         filepath.Join(dir, "ca.pem"),
		CertFile:       filepath.Join(dir, "server.pem"),
		KeyFile:        filepath.Join(dir, "server.key"),
		ClientCertFile: filepath.Join(dir, "client.pem"),
		ClientKeyFile:  filepath.Join(dir, "client.key"),
		Pool:           x509.NewCertPool(),
		Client:         client,
	}
	p.Pool.AddCert(ca)
	for file, data := range map[string][]byte{
		p.CAFile: certPEM(ca), p.CertFile: certPEM(srv), p.KeyFile: srvKeyPEM,
		p.ClientCertFile: certPEM(cli), p.ClientKeyFile: cliKeyPEM,
	} {
		if err := os.WriteFile(file, data, 0o600); err != nil {
			return nil, fmt.Errorf("testpki: %w", err)
		}
	}
	return p, nil
}
