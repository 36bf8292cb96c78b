package inbox

import (
	"context"
	"strings"
	"sync"
	"time"
)

// inAppPrefix starts the feed key of a user's in-app messages: a control
// character, which no user ID the Dispatcher accepts can hold, so the two
// feeds of one user never mix and every store keeps in-app messages with
// no schema of their own.
const inAppPrefix = "\x1einapp\x1e"

// InAppFeed is the feed key under which a user's in-app messages wait
// for display.
func InAppFeed(user string) string { return inAppPrefix + user }

// FeedUser is the user a feed key belongs to (itself for an Inbox feed).
func FeedUser(feed string) string { return strings.TrimPrefix(feed, inAppPrefix) }

// Shown is an in-app message to display now: it was decided eligible at
// this moment and its display counted.
type Shown struct {
	ID       string            `json:"id"`
	Title    string            `json:"title,omitempty"`
	Body     string            `json:"body,omitempty"`
	Data     map[string]string `json:"data,omitempty"`
	Category string            `json:"category,omitempty"`
	Campaign string            `json:"campaign,omitempty"`
	Created  time.Time         `json:"created"`
	Expires  time.Time         `json:"expires,omitzero"`
}

// Reaction is what a user did with a displayed in-app message.
type Reaction string

// Reactions.
const (
	Clicked   Reaction = "clicked"
	Dismissed Reaction = "dismissed"
)

// InApp decides and records in-app displays: herald.Dispatcher
// implements it.
type InApp interface {
	// ShowInApp returns the user's in-app messages to display now, each
	// decided eligible at this moment and returned to one caller once;
	// the others are recorded with their reason.
	ShowInApp(ctx context.Context, user string) ([]Shown, error)
	// ReactInApp records the user's reaction to a displayed message;
	// false when the user has no such message.
	ReactInApp(ctx context.Context, user, id string, r Reaction) (bool, error)
}

// Notifier wakes the streams of users who have new items. The zero
// value is ready; it is safe for concurrent use.
type Notifier struct {
	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
}

// Notify wakes every stream waiting on user.
func (n *Notifier) Notify(user string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.waiters[user] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Subscribe returns a channel that receives after each Notify for user,
// and the function that ends the subscription.
func (n *Notifier) Subscribe(user string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	if n.waiters == nil {
		n.waiters = map[string]map[chan struct{}]struct{}{}
	}
	if n.waiters[user] == nil {
		n.waiters[user] = map[chan struct{}]struct{}{}
	}
	n.waiters[user][ch] = struct{}{}
	n.mu.Unlock()
	return ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		delete(n.waiters[user], ch)
		if len(n.waiters[user]) == 0 {
			delete(n.waiters, user)
		}
	}
}
