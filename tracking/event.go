// Package tracking is herald's delivery journal: events of every message
// (accepted, sent, delivered, opened, ...) go through a durable Outbox that
// forwards them to sinks (slog, a SQL table, a signed webhook,
// OpenTelemetry metrics) with retry, so a sink that is down gets every
// event later and recording never blocks a send. When the outbox itself
// cannot record, the window is stored as a Gap, and Stats reports every
// rate whose inputs overlap a gap as incomplete: rates are never silently
// wrong. IngestHandler takes engagement events from apps and browsers,
// deduplicated by the client's event ID.
package tracking

import (
	"errors"
	"fmt"
	"time"
)

// Type is what happened to a message.
type Type string

// Delivery types, recorded by the sending side.
const (
	Accepted      Type = "accepted"       // the host's call was accepted and the message is durable
	Queued        Type = "queued"         // enqueued for a worker (or re-queued for a retry)
	Capped        Type = "capped"         // refused by frequency capping
	Deferred      Type = "deferred"       // postponed (quiet hours, full window, capping store down)
	Sent          Type = "sent"           // the provider accepted it
	Delivered     Type = "delivered"      // the provider reports it reached the device or mailbox
	Failed        Type = "failed"         // one attempt failed; it may be retried
	Expired       Type = "expired"        // its deliver-by time passed before it could be sent; never sent
	Dropped       Type = "dropped"        // discarded on purpose (invalid, suppressed recipient)
	RecipientGone Type = "recipient_gone" // the provider says the token, address or number is gone
	Dead          Type = "dead"           // gave up after permanent errors or all attempts
	// Refused at the moment of sending, final for the message, and not
	// counted against any cap:
	Suppressed Type = "suppressed" // the recipient is on the suppression list
	OptedOut   Type = "opted_out"  // the user opted out of the channel or category
	Ineligible Type = "ineligible" // the host's predicate said it is no longer relevant
	// Displayed: an in-app message was shown to its user (decided eligible
	// at display time; the display counts against caps).
	Displayed Type = "displayed"
)

// Engagement types, reported by apps, browsers and providers.
const (
	Opened       Type = "opened"       // the user opened the notification or email
	Clicked      Type = "clicked"      // the user followed a link or action
	Converted    Type = "converted"    // the user completed the goal the message was for
	Bounced      Type = "bounced"      // the email bounced after acceptance
	Complained   Type = "complained"   // the user marked the email as spam
	Unsubscribed Type = "unsubscribed" // the user opted out from this kind of message
	Dismissed    Type = "dismissed"    // the user closed an in-app message without acting on it
	// Custom is an event of the host's own (Event.Name says which, Props
	// what it carries), not about one message.
	Custom Type = "custom"
	// Attributes is an update of the user's properties (Event.Props), for
	// the host's targeting: journaled and deduplicated like any event, and
	// handed to the host through its sinks.
	Attributes Type = "attributes"
)

var delivery = map[Type]bool{Accepted: true, Queued: true, Capped: true, Deferred: true, Sent: true, Delivered: true,
	Failed: true, Expired: true, Dropped: true, RecipientGone: true, Dead: true,
	Suppressed: true, OptedOut: true, Ineligible: true, Displayed: true}

var engagement = map[Type]bool{Opened: true, Clicked: true, Converted: true, Bounced: true, Complained: true, Unsubscribed: true,
	Dismissed: true, Custom: true, Attributes: true}

// userLevel types are about a user, not one message: they need no
// MessageID.
func (t Type) userLevel() bool { return t == Custom || t == Attributes }

// IsEngagement reports whether t is an engagement type.
func (t Type) IsEngagement() bool { return engagement[t] }

// Valid reports whether t is a known type.
func (t Type) Valid() bool { return delivery[t] || engagement[t] }

