package opcua

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gopcua/opcua"

	"github.com/fieldgate/fieldgate/internal/atomicfile"
)

// Files of the application certificate under Options.DataDir.
const (
	certDir      = "opcua"
	certFile     = "cert.der"
	keyFile      = "key.pem"
	trustSubdir  = "trusted"
	certValidity = 20 * 365 * 24 * time.Hour
)

// Thumbprint returns the SHA-1 of a certificate's DER bytes in upper-case
// hex, as OPC UA tools show it.
func Thumbprint(der []byte) string {
	sum := sha1.Sum(der)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// ParseCertificate describes a DER (or PEM) certificate.
func ParseCertificate(data []byte) (Certificate, error) {
	der := data
	if b, _ := pem.Decode(data); b != nil {
		der = b.Bytes
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return Certificate{}, fmt.Errorf("parse certificate: %w", err)
	}
	info := Certificate{
		Thumbprint: Thumbprint(c.Raw),
		Subject:    c.Subject.String(),
		NotBefore:  c.NotBefore,
		NotAfter:   c.NotAfter,
		DER:        c.Raw,
	}
	for _, u := range c.URIs {
		info.ApplicationURI = u.String()
		break
	}
	return info, nil
}

// ServerCertificate asks the server at endpoint for its endpoints (no
// session, no security needed) and returns the certificate they carry, with
// its thumbprint, so that a person can compare it with what the server
// shows before trusting it.
func ServerCertificate(ctx context.Context, endpoint string) (thumbprint string, der []byte, err error) {
	eps, err := opcua.GetEndpoints(ctx, endpoint)
	if err != nil {
		return "", nil, fmt.Errorf("opcua: get endpoints of %s: %w", endpoint, err)
	}
	for _, ep := range eps {
		if len(ep.ServerCertificate) > 0 {
			c, err := ParseCertificate(ep.ServerCertificate)
			if err != nil {
				return "", nil, fmt.Errorf("opcua: %s: %w", endpoint, err)
			}
			return c.Thumbprint, c.DER, nil
		}
	}
	return "", nil, fmt.Errorf("opcua: %s sent no certificate with its endpoints", endpoint)
}

// Trust adds a certificate (DER or PEM) to the trust directory dir as
// <thumbprint>.der and describes it.
func Trust(dir string, data []byte) (Certificate, error) {
	c, err := ParseCertificate(data)
	if err != nil {
		return Certificate{}, fmt.Errorf("opcua: trust: %w", err)
	}
	if dir == "" {
		return Certificate{}, errors.New("opcua: trust: no trust directory")
	}
	if err := atomicfile.Write(filepath.Join(dir, c.Thumbprint+".der"), c.DER, 0o644); err != nil {
		return Certificate{}, fmt.Errorf("opcua: trust %s: %w", c.Thumbprint, err)
	}
	return c, nil
}

// Untrust removes the certificate with this thumbprint from dir (every file
// holding it).
func Untrust(dir, thumbprint string) error {
	certs, files, err := readTrustDir(dir)
	if err != nil {
		return err
	}
	found := false
	for i, c := range certs {
		if strings.EqualFold(c.Thumbprint, thumbprint) {
			found = true
			if err := os.Remove(files[i]); err != nil {
				return fmt.Errorf("opcua: untrust %s: %w", thumbprint, err)
			}
		}
	}
	if !found {
		return fmt.Errorf("opcua: untrust: %s is not in the trust list", thumbprint)
	}
	return nil
}

// TrustList describes the certificates in the trust directory dir (files
// that are not certificates are skipped), sorted by thumbprint.
func TrustList(dir string) ([]Certificate, error) {
	certs, _, err := readTrustDir(dir)
	return certs, err
}

func readTrustDir(dir string) ([]Certificate, []string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("opcua: read trust directory: %w", err)
	}
	var certs []Certificate
	var files []string
	for _, e := range ents {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if e.IsDir() || (ext != ".der" && ext != ".pem" && ext != ".crt" && ext != ".cer") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, nil, fmt.Errorf("opcua: read trust directory: %w", err)
		}
		c, err := ParseCertificate(data)
		if err != nil {
			continue
		}
		certs = append(certs, c)
		files = append(files, p)
	}
	idx := make([]int, len(certs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return strings.Compare(certs[a].Thumbprint, certs[b].Thumbprint) })
	sc, sf := make([]Certificate, len(certs)), make([]string, len(certs))
	for i, j := range idx {
		sc[i], sf[i] = certs[j], files[j]
	}
	return sc, sf, nil
}

