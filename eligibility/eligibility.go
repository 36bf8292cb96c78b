// Package eligibility decides, at the moment of sending, whether a message
// may still go to its recipient: a suppression list (tokens, addresses and
// numbers that must not be messaged: fed by providers' "gone" answers and
// by the host), preferences (a user opted out of a channel or a category,
// including RFC 8058 one-click unsubscribe through a signed link), and
// the host's own predicate ("is this still relevant?").
//
// A message that waited an hour in a backlog is checked again when a
// worker takes it, not when it was accepted: a user who unsubscribed,
// bounced or replied STOP in the meantime gets nothing. Each refusal is
// final for that message and tracked with its kind (suppressed, opted
// out, ineligible) and reason; none counts against a cap.
//
// The suppression list keeps recipients as keyed digests, never in the
// clear, with a masked form for display: a list of every address that
// bounced is no new store of personal data.
package eligibility

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/redact"
)

// ErrClosed is returned by a closed store.
var ErrClosed = errors.New("eligibility: store closed")

// Suppression is one recipient that must not be messaged on a channel.
type Suppression struct {
	// Key is RecipientKey(channel, recipient): the store's identity of the
	// recipient, never the recipient itself.
	Key     string
	Channel string // push, email, sms
	// Masked is the recipient masked for display (a***@example.com,
	// +44********89, abcd…wxyz(64)).
	Masked string
	// Reason says why: the provider's answer ("apns 410 Unregistered",
	// "smtp 550 5.1.1", "twilio 21610") or the host's.
	Reason string
	// Source is "provider" (fed by an outcome) or "host".
	Source string
	At     time.Time
}

// Preference is one opt-out (or opt back in) of a user for a topic:
// "channel:email", "category:promotions".
type Preference struct {
	User     string
	Topic    string
	OptedOut bool
	At       time.Time
}

// Store keeps suppressions and preferences. Every store that holds the
// queue has one; all methods are safe for concurrent use and never read
// the clock. Every implementation passes eligibilitytest.
type Store interface {
	// Suppress adds or replaces suppressions (by Key).
	Suppress(ctx context.Context, s ...Suppression) error
	// Unsuppress removes the suppression of key, if any.
	Unsuppress(ctx context.Context, key string) error
	// Suppressed returns the suppression of key, if any.
	Suppressed(ctx context.Context, key string) (Suppression, bool, error)
	// SetPreference records a user's choice for a topic; a later At wins
	// over an earlier one (a replayed old click never undoes a new one).
	SetPreference(ctx context.Context, p Preference) error
	// OptedOut returns the first of topics the user opted out of, if any.
	OptedOut(ctx context.Context, user string, topics []string) (topic string, ok bool, err error)
	Close() error
}

// RecipientKey is a recipient's identity in a Store: a SHA-256 of the
// channel and the normalised recipient (lower-cased addresses), so the
// same address suppressed from a bounce and checked from a message match.
func RecipientKey(channel, recipient string) string {
	r := strings.TrimSpace(recipient)
	if channel == "email" {
		r = strings.ToLower(r)
	}
	sum := sha256.Sum256([]byte(channel + "\x00" + r))
	return hex.EncodeToString(sum[:16])
}

// Mask is a recipient masked for display and logs (Suppression.Masked):
// a***@example.com, +44********89, abcd…wxyz(64).
func Mask(channel, recipient string) string {
	switch channel {
	case "email":
		return redact.Email(recipient)
	case "sms":
		return redact.Phone(recipient)
	}
	return redact.Token(recipient)
}

// ChannelTopic and CategoryTopic name the topics of preferences.
func ChannelTopic(channel string) string { return "channel:" + channel }

// CategoryTopic names a category's topic.
func CategoryTopic(category string) string { return "category:" + category }

// Kind is why a message was found ineligible.
type Kind string

// The kinds of refusal.
const (
	Suppressed Kind = "suppressed" // the recipient is on the suppression list
	OptedOut   Kind = "opted_out"  // the user opted out of the channel or category
	Ineligible Kind = "ineligible" // the host's predicate said no
)

// Verdict is a refusal: its kind and reason (never the recipient).
type Verdict struct {
	Kind   Kind
	Reason string
}

func (v Verdict) String() string { return fmt.Sprintf("%s: %s", v.Kind, v.Reason) }
