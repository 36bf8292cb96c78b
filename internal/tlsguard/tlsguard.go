// Package tlsguard tells the clients of every channel apart the transport
// errors that are configuration or message errors, not outages: a server
// certificate the client does not trust (a private CA missing from the
// roots, a proxy intercepting TLS) is fixed by a person, never by
// retrying, and a request the transport refused to build (a header value
// with a line break) is the message's fault.
package tlsguard

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
)

// Untrusted reports whether err says the peer's certificate was not
// trusted: an unknown authority, a name mismatch, an expired or invalid
// certificate.
func Untrusted(err error) bool {
	if err == nil {
		return false
	}
	var (
		cve *tls.CertificateVerificationError
		uae x509.UnknownAuthorityError
		he  x509.HostnameError
		cie x509.CertificateInvalidError
	)
	return errors.As(err, &cve) || errors.As(err, &uae) || errors.As(err, &he) || errors.As(err, &cie) ||
		strings.Contains(err.Error(), "x509: certificate")
}

// LocalRequestError reports whether err is net/http's or x/net/http2's
// refusal to send a request it finds malformed (an invalid header name or
// value): nothing reached the network.
func LocalRequestError(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "invalid HTTP header") || strings.Contains(s, "invalid header field") ||
		strings.Contains(s, "net/http: invalid")
}
