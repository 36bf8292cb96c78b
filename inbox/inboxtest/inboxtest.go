// Package inboxtest is the conformance suite every inbox.Store must pass,
// with the queue store its Enqueuer writes the jobs to.
package inboxtest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/retry"
)

// Open returns a new, empty Inbox store and the queue store beside it.
type Open func(t *testing.T) (inbox.Store, retry.Store)

var (
	ctx  = context.Background()
	base = time.Date(2030, 3, 4, 5, 6, 7, 8000, time.UTC)
)

// Run runs the suite.
func Run(t *testing.T, open Open) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s inbox.Store, q retry.Store)
	}{
		{"WrittenWithItsJobs", testWritten},
		{"FeedPagesNewestFirst", testFeed},
		{"MarksAndCounts", testMarks},
		{"ExpiryAndPrune", testExpiry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, q := open(t)
			tc.fn(t, s, q)
		})
	}
}

func item(user, id string, at time.Time) inbox.Item {
	return inbox.Item{ID: id, User: user, Title: "T " + id, Body: "B", Data: map[string]string{"k": id}, Category: "orders", Campaign: "c", Created: at}
}

func job(key string) *retry.Job {
	return &retry.Job{Kind: "k", Lane: "default", State: retry.StateAvailable, MaxAttempts: 1, IdempotencyKey: key,
		RunAt: base, CreatedAt: base, UpdatedAt: base, Payload: []byte("{}")}
}

func put(t *testing.T, s inbox.Store, q retry.Store, items ...inbox.Item) {
	t.Helper()
	if _, err := s.Enqueuer(q, items).Enqueue(ctx, nil, base.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
}

func ids(items []inbox.Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.ID
	}
	return out
}

