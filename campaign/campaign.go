// Package campaign sends one message to an audience of millions through
// a herald.Dispatcher: durable and resumable, at a set speed, each
// message going through the same door, lanes, breaker, caps, eligibility
// and tracking as any other.
//
// A campaign names its content per channel (with per-recipient variables,
// {{.Name}} substituted safely per channel: HTML escaped in an email's
// HTML, refused at the door if it would break a header), its audience,
// its labels, automation and category (so caps and preferences apply), a
// TTL, a start time and a speed (messages per second, or a finish-by time
// the rate is derived from). Creating a campaign is idempotent by key.
//
// The audience is host-iterated (an Iterator hands out recipients page by
// page with a resumable cursor) or stored (Stored: members the host
// uploaded to an audience.Store, in every store that holds the queue); and the runner stores the cursor in the
// same durable write as the messages it enqueued for that page (a
// checkpoint.Store: embedded.DB.Checkpoints() in the default store), so a
// crash resumes exactly where it stopped — no
// recipient skipped, none enqueued twice. Each message's idempotency key
// is derived from campaign, recipient and channel, so even a page
// re-read after a crash creates nothing new.
package campaign

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/audience"
	"github.com/heraldhq/herald/checkpoint"
	"github.com/heraldhq/herald/email"
	"github.com/heraldhq/herald/sms"
)

// Errors, checked with errors.Is.
var (
	// ErrInvalid: the campaign was refused at Create; nothing was stored.
	// The error says which field.
	ErrInvalid = errors.New("campaign: invalid campaign")
	// ErrNotFound: no campaign with that key.
	ErrNotFound = errors.New("campaign: not found")
	// ErrConflict: the key names a campaign with other content.
	ErrConflict = errors.New("campaign: key already used for a different campaign")
	// ErrStopped: Run returned because the campaign is paused or cancelled.
	ErrStopped = errors.New("campaign: paused or cancelled")
	// ErrElsewhere: Run returned because another runner (another
	// process) holds the campaign's lease and runs it.
	ErrElsewhere = errors.New("campaign: run by another runner")
)

// Recipient is one member of an audience: who (User, for caps,
// preferences and tracking), where (an address per channel; a channel
// without one is skipped for this recipient) and the variables its
// content uses.
type Recipient struct {
	User     string
	TimeZone string            `json:",omitempty"`
	Token    string            `json:",omitempty"` // push token or Web Push subscription
	Email    string            `json:",omitempty"`
	Phone    string            `json:",omitempty"`
	Vars     map[string]string `json:",omitempty"`
}

// Content is a campaign's message per channel. Text fields may use
// {{.Var}} (the recipient's Vars, and {{.User}}); the recipient's address
// fills in To and Token.
type Content struct {
	Push  *herald.PushMessage `json:",omitempty"`
	Email *email.Message      `json:",omitempty"`
	SMS   *sms.Message        `json:",omitempty"`
}

// Campaign describes one campaign.
type Campaign struct {
	// Key identifies the campaign: Create with a known key returns the
	// existing campaign and creates nothing.
	Key     string
	Name    string
	Content Content
	// Audience names the Iterator (Config.Audiences) that lists the
	// recipients.
	Audience   string
	Labels     []string
	Automation string
	Category   string
	// TTL bounds how late a message may be delivered. Default 4h.
	TTL time.Duration
	// StartAt delays the first message. Zero: now.
	StartAt time.Time
	// LocalTime, "HH:MM", sends each recipient's message at that time of
	// day in the recipient's own time zone (the first such time at or
	// after StartAt, or now), Braze's and Batch's "local time delivery".
	// Recipients without a time zone get it in UTC.
	LocalTime string
	// PerSecond is the speed: messages enqueued per second (delivery
	// follows). Or set FinishBy, and the rate is derived from the
	// audience's size (the Iterator must be a Sizer).
	PerSecond float64
	FinishBy  time.Time
}

// State is where a campaign is.
type State = checkpoint.State

// States.
const (
	Running   State = "running"
	Paused    State = "paused"
	Cancelled State = checkpoint.Cancelled
	Done      State = "done" // every recipient's messages enqueued
)

