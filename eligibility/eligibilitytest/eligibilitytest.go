// Package eligibilitytest is the conformance suite every
// eligibility.Store must pass: the memory store, the embedded store's,
// PostgreSQL's and Redis's run it. It imports only the standard library
// and package eligibility.
package eligibilitytest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/eligibility"
)

// Options tune the suite.
type Options struct {
	// Reopen, when set, closes s and opens the same store again; the
	// Durability case runs with it.
	Reopen func(t *testing.T, s eligibility.Store) eligibility.Store
}

var (
	ctx  = context.Background()
	base = time.Date(2030, 3, 4, 5, 6, 7, 8000, time.UTC)
)

// Run runs the suite. open must return a new, empty store and arrange its
// Close with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) eligibility.Store, opts *Options) {
	if opts == nil {
		opts = &Options{}
	}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s eligibility.Store)
	}{
		{"SuppressAndUnsuppress", testSuppress},
		{"PreferencesLatestWins", testPreferences},
		{"Concurrent", testConcurrent},
		{"Closed", testClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
	if opts.Reopen != nil {
		t.Run("Durability", func(t *testing.T) {
			t.Parallel()
			testDurability(t, open(t), opts.Reopen)
		})
	}
}

func supp(channel, recipient, reason string) eligibility.Suppression {
	return eligibility.Suppression{Key: eligibility.RecipientKey(channel, recipient), Channel: channel, Masked: "m***", Reason: reason, Source: "provider", At: base}
}

func testSuppress(t *testing.T, s eligibility.Store) {
	a := supp("email", "Ada@Example.com", "smtp 550 5.1.1")
	if err := s.Suppress(ctx, a, supp("sms", "+14155552671", "twilio 21610")); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.Suppressed(ctx, eligibility.RecipientKey("email", "ada@example.com"))
	if err != nil || !ok {
		t.Fatalf("Suppressed(ada): %v, %v; want found (keys ignore an address's case)", ok, err)
	}
	if got.Channel != "email" || got.Reason != a.Reason || got.Masked != a.Masked || got.Source != "provider" || !got.At.Equal(base) {
		t.Fatalf("suppression changed in the store: %+v, want %+v", got, a)
	}
	if _, ok, _ := s.Suppressed(ctx, eligibility.RecipientKey("push", "ada@example.com")); ok {
		t.Fatal("a suppression on one channel matched another")
	}
	// Suppressing again replaces (a new reason, a later time).
	b := supp("email", "ada@example.com", "host: user deleted")
	b.Source, b.At = "host", base.Add(time.Hour)
	if err := s.Suppress(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.Suppressed(ctx, b.Key); got.Reason != b.Reason || got.Source != "host" {
		t.Fatalf("replaced suppression: %+v", got)
	}
	if err := s.Unsuppress(ctx, b.Key); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Suppressed(ctx, b.Key); ok {
		t.Fatal("still suppressed after Unsuppress")
	}
	if err := s.Unsuppress(ctx, "no-such-key"); err != nil {
		t.Fatalf("Unsuppress of an unknown key: %v", err)
	}
	if _, ok, _ := s.Suppressed(ctx, eligibility.RecipientKey("sms", "+14155552671")); !ok {
		t.Fatal("the other suppression was lost")
	}
}

func testPreferences(t *testing.T, s eligibility.Store) {
	promo, email := eligibility.CategoryTopic("promotions"), eligibility.ChannelTopic("email")
	if _, ok, err := s.OptedOut(ctx, "ada", []string{promo, email}); ok || err != nil {
		t.Fatalf("a new user opted out: %v %v", ok, err)
	}
	if err := s.SetPreference(ctx, eligibility.Preference{User: "ada", Topic: promo, OptedOut: true, At: base}); err != nil {
		t.Fatal(err)
	}
	topic, ok, err := s.OptedOut(ctx, "ada", []string{email, promo})
	if err != nil || !ok || topic != promo {
		t.Fatalf("OptedOut = %q %v %v, want %s", topic, ok, err, promo)
	}
	if _, ok, _ := s.OptedOut(ctx, "bob", []string{promo}); ok {
		t.Fatal("one user's opt-out applied to another")
	}
	// An older choice replayed (a delayed click) does not undo a newer one.
	if err := s.SetPreference(ctx, eligibility.Preference{User: "ada", Topic: promo, OptedOut: false, At: base.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.OptedOut(ctx, "ada", []string{promo}); !ok {
		t.Fatal("an older opt-in undid a newer opt-out")
	}
	if err := s.SetPreference(ctx, eligibility.Preference{User: "ada", Topic: promo, OptedOut: false, At: base.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.OptedOut(ctx, "ada", []string{promo}); ok {
		t.Fatal("a newer opt-in did not take")
	}
}

func testConcurrent(t *testing.T, s eligibility.Store) {
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if err := s.Suppress(ctx, supp("push", fmt.Sprintf("tok-%d-%d", g, i), "apns 410")); err != nil {
					errs <- err
					return
				}
				if err := s.SetPreference(ctx, eligibility.Preference{User: fmt.Sprint("u", i), Topic: "category:c", OptedOut: true, At: base.Add(time.Duration(g) * time.Second)}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for g := range 8 {
		for i := range 50 {
			if _, ok, err := s.Suppressed(ctx, eligibility.RecipientKey("push", fmt.Sprintf("tok-%d-%d", g, i))); !ok || err != nil {
				t.Fatalf("suppression %d/%d lost: %v", g, i, err)
			}
		}
	}
}

func testClosed(t *testing.T, s eligibility.Store) {
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Suppress(ctx, supp("push", "t", "r")); err == nil {
		t.Fatal("Suppress after Close succeeded")
	}
}

func testDurability(t *testing.T, s eligibility.Store, reopen func(*testing.T, eligibility.Store) eligibility.Store) {
	if err := s.Suppress(ctx, supp("push", "tok", "apns 410")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPreference(ctx, eligibility.Preference{User: "ada", Topic: "category:promotions", OptedOut: true, At: base}); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)
	if _, ok, err := s.Suppressed(ctx, eligibility.RecipientKey("push", "tok")); !ok || err != nil {
		t.Fatalf("suppression after reopen: %v %v", ok, err)
	}
	if _, ok, err := s.OptedOut(ctx, "ada", []string{"category:promotions"}); !ok || err != nil {
		t.Fatalf("preference after reopen: %v %v", ok, err)
	}
}