// Event is one thing that happened to one message.
type Event struct {
	// ID is unique per event; sinks and the journal deduplicate by it.
	ID         string    `json:"id"`
	MessageID  string    `json:"message_id"`
	User       string    `json:"user,omitempty"`
	Device     string    `json:"device,omitempty"`
	Channel    string    `json:"channel,omitempty"`  // push, email, sms
	Provider   string    `json:"provider,omitempty"` // apns, fcm, webpush, smtp, twilio
	Campaign   string    `json:"campaign,omitempty"`
	Automation string    `json:"automation,omitempty"`
	Labels     []string  `json:"labels,omitempty"`
	Type       Type      `json:"type"`
	At         time.Time `json:"at"`
	Attempt    int       `json:"attempt,omitempty"`
	// ProviderMessageID is the provider's ID (apns-id, FCM name, Twilio SID).
	ProviderMessageID string `json:"provider_message_id,omitempty"`
	// ErrorClass is the failure class (unavailable, rate_limited, ...).
	ErrorClass string `json:"error_class,omitempty"`
	// Reason says why a message was refused at the moment of sending
	// (suppressed, opted_out, ineligible): never the recipient itself.
	Reason string `json:"reason,omitempty"`
	// Name is a Custom event's name ("added_to_cart").
	Name string `json:"name,omitempty"`
	// Props are a Custom event's properties or an Attributes update's
	// user properties (strings, numbers, booleans, null to unset).
	Props map[string]any `json:"props,omitempty"`
}

// Limits of an event's Name and Props.
const (
	MaxProps     = 64
	MaxPropBytes = 4096 // the encoded Props
)

// ErrInvalidEvent is wrapped by Validate's errors.
var ErrInvalidEvent = errors.New("tracking: invalid event")

// Validate checks the fields every event needs.
func (e *Event) Validate() error {
	switch {
	case e.ID == "":
		return fmt.Errorf("%w: no id", ErrInvalidEvent)
	case len(e.ID) > 200:
		return fmt.Errorf("%w: id over 200 bytes", ErrInvalidEvent)
	case !e.Type.Valid():
		return fmt.Errorf("%w: unknown type %q", ErrInvalidEvent, e.Type)
	case e.MessageID == "" && !e.Type.userLevel():
		return fmt.Errorf("%w: no message_id", ErrInvalidEvent)
	case e.At.IsZero():
		return fmt.Errorf("%w: no time", ErrInvalidEvent)
	case e.Type == Custom && (e.Name == "" || len(e.Name) > 100):
		return fmt.Errorf("%w: name: a custom event needs a name of 1 to 100 bytes", ErrInvalidEvent)
	case e.Type == Attributes && len(e.Props) == 0:
		return fmt.Errorf("%w: props: an attributes update needs props", ErrInvalidEvent)
	case len(e.Props) > MaxProps:
		return fmt.Errorf("%w: props: %d, over %d", ErrInvalidEvent, len(e.Props), MaxProps)
	}
	return e.validateProps()
}

// validateProps checks that Props hold only flat values and fit.
func (e *Event) validateProps() error {
	size := 0
	for k, v := range e.Props {
		if k == "" || len(k) > 100 {
			return fmt.Errorf("%w: props: a key of 1 to 100 bytes", ErrInvalidEvent)
		}
		switch x := v.(type) {
		case nil, bool, float64, int, int64:
			size += len(k) + 8
		case string:
			size += len(k) + len(x)
		default:
			return fmt.Errorf("%w: props.%s: a string, number, boolean or null", ErrInvalidEvent, k)
		}
	}
	if size > MaxPropBytes {
		return fmt.Errorf("%w: props: over %d bytes", ErrInvalidEvent, MaxPropBytes)
	}
	return nil
}

// Gap is a window in which events may be missing.
type Gap struct {
	From, To time.Time
	Reason   string
	// Declared is true for a gap an operator declared.
	Declared bool
}

// Overlaps reports whether g overlaps [from, to).
func (g Gap) Overlaps(from, to time.Time) bool {
	return g.From.Before(to) && from.Before(g.To)
}
