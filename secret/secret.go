// Package secret holds credentials (APNs .p8 keys and certificates, FCM
// service-account JSON, VAPID private keys, SMTP passwords, Twilio auth
// tokens) so that no formatting, encoding or logging path can print them.
//
// A Value prints as [REDACTED] with fmt (%v, %+v, %#v, %s, %q, %x), encodes
// as "[REDACTED]" in JSON and text, and logs as [REDACTED] with log/slog.
// Only Bytes and Reveal give the contents, for the client that needs them.
//
// Printers that ignore those methods and walk a value by reflection
// (testify's diffs through go-spew, debuggers' dumps, %v of a struct that
// holds a Value in an unexported field) cannot reach the contents either:
// a Value keeps them inside a closure, which reflection renders as an
// address. Opaque does the same for any other value: a *tls.Certificate
// with its private key, or a client's whole internal state.
package secret

import (
	"fmt"
	"log/slog"
	"os"
)

const redacted = "[REDACTED]"

// Value is a secret. The zero value is empty.
type Value struct {
	open func() []byte
}

// New returns a Value holding a copy of b.
func New(b []byte) Value { return seal(append([]byte(nil), b...)) }

// String returns a Value holding s.
func String(s string) Value { return seal([]byte(s)) }

func seal(b []byte) Value {
	if len(b) == 0 {
		return Value{}
	}
	return Value{open: func() []byte { return b }}
}

// FromFile reads a secret from a file. Errors name the path, never the content.
func FromFile(path string) (Value, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Value{}, fmt.Errorf("secret: read %s: %w", path, err)
	}
	return seal(b), nil
}

// FromEnv reads a secret from an environment variable; an unset or empty
// variable is an error naming the variable.
func FromEnv(name string) (Value, error) {
	v := os.Getenv(name)
	if v == "" {
		return Value{}, fmt.Errorf("secret: environment variable %s is empty or unset", name)
	}
	return seal([]byte(v)), nil
}

// Bytes returns the secret's bytes. Do not log them, and do not change them.
func (v Value) Bytes() []byte {
	if v.open == nil {
		return nil
	}
	return v.open()
}

// Reveal returns the secret as a string. Do not log it.
func (v Value) Reveal() string { return string(v.Bytes()) }

// IsZero reports whether the secret is empty.
func (v Value) IsZero() bool { return v.open == nil }

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

// Opaque holds a value of any type that must never be rendered: a
// certificate with its private key, a client's state with its tokens. It
// renders as [REDACTED] everywhere a Value does. The zero value holds T's
// zero value.
type Opaque[T any] struct {
	open func() T
}

// Seal returns an Opaque holding v.
func Seal[T any](v T) Opaque[T] { return Opaque[T]{open: func() T { return v }} }

// Get returns the value.
func (o Opaque[T]) Get() T {
	if o.open == nil {
		var zero T
		return zero
	}
	return o.open()
}

// IsZero reports whether nothing was sealed.
func (o Opaque[T]) IsZero() bool { return o.open == nil }

// String implements fmt.Stringer: always [REDACTED].
func (o Opaque[T]) String() string { return redacted }

// GoString implements fmt.GoStringer: always [REDACTED].
func (o Opaque[T]) GoString() string { return redacted }

// Format implements fmt.Formatter for every verb.
func (o Opaque[T]) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalJSON encodes the value as "[REDACTED]".
func (o Opaque[T]) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText encodes the value as [REDACTED].
func (o Opaque[T]) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue implements slog.LogValuer.
func (o Opaque[T]) LogValue() slog.Value { return slog.StringValue(redacted) }
