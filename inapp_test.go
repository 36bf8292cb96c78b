package herald_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/eligibility"
	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/tracking"
)

// attributes is the host's view of its users' properties, fed by
// attribute updates (here set directly) and read by its predicate.
type attributes struct {
	mu sync.Mutex
	m  map[string]map[string]any
}

func (a *attributes) set(user, k string, v any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m[user] == nil {
		a.m[user] = map[string]any{}
	}
	a.m[user][k] = v
}

func (a *attributes) get(user, k string) any {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.m[user][k]
}

type inAppKit struct {
	*heraldtest.Kit
	inbox inbox.Store
	elig  *eligibility.MemoryStore
	attrs *attributes
}

// newInAppKit is a kit with an Inbox store, eligibility, a cap of two
// marketing messages a day (pushes and in-app displays alike), and a host
// predicate: upsells only for users who are not subscribers.
func newInAppKit(t *testing.T, st inbox.Store) *inAppKit {
	k := &inAppKit{inbox: st, attrs: &attributes{m: map[string]map[string]any{}}}
	return newInAppKitWith(t, k, nil)
}

func newInAppKitWith(t *testing.T, k *inAppKit, mod func(*herald.Config)) *inAppKit {
	st := k.inbox
	k.elig = eligibility.NewMemoryStore()
	k.Kit = heraldtest.New(t, &heraldtest.Options{
		Rules: []capping.Rule{{Name: "two-a-day", Kind: capping.Global, Limit: 2, Window: capping.Calendar(capping.Day)}},
		Configure: func(c *herald.Config) {
			c.Inbox, c.Eligibility = st, k.elig
			c.Eligible = func(_ context.Context, m *herald.Message) (bool, string) {
				if m.Category == "upsell" && k.attrs.get(m.User, "plan") == "pro" {
					return false, "already on the pro plan"
				}
				return true, ""
			}
			if mod != nil {
				mod(c)
			}
		},
	})
	return k
}

func inApp(key, user, title string) herald.Message {
	return herald.Message{IdempotencyKey: key, User: user, Category: "upsell", TTL: 3 * time.Hour,
		InApp: &herald.InAppMessage{Title: title, Body: "Try Pro for a month", Data: map[string]string{"layout": "modal"}}}
}

func (k *inAppKit) show(t *testing.T, user string) []inbox.Shown {
	t.Helper()
	s, err := k.Dispatcher.ShowInApp(context.Background(), user)
	require.NoError(t, err)
	return s
}

func (k *inAppKit) reasonOf(key string, typ tracking.Type) string {
	for _, e := range k.Events() {
		if e.MessageID == key && e.Type == typ {
			return e.Reason
		}
	}
	return "(no " + string(typ) + " event)"
}

// An eligible user's in-app message is returned once, to one caller, with
// its content (the stored message never leaks), and its display counts
// against the cap: after it, one marketing push fits the two-a-day cap
// and the second is capped.
func TestInAppIsDecidedAtDisplayAndCounted(t *testing.T) {
	t.Parallel()
	k := newInAppKit(t, inbox.NewMemoryStore())
	res := k.Send(t, inApp("upsell-1", "ada", "Go Pro"))
	require.Zero(t, res.ID, "an in-app message has no job: it waits for its display")
	k.Send(t, inApp("upsell-1", "ada", "Go Pro")) // a retried call stores it once
	require.Empty(t, k.show(t, "bob"), "another user's messages are not shown")

	got := k.show(t, "ada")
	require.Len(t, got, 1)
	require.Equal(t, "upsell-1", got[0].ID)
	require.Equal(t, "Go Pro", got[0].Title)
	require.Equal(t, map[string]string{"layout": "modal"}, got[0].Data, "only the host's data reaches the client")
	require.Empty(t, k.show(t, "ada"), "shown once")
	require.Contains(t, k.Types("upsell-1"), tracking.Displayed)

	push1 := herald.Message{IdempotencyKey: "promo-1", User: "ada", Push: &herald.PushMessage{Provider: push.APNs,
		Message: push.Message{Token: "t", Notification: push.Notification{Title: "Sale"}}}}
	push2 := push1
	push2.IdempotencyKey = "promo-2"
	k.Send(t, push1)
	k.Settle(t)
	k.Send(t, push2)
	k.Settle(t)
	k.RequireSent(t, "promo-1")
	k.RequireCapped(t, "promo-2") // the display took the first slot

	// Reactions: to a displayed message, once per kind; never to another
	// user's.
	ok, err := k.Dispatcher.ReactInApp(context.Background(), "ada", "upsell-1", inbox.Clicked)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = k.Dispatcher.ReactInApp(context.Background(), "bob", "upsell-1", inbox.Clicked)
	require.NoError(t, err)
	require.False(t, ok)
	require.Contains(t, k.Types("upsell-1"), tracking.Clicked)
}

