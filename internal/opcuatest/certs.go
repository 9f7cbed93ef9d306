package opcuatest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// WriteAppCert makes a self-signed RSA 2048 OPC UA application certificate
// named name for the application URI uri (in the URI SAN, as OPC UA
// requires) and 127.0.0.1/localhost, writes it and its PKCS#1 key as PEM,
// and returns the certificate's DER. Name the files *.pem: gopcua reads
// other names as DER. OPC UA's RSA security policies need RSA keys, so
// internal/testpki's ECDSA certificates do not fit.
func WriteAppCert(certFile, keyFile, name, uri string) ([]byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate RSA key: %w", err)
	}
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("parse application URI: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"fieldgate"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("write certificate: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("write key: %w", err)
	}
	return der, nil
}

// TrustClientCert adds the client certificate in file (PEM or DER) to the
// running server's trust list, as an operator would: node-opcua moves it
// out of PKIDir/rejected if it refused it before. It takes effect at once
// and stays across Restart.
func (s *Server) TrustClientCert(file string) error {
	abs, err := filepath.Abs(file)
	if err != nil {
		return fmt.Errorf("trust client certificate: %w", err)
	}
	if _, err := os.Stat(abs); err != nil {
		return fmt.Errorf("trust client certificate: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.TrustedClientCerts = append(s.opts.TrustedClientCerts, abs)
	if s.cmd == nil {
		return nil
	}
	if err := s.commandLocked("trust " + abs); err != nil {
		return fmt.Errorf("trust client certificate: %w", err)
	}
	return nil
}