// trusted reports whether der is in dir.
func trusted(dir string, der []byte) (bool, error) {
	certs, _, err := readTrustDir(dir)
	if err != nil {
		return false, err
	}
	tp := Thumbprint(der)
	for _, c := range certs {
		if c.Thumbprint == tp {
			return true, nil
		}
	}
	return false, nil
}

// appCert is the gateway's application instance certificate.
type appCert struct {
	der []byte
	key *rsa.PrivateKey
}

// loadOrCreateCert reads the application certificate from dir, or makes and
// stores one (key 0600) when there is none or when it does not carry uri.
// An empty dir makes one in memory.
func loadOrCreateCert(dir, uri, name string) (appCert, error) {
	certPath, keyPath := filepath.Join(dir, certFile), filepath.Join(dir, keyFile)
	if dir != "" {
		der, err1 := os.ReadFile(certPath)
		keyPEM, err2 := os.ReadFile(keyPath)
		if err1 == nil && err2 == nil {
			c, err := parseAppCert(der, keyPEM)
			if err != nil {
				return appCert{}, fmt.Errorf("opcua: application certificate in %s: %w", dir, err)
			}
			if certHasURI(c.der, uri) {
				return c, nil
			}
		} else if !errors.Is(err1, os.ErrNotExist) && err1 != nil {
			return appCert{}, fmt.Errorf("opcua: application certificate: %w", err1)
		}
	}
	c, err := makeAppCert(uri, name)
	if err != nil {
		return appCert{}, err
	}
	if dir == "" {
		return c, nil
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(c.key)})
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return appCert{}, fmt.Errorf("opcua: store application key: %w", err)
	}
	if err := atomicfile.Write(certPath, c.der, 0o644); err != nil {
		return appCert{}, fmt.Errorf("opcua: store application certificate: %w", err)
	}
	return c, nil
}

func parseAppCert(der, keyPEM []byte) (appCert, error) {
	if _, err := x509.ParseCertificate(der); err != nil {
		return appCert{}, err
	}
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return appCert{}, errors.New("key file is not PEM")
	}
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return appCert{der: der, key: k}, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return appCert{}, fmt.Errorf("parse key: %w", err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return appCert{}, errors.New("the key is not an RSA key (OPC UA needs RSA)")
	}
	return appCert{der: der, key: rk}, nil
}

func certHasURI(der []byte, uri string) bool {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return false
	}
	for _, u := range c.URIs {
		if u.String() == uri {
			return true
		}
	}
	return false
}

// makeAppCert makes a self-signed RSA 2048 application instance
// certificate with uri in its subject alternative names, as OPC UA
// requires (Part 6, 6.2.2).
func makeAppCert(uri, name string) (appCert, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return appCert{}, fmt.Errorf("opcua: make application key: %w", err)
	}
	u, err := url.Parse(uri)
	if err != nil {
		return appCert{}, fmt.Errorf("opcua: application URI %q: %w", uri, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return appCert{}, fmt.Errorf("opcua: certificate serial: %w", err)
	}
	host, _ := os.Hostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"fieldgate"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
	}
	if host != "" {
		tmpl.DNSNames = []string{host}
	}
	tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return appCert{}, fmt.Errorf("opcua: make application certificate: %w", err)
	}
	return appCert{der: der, key: key}, nil
}
