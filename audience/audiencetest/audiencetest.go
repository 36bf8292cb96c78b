// Package audiencetest is the conformance suite every audience.Store
// must pass.
package audiencetest

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/heraldhq/herald/audience"
)

// Options tune the suite.
type Options struct {
	// Reopen, when set, closes s and opens the same store again.
	Reopen func(t *testing.T, s audience.Store) audience.Store
}

var ctx = context.Background()

// Run runs the suite. open must return a new, empty store.
func Run(t *testing.T, open func(t *testing.T) audience.Store, opts *Options) {
	if opts == nil {
		opts = &Options{}
	}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s audience.Store)
	}{
		{"UploadIsIdempotentByID", testUpload},
		{"PagesInUserOrder", testPages},
		{"RemoveAndReplace", testRemove},
		{"ConcurrentUploads", testConcurrent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
	if opts.Reopen != nil {
		t.Run("Durability", func(t *testing.T) {
			t.Parallel()
			s := open(t)
			if _, err := s.Upload(ctx, "vip", "u1", members("a", "b")); err != nil {
				t.Fatal(err)
			}
			s = opts.Reopen(t, s)
			if n, err := s.Size(ctx, "vip"); n != 2 || err != nil {
				t.Fatalf("size after reopen %d %v", n, err)
			}
			if dup, _ := s.Upload(ctx, "vip", "u1", members("c")); !dup {
				t.Fatal("an upload ID applied before the reopen was applied again")
			}
		})
	}
}

func members(users ...string) []audience.Member {
	out := make([]audience.Member, len(users))
	for i, u := range users {
		out[i] = audience.Member{User: u, Email: u + "@example.com", TimeZone: "Europe/Paris", Vars: map[string]string{"Name": "N-" + u}}
	}
	return out
}

func users(ms []audience.Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.User
	}
	return out
}

func testUpload(t *testing.T, s audience.Store) {
	dup, err := s.Upload(ctx, "vip", "batch-1", members("a", "b", "c"))
	if err != nil || dup {
		t.Fatalf("first upload: %v %v", dup, err)
	}
	// The Custom Audience API timed out; the host retries the same batch,
	// then a batch with another ID.
	dup, err = s.Upload(ctx, "vip", "batch-1", members("a", "b", "c", "zzz"))
	if err != nil || !dup {
		t.Fatalf("retried upload: %v %v, want duplicate", dup, err)
	}
	if _, err := s.Upload(ctx, "vip", "batch-2", members("d")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Upload(ctx, "other", "batch-1", members("x")); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Size(ctx, "vip"); n != 4 {
		t.Fatalf("size %d, want 4 (a b c d; the retried batch's extra member is not in)", n)
	}
	if n, _ := s.Size(ctx, "other"); n != 1 {
		t.Fatalf("upload IDs are per audience: size %d", n)
	}
	page, err := s.Page(ctx, "vip", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	want := members("a", "b", "c", "d")
	if !reflect.DeepEqual(page, want) {
		t.Fatalf("members changed in the store:\n got %+v\nwant %+v", page, want)
	}
}

func testPages(t *testing.T, s audience.Store) {
	var all []string
	for i := range 25 {
		all = append(all, fmt.Sprintf("user-%03d", i))
	}
	if _, err := s.Upload(ctx, "aud", "b", members(all...)); err != nil {
		t.Fatal(err)
	}
	var got []string
	after := ""
	for {
		page, err := s.Page(ctx, "aud", after, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		got = append(got, users(page)...)
		after = page[len(page)-1].User
	}
	if !reflect.DeepEqual(got, all) {
		t.Fatalf("pages: %v", got)
	}
}

func testRemove(t *testing.T, s audience.Store) {
	if _, err := s.Upload(ctx, "aud", "1", members("a", "b", "c")); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "aud", []string{"b", "nobody"}); err != nil {
		t.Fatal(err)
	}
	changed := members("a")
	changed[0].Email = "new@example.com"
	if _, err := s.Upload(ctx, "aud", "2", changed); err != nil {
		t.Fatal(err)
	}
	page, _ := s.Page(ctx, "aud", "", 10)
	if !reflect.DeepEqual(users(page), []string{"a", "c"}) || page[0].Email != "new@example.com" {
		t.Fatalf("after remove and replace: %+v", page)
	}
}

func testConcurrent(t *testing.T, s audience.Store) {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				// Two goroutines share each upload ID: it applies once.
				id := fmt.Sprintf("up-%d-%d", g/2, i)
				if _, err := s.Upload(ctx, "aud", id, members(fmt.Sprintf("u-%d-%02d", g/2, i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n, _ := s.Size(ctx, "aud"); n != 80 {
		t.Fatalf("size %d, want 80", n)
	}
}
