// Package secret holds credentials (APNs .p8 keys, FCM service-account
// JSON, VAPID private keys, SMTP passwords, Twilio auth tokens) so that no
// formatting, encoding or logging path can print them.
//
// A Value prints as [REDACTED] with fmt (%v, %+v, %#v, %s, %q, %x), encodes
// as "[REDACTED]" in JSON and text, and logs as [REDACTED] with log/slog.
// Only Bytes and Reveal give the contents, for the client that needs them.
package secret

import (
	"fmt"
	"log/slog"
	"os"
)

const redacted = "[REDACTED]"

// Value is a secret. The zero value is empty.
type Value struct {
	b []byte
}

// New returns a Value holding a copy of b.
func New(b []byte) Value { return Value{b: append([]byte(nil), b...)} }

// String returns a Value holding s.
func String(s string) Value { return Value{b: []byte(s)} }

// FromFile reads a secret from a file. Errors name the path, never the content.
func FromFile(path string) (Value, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Value{}, fmt.Errorf("secret: read %s: %w", path, err)
	}
	return Value{b: b}, nil
}

// FromEnv reads a secret from an environment variable; an unset or empty
// variable is an error naming the variable.
func FromEnv(name string) (Value, error) {
	v := os.Getenv(name)
	if v == "" {
		return Value{}, fmt.Errorf("secret: environment variable %s is empty or unset", name)
	}
	return Value{b: []byte(v)}, nil
}

// Bytes returns the secret's bytes. Do not log them.
func (v Value) Bytes() []byte { return v.b }

// Reveal returns the secret as a string. Do not log it.
func (v Value) Reveal() string { return string(v.b) }

// IsZero reports whether the secret is empty.
func (v Value) IsZero() bool { return len(v.b) == 0 }

// String implements fmt.Stringer: always [REDACTED].
func (v Value) String() string { return redacted }

// GoString implements fmt.GoStringer: always [REDACTED].
func (v Value) GoString() string { return redacted }

// Format implements fmt.Formatter for every verb.
func (v Value) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalJSON encodes the secret as "[REDACTED]".
func (v Value) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText encodes the secret as [REDACTED].
func (v Value) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue implements slog.LogValuer.
func (v Value) LogValue() slog.Value { return slog.StringValue(redacted) }
