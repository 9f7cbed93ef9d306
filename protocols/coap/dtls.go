package coap

import (
	"crypto/x509"

	piondtls "github.com/pion/dtls/v3"
)

// credentials are what a device's broker session is opened with.
type credentials struct {
	username string
	password []byte
	trusted  bool // DTLS has authenticated username
	verified bool // the request came over DTLS: its source address is proved
}

// credentials returns the request's username and password, or its DTLS
// identity when dtls.identity_as_username is on and it came over DTLS.
func (x *exchange) credentials() credentials {
	_, verified := x.cc.NetConn().(*piondtls.Conn)
	if x.g.cfg.DTLS.IdentityAsUsername {
		if id, ok := dtlsIdentity(x.cc.NetConn()); ok {
			return credentials{username: id, trusted: true, verified: verified}
		}
	}
	return credentials{username: x.req.Username, password: []byte(x.req.Password), verified: verified}
}

// dtlsIdentity returns the authenticated identity of a DTLS connection: the
// common name of the client certificate, or else the PSK identity.
func dtlsIdentity(nc any) (string, bool) {
	dc, ok := nc.(*piondtls.Conn)
	if !ok {
		return "", false
	}
	st, ok := dc.ConnectionState()
	if !ok {
		return "", false
	}
	if len(st.PeerCertificates) > 0 {
		cert, err := x509.ParseCertificate(st.PeerCertificates[0])
		if err != nil || cert.Subject.CommonName == "" {
			return "", false
		}
		return cert.Subject.CommonName, true
	}
	if len(st.IdentityHint) > 0 {
		return string(st.IdentityHint), true // the client's PSK identity, on the server side
	}
	return "", false
}
