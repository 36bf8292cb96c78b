// Package inbox is a per-user feed of notifications (the in-app Inbox):
// items with a title, body, data, category and campaign, read, seen and
// archived state per item, unread and unseen counts, and cursor
// pagination, newest first.
//
// It is fed at the send path: a message flagged for the Inbox gets its
// item written in the same durable write that accepts it (a Store's
// Enqueuer), so a provider outage, a tracking outage or a crash never
// leaves the Inbox without it; the item's ID is the message's
// idempotency key, so a retried call writes it once. Every store that
// holds the queue implements Store; every implementation passes
// inboxtest.
package inbox

import (
	"context"
	"errors"
	"time"

	"github.com/heraldhq/herald/retry"
)

// Errors.
var (
	ErrClosed = errors.New("inbox: store closed")
	// ErrBadCursor: a feed cursor that does not parse.
	ErrBadCursor = errors.New("inbox: bad cursor")
)

// Item is one notification in a user's feed.
type Item struct {
	ID       string            `json:"id"` // the message's idempotency key
	User     string            `json:"user"`
	Title    string            `json:"title,omitempty"`
	Body     string            `json:"body,omitempty"`
	Data     map[string]string `json:"data,omitempty"`
	Category string            `json:"category,omitempty"`
	Campaign string            `json:"campaign,omitempty"`
	Created  time.Time         `json:"created"`
	// Expires removes the item from the feed (and Prune from the store);
	// zero: kept until pruned by age.
	Expires time.Time `json:"expires,omitzero"`
	// When the user read, saw (the feed was shown) and archived it; zero:
	// not yet.
	ReadAt     time.Time `json:"read_at,omitzero"`
	SeenAt     time.Time `json:"seen_at,omitzero"`
	ArchivedAt time.Time `json:"archived_at,omitzero"`
}

// Mark is a state a client sets on items.
type Mark string

// Marks.
const (
	Read       Mark = "read"
	Seen       Mark = "seen"
	Archived   Mark = "archived"
	Unread     Mark = "unread"
	Unarchived Mark = "unarchived"
)

// Query selects a page of a user's feed.
type Query struct {
	// After is the cursor of the previous page ("" for the first).
	After string
	// Limit caps the page (default 50, at most 200).
	Limit int
	// Archived lists the archived items instead of the others.
	Archived bool
	// Now hides expired items.
	Now time.Time
}

// Counts are a user's badges.
type Counts struct {
	Unread, Unseen int
}

// Store keeps the Inbox. All methods are safe for concurrent use and
// never read the clock.
type Store interface {
	// Enqueuer returns an Enqueuer that makes the jobs durable through
	// queue and puts items in the same write (all or nothing). Items
	// already stored (by user and ID) are left as they are.
	Enqueuer(queue retry.Enqueuer, items []Item) retry.Enqueuer
	// Feed returns a page of user's items, newest first, and the cursor
	// of the next page ("" at the end).
	Feed(ctx context.Context, user string, q Query) ([]Item, string, error)
	// Counts returns user's unread and unseen counts among items not
	// archived and not expired at now.
	Counts(ctx context.Context, user string, now time.Time) (Counts, error)
	// Mark sets mark on the user's items ids (another user's are not
	// touched) at at, and returns how many it changed.
	Mark(ctx context.Context, user string, ids []string, mark Mark, at time.Time) (int, error)
	// Prune deletes items expired before now, or created before
	// createdBefore, and returns how many.
	Prune(ctx context.Context, now, createdBefore time.Time) (int, error)
	Close() error
}

// PageSize returns the page size within bounds.
func (q Query) PageSize() int {
	switch {
	case q.Limit <= 0:
		return 50
	case q.Limit > 200:
		return 200
	}
	return q.Limit
}