// Status is a campaign's progress as its store keeps it.
type Status struct {
	Campaign Campaign
	State    State
	// Cursor is where the fan-out resumes ("" before the first page).
	Cursor string
	// Recipients is how many recipients were read; Enqueued how many
	// messages the queue accepted; Invalid how many the door refused
	// (a malformed address); FanoutDone whether the audience was read to
	// its end.
	Recipients, Enqueued, Invalid int
	FanoutDone                    bool
	Created                       time.Time
	// Staged is how many messages were read, checked and stored to be
	// sent; Drained how many of them the campaign's rate has let into
	// the queue (enqueued, or found there already); Cancelled how many
	// were dropped unsent when the campaign was cancelled. Staged −
	// Drained − Cancelled wait for their turn.
	Staged, Drained, Cancelled int
}

// Iterator lists an audience page by page. Next returns the recipients
// after cursor and the cursor of the next page, "" at the end. It must
// return the same page for the same cursor (a page read again after a
// crash must be the same people).
type Iterator interface {
	Next(ctx context.Context, cursor string) (rs []Recipient, next string, err error)
}

// Sizer is an Iterator that knows its audience's size (for FinishBy).
type Sizer interface {
	Size(ctx context.Context) (int, error)
}

// InvalidError names what is wrong with a campaign.
type InvalidError struct {
	Field, Reason string
}

func (e *InvalidError) Error() string {
	return "campaign: invalid campaign: " + e.Field + ": " + e.Reason
}

// Unwrap returns ErrInvalid.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

func (c *Campaign) validate(audience func(string) Iterator, now time.Time) error {
	bad := func(f, r string) error { return &InvalidError{Field: f, Reason: r} }
	switch {
	case c.Key == "" || len(c.Key) > 100 || strings.ContainsAny(c.Key, "/\x00\r\n"):
		return bad("Key", "required, at most 100 bytes, without / or control characters")
	case c.Audience == "":
		return bad("Audience", "required")
	case audience(c.Audience) == nil:
		return bad("Audience", fmt.Sprintf("unknown audience %q (Config.Audiences)", c.Audience))
	case c.Content.Push == nil && c.Content.Email == nil && c.Content.SMS == nil:
		return bad("Content", "empty: set Push, Email or SMS")
	case c.PerSecond < 0 || (c.PerSecond == 0 && c.FinishBy.IsZero()):
		return bad("PerSecond", "must be > 0 (or set FinishBy)")
	case c.PerSecond > 0 && !c.FinishBy.IsZero():
		return bad("FinishBy", "set PerSecond or FinishBy, not both")
	case !c.FinishBy.IsZero() && !c.FinishBy.After(now):
		return bad("FinishBy", "in the past")
	case !c.FinishBy.IsZero() && !c.StartAt.IsZero() && !c.FinishBy.After(c.StartAt):
		return bad("FinishBy", "before StartAt")
	case c.TTL < 0:
		return bad("TTL", "negative")
	}
	if c.LocalTime != "" {
		if _, err := time.Parse("15:04", c.LocalTime); err != nil {
			return bad("LocalTime", "want HH:MM")
		}
	}
	if !c.FinishBy.IsZero() {
		if _, ok := audience(c.Audience).(Sizer); !ok {
			return bad("FinishBy", "the audience does not know its size (implement Sizer), so no rate can be derived")
		}
	}
	if p := c.Content.Push; p != nil && p.Provider == "" {
		return bad("Content.Push.Provider", "required")
	}
	if e := c.Content.Email; e != nil && (e.From == "" || (e.Text == "" && e.HTML == "")) {
		return bad("Content.Email", "needs From and a body")
	}
	if s := c.Content.SMS; s != nil && s.Body == "" {
		return bad("Content.SMS.Body", "required")
	}
	return nil
}

// Stored is a stored audience as an Iterator (and Sizer): the members of
// audience name in store, in user order, the cursor the last user of a
// page.
func Stored(store audience.Store, name string) Iterator { return stored{store: store, name: name} }

type stored struct {
	store audience.Store
	name  string
}

const storedPage = 500

func (s stored) Next(ctx context.Context, cursor string) ([]Recipient, string, error) {
	ms, err := s.store.Page(ctx, s.name, cursor, storedPage)
	if err != nil {
		return nil, "", err
	}
	rs := make([]Recipient, len(ms))
	for i, m := range ms {
		rs[i] = Recipient{User: m.User, TimeZone: m.TimeZone, Token: m.Token, Email: m.Email, Phone: m.Phone, Vars: m.Vars}
	}
	if len(ms) < storedPage {
		return rs, "", nil
	}
	return rs, ms[len(ms)-1].User, nil
}

func (s stored) Size(ctx context.Context) (int, error) { return s.store.Size(ctx, s.name) }
