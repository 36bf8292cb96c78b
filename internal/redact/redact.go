// Package redact masks personal data (tokens, email addresses, phone
// numbers) for logs and error strings, and parses Retry-After headers;
// push, email and sms share it.
package redact

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Token shows a token's first and last four characters and its length;
// short tokens are fully masked.
func Token(tok string) string {
	if len(tok) < 16 {
		return fmt.Sprintf("***(%d)", len(tok))
	}
	return fmt.Sprintf("%s…%s(%d)", tok[:4], tok[len(tok)-4:], len(tok))
}

// Email shows an address's first letter and its domain: "a***@example.com".
func Email(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 {
		return Token(addr)
	}
	return addr[:1] + "***" + addr[at:]
}

// Phone shows a number's country prefix and last two digits: "+44*******89".
func Phone(num string) string {
	if len(num) < 6 {
		return strings.Repeat("*", len(num))
	}
	return num[:3] + strings.Repeat("*", len(num)-5) + num[len(num)-2:]
}

var emailRE = regexp.MustCompile(`[^\s<>"',;:()\[\]@]+@[A-Za-z0-9.\-]+`)

// Emails masks every email address in free text, such as an SMTP server's
// reply ("550 5.1.1 <bob@example.com>: no such user").
func Emails(s string) string {
	return emailRE.ReplaceAllStringFunc(s, Email)
}

// RetryAfter reads a Retry-After header value: delay-seconds or an
// HTTP-date (RFC 9110 §10.2.3), relative to now. It returns 0 for an empty,
// malformed or past value, and caps it at a year.
func RetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(365*24*3600))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return min(d.Round(time.Second), 365*24*time.Hour)
		}
	}
	return 0
}

var phoneRE = regexp.MustCompile(`\+?[0-9][0-9 ().\-]{6,}[0-9]`)

// PhoneNumbers masks every phone-number-like run of digits in free text,
// such as a provider's error message.
func PhoneNumbers(s string) string {
	return phoneRE.ReplaceAllStringFunc(s, func(n string) string { return Phone(n) })
}