// A message created for a user who then reaches the cap through pushes,
// and one for a user the host's predicate no longer selects (an attribute
// changed after it was created), are not returned at display time; each
// is recorded with its reason. So is one the user opted out of, and one
// whose TTL passed.
func TestInAppRefusedAtDisplayIsRecordedWithItsReason(t *testing.T) {
	t.Parallel()
	k := newInAppKit(t, inbox.NewMemoryStore())
	ctx := context.Background()
	k.Send(t, inApp("capped", "ada", "Go Pro"))
	k.Send(t, inApp("pro", "bob", "Go Pro"))
	k.Send(t, inApp("optout", "cy", "Go Pro"))
	late := inApp("late", "dee", "Go Pro")
	late.TTL = time.Hour
	k.Send(t, late)
	for i, key := range []string{"p1", "p2"} {
		k.Send(t, herald.Message{IdempotencyKey: key, User: "ada", Push: &herald.PushMessage{Provider: push.APNs,
			Message: push.Message{Token: "t", Notification: push.Notification{Title: key}}}})
		k.Settle(t)
		k.RequireSent(t, []string{"p1", "p2"}[i])
	}
	k.attrs.set("bob", "plan", "pro")
	require.NoError(t, k.elig.SetPreference(ctx, eligibility.Preference{User: "cy", Topic: eligibility.CategoryTopic("upsell"), OptedOut: true, At: k.Clock.Now()}))
	k.Clock.Advance(2 * time.Hour) // past late's TTL
	k.Send(t, inApp("fresh", "dee", "Still here"))

	require.Empty(t, k.show(t, "ada"))
	require.Equal(t, "capped by two-a-day", k.reasonOf("capped", tracking.Capped))
	require.Empty(t, k.show(t, "bob"))
	require.Equal(t, "already on the pro plan", k.reasonOf("pro", tracking.Ineligible))
	require.Empty(t, k.show(t, "cy"))
	require.Contains(t, k.reasonOf("optout", tracking.OptedOut), "upsell")
	got := k.show(t, "dee")
	require.Len(t, got, 1, "the expired one is not shown, the fresh one is")
	require.Equal(t, "fresh", got[0].ID)
	require.Contains(t, k.Types("late"), tracking.Expired)

	// A refused message cannot be reacted to: it was never displayed.
	ok, err := k.Dispatcher.ReactInApp(ctx, "bob", "pro", inbox.Dismissed)
	require.NoError(t, err)
	require.False(t, ok)
	// None of the refusals took a slot: bob, cy and dee have the whole cap.
	require.NotContains(t, k.Types("pro"), tracking.Displayed)
}

// Eight clients of one user asking at once (tabs, devices, processes on
// one file) get each message once between them.
func TestInAppIsShownToOneCallerOnce(t *testing.T) {
	t.Parallel()
	db, err := embedded.Open(filepath.Join(t.TempDir(), "herald.db"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	k := newInAppKit(t, db.Inbox())
	for _, key := range []string{"a", "b"} {
		m := inApp(key, "ada", key)
		m.Category = "news"
		k.Send(t, m)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := k.Dispatcher.ShowInApp(context.Background(), "ada")
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, m := range s {
				seen[m.ID]++
			}
		}()
	}
	wg.Wait()
	require.Equal(t, map[string]int{"a": 1, "b": 1}, seen)
}

// The door: an in-app message needs a user, an Inbox store, content that
// fits, and data keys a client can read.
func TestInAppDoor(t *testing.T) {
	t.Parallel()
	k := newInAppKit(t, inbox.NewMemoryStore())
	ctx := context.Background()
	for name, m := range map[string]herald.Message{
		"User":       {IdempotencyKey: "x", InApp: &herald.InAppMessage{Title: "x"}},
		"InApp":      {IdempotencyKey: "x", User: "u", InApp: &herald.InAppMessage{}},
		"InApp.Data": {IdempotencyKey: "x", User: "u", InApp: &herald.InAppMessage{Title: "x", Data: map[string]string{"\x1emessage": "forged"}}},
		"Push/Email/SMS/InApp": {IdempotencyKey: "x", User: "u", InApp: &herald.InAppMessage{Title: "x"},
			Push: &herald.PushMessage{Provider: push.APNs, Message: push.Message{Token: "t"}}},
	} {
		_, err := k.Dispatcher.Send(ctx, m)
		var fe *herald.FieldError
		require.ErrorAs(t, err, &fe, name)
		require.Equal(t, name, fe.Field)
	}
	plain := heraldtest.New(t, nil)
	_, err := plain.Dispatcher.Send(ctx, inApp("y", "u", "y"))
	var fe *herald.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "InApp", fe.Field)
	require.Contains(t, fe.Reason, "Config.Inbox")
}