func testWritten(t *testing.T, s inbox.Store, q retry.Store) {
	it := item("ada", "order-42", base)
	if _, err := s.Enqueuer(q, []inbox.Item{it}).Enqueue(ctx, []*retry.Job{job("order-42")}, base.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	// A retried call: the same item again changes nothing, even if its
	// text differs (the first write is what the user saw).
	again := it
	again.Title = "changed"
	if _, err := s.Enqueuer(q, []inbox.Item{again}).Enqueue(ctx, []*retry.Job{job("order-42")}, base.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	feed, _, err := s.Feed(ctx, "ada", inbox.Query{Now: base})
	if err != nil || len(feed) != 1 {
		t.Fatalf("feed: %v %v", feed, err)
	}
	got := feed[0]
	if !got.Created.Equal(base) {
		t.Fatalf("Created %s, want %s", got.Created, base)
	}
	got.Created = it.Created
	if !reflect.DeepEqual(got, it) {
		t.Fatalf("item changed in the store:\n got %+v\nwant %+v", got, it)
	}
	if js, _ := q.List(ctx, retry.Filter{}); len(js) != 1 {
		t.Fatalf("%d jobs, want 1", len(js))
	}
	if feed, _, _ := s.Feed(ctx, "bob", inbox.Query{Now: base}); len(feed) != 0 {
		t.Fatal("another user's feed holds the item")
	}
}

func testFeed(t *testing.T, s inbox.Store, q retry.Store) {
	var items []inbox.Item
	for i := range 25 {
		items = append(items, item("ada", fmt.Sprintf("m%02d", i), base.Add(time.Duration(i)*time.Second)))
	}
	items = append(items, item("ada", "same-time-b", base.Add(time.Hour)), item("ada", "same-time-a", base.Add(time.Hour)))
	put(t, s, q, items...)
	var got []string
	cursor := ""
	for range 10 {
		page, next, err := s.Feed(ctx, "ada", inbox.Query{After: cursor, Limit: 10, Now: base})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids(page)...)
		if next == "" {
			break
		}
		cursor = next
	}
	want := []string{"same-time-b", "same-time-a"}
	for i := 24; i >= 0; i-- {
		want = append(want, fmt.Sprintf("m%02d", i))
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("feed order:\n got %v\nwant %v", got, want)
	}
	if _, _, err := s.Feed(ctx, "ada", inbox.Query{After: "not a cursor"}); !errors.Is(err, inbox.ErrBadCursor) {
		t.Fatalf("bad cursor: %v", err)
	}
}

func testMarks(t *testing.T, s inbox.Store, q retry.Store) {
	put(t, s, q, item("ada", "a", base), item("ada", "b", base.Add(time.Second)), item("ada", "c", base.Add(2*time.Second)), item("bob", "a", base))
	if c, _ := s.Counts(ctx, "ada", base); c != (inbox.Counts{Unread: 3, Unseen: 3}) {
		t.Fatalf("counts %+v", c)
	}
	if n, err := s.Mark(ctx, "ada", []string{"a", "b", "nope"}, inbox.Seen, base.Add(time.Minute)); err != nil || n != 2 {
		t.Fatalf("mark seen: %d %v", n, err)
	}
	if n, _ := s.Mark(ctx, "ada", []string{"a"}, inbox.Read, base.Add(2*time.Minute)); n != 1 {
		t.Fatalf("mark read: %d", n)
	}
	if n, _ := s.Mark(ctx, "ada", []string{"a"}, inbox.Read, base.Add(3*time.Minute)); n != 0 {
		t.Fatalf("read twice changed %d", n)
	}
	if c, _ := s.Counts(ctx, "ada", base); c != (inbox.Counts{Unread: 2, Unseen: 1}) {
		t.Fatalf("counts after marks %+v", c)
	}
	if c, _ := s.Counts(ctx, "bob", base); c != (inbox.Counts{Unread: 1, Unseen: 1}) {
		t.Fatalf("another user's marks touched bob: %+v", c)
	}
	if n, _ := s.Mark(ctx, "bob", []string{"b", "c"}, inbox.Archived, base); n != 0 {
		t.Fatalf("bob archived ada's items: %d", n)
	}
	if _, err := s.Mark(ctx, "ada", []string{"c"}, inbox.Archived, base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	feed, _, _ := s.Feed(ctx, "ada", inbox.Query{Now: base})
	if !reflect.DeepEqual(ids(feed), []string{"b", "a"}) {
		t.Fatalf("feed without archived: %v", ids(feed))
	}
	arch, _, _ := s.Feed(ctx, "ada", inbox.Query{Archived: true, Now: base})
	if !reflect.DeepEqual(ids(arch), []string{"c"}) || !arch[0].ArchivedAt.Equal(base.Add(time.Hour)) {
		t.Fatalf("archived: %+v", arch)
	}
	a := feed[1]
	if !a.ReadAt.Equal(base.Add(2*time.Minute)) || !a.SeenAt.Equal(base.Add(time.Minute)) {
		t.Fatalf("read/seen times: %+v", a)
	}
	if _, err := s.Mark(ctx, "ada", []string{"a"}, inbox.Unread, base); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Counts(ctx, "ada", base); c.Unread != 2 {
		t.Fatalf("after unread: %+v (c is archived, a and b unread)", c)
	}
}

func testExpiry(t *testing.T, s inbox.Store, q retry.Store) {
	short := item("ada", "flash", base)
	short.Expires = base.Add(time.Hour)
	put(t, s, q, short, item("ada", "keep", base.Add(time.Second)), item("ada", "old", base.Add(-48*time.Hour)))
	if feed, _, _ := s.Feed(ctx, "ada", inbox.Query{Now: base.Add(2 * time.Hour)}); !reflect.DeepEqual(ids(feed), []string{"keep", "old"}) {
		t.Fatalf("expired item in the feed: %v", ids(feed))
	}
	if c, _ := s.Counts(ctx, "ada", base.Add(2*time.Hour)); c.Unread != 2 {
		t.Fatalf("expired item counted: %+v", c)
	}
	n, err := s.Prune(ctx, base.Add(2*time.Hour), base.Add(-24*time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("Prune: %d %v, want 2 (flash expired, old past retention)", n, err)
	}
	if feed, _, _ := s.Feed(ctx, "ada", inbox.Query{Now: base}); !reflect.DeepEqual(ids(feed), []string{"keep"}) {
		t.Fatalf("after prune: %v", ids(feed))
	}
}
