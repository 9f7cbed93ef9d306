package opcua

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/gopcua/opcua/ua"
)

func TestErrorKind(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("x: %w", ua.StatusBadUserAccessDenied), ErrKindAuth},
		{ua.StatusBadIdentityTokenRejected, ErrKindAuth},
		{fmt.Errorf("x: %w", ua.StatusBadSecurityChecksFailed), ErrKindSecurity},
		{&UntrustedError{}, ErrKindSecurity},
		{ua.StatusBadTimeout, ErrKindTimeout},
		{fmt.Errorf("read: %w", context.DeadlineExceeded), ErrKindTimeout},
		{io.EOF, ErrKindConnection},
		{errLost, ErrKindConnection},
		{ua.StatusBadSessionIDInvalid, ErrKindConnection},
		{ua.StatusBadTooManyOperations, ErrKindStatus},
		{kindError{ErrKindResolve, ua.StatusBadNoMatch}, ErrKindResolve},
	}
	for _, c := range cases {
		if got := errorKind(c.err); got != c.want {
			t.Errorf("errorKind(%v) = %s, want %s", c.err, got, c.want)
		}
	}
	if !sessionEnding(io.EOF) || sessionEnding(ua.StatusBadTooManyOperations) {
		t.Error("sessionEnding")
	}
}

func TestConnectError(t *testing.T) {
	s := Server{Auth: Auth{Username: "gw", Password: secretOf("hidden-pw")}}
	err := connectError(ua.StatusBadUserAccessDenied, s, Certificate{})
	if !strings.Contains(err.Error(), `user "gw": wrong username or password (BadUserAccessDenied)`) || strings.Contains(err.Error(), "hidden-pw") || errorKind(err) != ErrKindAuth {
		t.Errorf("wrong password: %v", err)
	}
	err = connectError(ua.StatusBadSecurityChecksFailed, Server{}, Certificate{Thumbprint: "AB12", ApplicationURI: "urn:gw"})
	if !strings.Contains(err.Error(), "gateway's certificate AB12 (urn:gw)") || errorKind(err) != ErrKindSecurity {
		t.Errorf("security: %v", err)
	}
}

func TestWriteStatus(t *testing.T) {
	for sc, want := range map[ua.StatusCode]string{
		ua.StatusBadNotWritable:      "read-only (BadNotWritable)",
		ua.StatusBadUserAccessDenied: "does not let this user write p (BadUserAccessDenied)",
		ua.StatusBadOutOfRange:       "out of the range the server accepts for p (BadOutOfRange)",
		ua.StatusBadTypeMismatch:     "expects another type for p (BadTypeMismatch)",
		ua.StatusBadInternalError:    "refused by the server: BadInternalError",
	} {
		if err := writeStatus("p", sc); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", statusName(sc), err, want)
		}
	}
	if err := writeStatus("p", ua.StatusOK); err != nil {
		t.Error(err)
	}
}
