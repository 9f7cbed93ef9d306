package opcua

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"

	"github.com/gopcua/opcua/ua"
)

// errLost is the error of a session whose connection the client saw go.
var errLost = errors.New("connection to the server lost")

// authCodes are the status codes of a refused user identity.
var authCodes = []ua.StatusCode{
	ua.StatusBadUserAccessDenied, ua.StatusBadIdentityTokenInvalid, ua.StatusBadIdentityTokenRejected,
	ua.StatusBadUserSignatureInvalid,
}

// securityCodes are the status codes of a refused certificate or policy.
var securityCodes = []ua.StatusCode{
	ua.StatusBadSecurityChecksFailed, ua.StatusBadCertificateInvalid, ua.StatusBadCertificateUntrusted,
	ua.StatusBadCertificateTimeInvalid, ua.StatusBadCertificateRevoked, ua.StatusBadCertificateUseNotAllowed,
	ua.StatusBadCertificateURIInvalid, ua.StatusBadCertificateHostNameInvalid, ua.StatusBadSecurityPolicyRejected,
	ua.StatusBadSecurityModeRejected, ua.StatusBadApplicationSignatureInvalid, ua.StatusBadNonceInvalid,
	ua.StatusBadCertificateIssuerRevocationUnknown, ua.StatusBadCertificateRevocationUnknown,
}

// statusOf finds the status code an error carries.
func statusOf(err error) (ua.StatusCode, bool) {
	var sc ua.StatusCode
	if errors.As(err, &sc) {
		return sc, true
	}
	return 0, false
}

// errorKind classifies an error for ServerStats.Errors.
func errorKind(err error) string {
	var ue *UntrustedError
	var ne net.Error
	var ke kindError
	sc, isStatus := statusOf(err)
	switch {
	case errors.As(err, &ke):
		return ke.kind
	case errors.As(err, &ue):
		return ErrKindSecurity
	case isStatus && slices.Contains(authCodes, sc&0xFFFF0000):
		return ErrKindAuth
	case isStatus && slices.Contains(securityCodes, sc&0xFFFF0000):
		return ErrKindSecurity
	case isStatus && sc == ua.StatusBadTimeout, errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return ErrKindTimeout
	case isStatus && (sc == ua.StatusBadServerNotConnected || sc == ua.StatusBadSessionIDInvalid || sc == ua.StatusBadSessionClosed ||
		sc == ua.StatusBadSecureChannelClosed || sc == ua.StatusBadConnectionClosed || sc == ua.StatusBadSessionNotActivated ||
		sc == ua.StatusBadCommunicationError || sc == ua.StatusBadSecureChannelIDInvalid):
		return ErrKindConnection
	case isStatus:
		return ErrKindStatus
	case errors.Is(err, io.EOF), errors.Is(err, errLost):
		return ErrKindConnection
	}
	return ErrKindConnection
}

// kindError is an error of a given kind.
type kindError struct {
	kind string
	err  error
}

func (e kindError) Error() string { return e.err.Error() }
func (e kindError) Unwrap() error { return e.err }

// sessionEnding reports whether err from a request means the session is
// unusable (the connection or the session is gone, or a request timed out)
// rather than a refusal of one request.
func sessionEnding(err error) bool {
	switch errorKind(err) {
	case ErrKindConnection, ErrKindTimeout:
		return true
	}
	return false
}

// connectError says in words why a connection attempt failed.
func connectError(err error, s Server, client Certificate) error {
	sc, isStatus := statusOf(err)
	switch {
	case isStatus && slices.Contains(authCodes, sc&0xFFFF0000):
		who := "anonymous user"
		switch {
		case s.Auth.Username != "":
			who = fmt.Sprintf("user %q: wrong username or password", s.Auth.Username)
		case s.Auth.Certificate != "":
			who = "user certificate " + s.Auth.Certificate
		}
		return kindError{ErrKindAuth, fmt.Errorf("the server refused the %s (%s)", who, statusName(sc))}
	case isStatus && slices.Contains(securityCodes, sc&0xFFFF0000):
		return kindError{ErrKindSecurity, fmt.Errorf("the server refused the secure channel (%s): does it trust the gateway's certificate %s (%s)?", statusName(sc), client.Thumbprint, client.ApplicationURI)}
	case isStatus:
		return fmt.Errorf("connect: %s", statusName(sc))
	}
	return fmt.Errorf("connect: %w", err)
}
