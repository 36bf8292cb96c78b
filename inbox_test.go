package herald_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/push/pushtest"
)

// The Inbox item of a message sent while APNs answers 503 and the
// tracking journal is down is there the moment Send returns: it was
// written with the job, not after the send and not by tracking.
func TestTheInboxHoldsMessagesThroughProviderAndTrackingOutages(t *testing.T) {
	t.Parallel()
	db, err := embedded.Open(filepath.Join(t.TempDir(), "herald.db"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	r := newRig(t, func(c *herald.Config) { c.Store, c.Inbox = db.Retry(), db.Inbox() })
	r.events.SetFailure(errors.New("the tracking journal is down"))
	t.Cleanup(func() { r.events.SetFailure(nil) }) // it comes back, so the outbox can close
	r.apns.Down(pushtest.Fault{Status: http.StatusServiceUnavailable, Reason: "ServiceUnavailable"})
	ctx := context.Background()
	m := pushTo("order-42", "ada", "phone")
	m.Transactional = true
	m.Inbox = &herald.InboxItem{Title: "Shipped", Body: "Order 42 is on its way", Data: map[string]string{"order": "42"}}
	_, err = r.d.Send(ctx, m)
	require.NoError(t, err)
	only := herald.Message{IdempotencyKey: "note-1", User: "ada", Inbox: &herald.InboxItem{Title: "Welcome"}}
	res, err := r.d.Send(ctx, only)
	require.NoError(t, err)
	require.Zero(t, res.ID, "an Inbox-only message has no job")
	_, err = r.d.Send(ctx, only)
	require.NoError(t, err, "a retried Inbox-only call")
	r.start(t)
	feed, _, err := db.Inbox().Feed(ctx, "ada", inbox.Query{Now: time.Now()})
	require.NoError(t, err)
	require.Len(t, feed, 2)
	byID := map[string]inbox.Item{feed[0].ID: feed[0], feed[1].ID: feed[1]}
	require.Equal(t, "Shipped", byID["order-42"].Title)
	require.Equal(t, "42", byID["order-42"].Data["order"])
	require.Equal(t, "Welcome", byID["note-1"].Title)
	c, err := db.Inbox().Counts(ctx, "ada", time.Now())
	require.NoError(t, err)
	require.Equal(t, inbox.Counts{Unread: 2, Unseen: 2}, c)
	require.Empty(t, r.apns.Delivered(), "APNs is still down; the Inbox did not wait for it")

	// Refused at the door: an Inbox item without a user, or without a store.
	_, err = r.d.Send(ctx, herald.Message{IdempotencyKey: "x", Inbox: &herald.InboxItem{Title: "x"}})
	require.ErrorIs(t, err, herald.ErrInvalid)
	plain := newRig(t, nil)
	_, err = plain.d.Send(ctx, herald.Message{IdempotencyKey: "y", User: "u", Inbox: &herald.InboxItem{Title: "y"},
		Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{Token: pushtest.DeviceToken("d")}}})
	var fe *herald.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "Inbox", fe.Field)
}
