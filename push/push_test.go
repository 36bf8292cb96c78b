package push_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/push"
	"github.com/heraldhq/herald/retry"
)

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"120", 2 * time.Minute},
		{" 7 ", 7 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"Wednesday, 06-May-30 07:10:09 GMT", 2 * time.Minute}, // RFC 850, still valid input
		{"99999999999", 365 * 24 * time.Hour},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, push.ParseRetryAfter(tc.in, now), "%q", tc.in)
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "Wed, 21 Oct 2015 07:28:00 GMT", "", "-1", "1e9"} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, s string) {
		if d := push.ParseRetryAfter(s, now); d < 0 {
			t.Fatalf("negative delay %s for %q", d, s)
		}
	})
}

func TestErrorClassesAndRetryHint(t *testing.T) {
	t.Parallel()
	e := &push.Error{Provider: push.APNs, Kind: push.ErrRateLimited, Status: 429, Reason: "TooManyRequests", RetryAfter: time.Minute, Token: push.MaskToken("0123456789abcdef0123")}
	wrapped := fmt.Errorf("sending: %w", e)
	require.ErrorIs(t, wrapped, push.ErrRateLimited)
	require.True(t, push.IsRetryable(wrapped))
	require.False(t, push.IsRecipientGone(wrapped))
	require.Equal(t, "push: apns: rate limited (status 429, TooManyRequests) [to 0123…0123(20)] retry after 1m0s", e.Error())

	// The retry queue honours the provider's Retry-After through the error chain.
	q, err := retry.New(retry.NewMemoryStore(), nil)
	require.NoError(t, err)
	q.HandleFunc("push", func(context.Context, *retry.Job) error { return wrapped })
	res, err := q.Enqueue(context.Background(), retry.EnqueueParams{Kind: "push"})
	require.NoError(t, err)
	_, err = q.Drain(context.Background())
	require.NoError(t, err)
	j, err := q.Job(context.Background(), res.ID)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(time.Minute), j.RunAt, 5*time.Second)

	gone := &push.Error{Provider: push.FCM, Kind: push.ErrUnregistered}
	require.True(t, push.IsRecipientGone(gone))
	require.False(t, push.IsRetryable(gone))
	require.True(t, push.IsRetryable(context.DeadlineExceeded))
	require.False(t, push.IsRetryable(nil))
	net := &push.Error{Provider: push.WebPush, Kind: push.ErrUnavailable, Err: errors.New("connection reset")}
	require.ErrorContains(t, net, "connection reset")
	require.True(t, push.IsRetryable(net))
}

func TestCollapseIdentifiers(t *testing.T) {
	t.Parallel()
	id := push.CollapseID("order-1")
	require.Len(t, id, 22)
	require.Equal(t, id, push.CollapseID("order-1"), "stable across calls and processes")
	require.NotEqual(t, id, push.CollapseID("order-2"))
	require.Equal(t, id, push.CollapseKeyFor(&push.Message{IdempotencyKey: "order-1"}))
	require.Equal(t, "mine", push.CollapseKeyFor(&push.Message{IdempotencyKey: "order-1", Notification: push.Notification{CollapseKey: "mine"}}))
	require.Empty(t, push.CollapseKeyFor(&push.Message{}))
	require.Equal(t, "news_1-a", push.TopicFor("news_1-a"))
	require.Equal(t, push.CollapseID("has space"), push.TopicFor("has space"))
	require.Equal(t, push.CollapseID("x"+string(make([]byte, 40))), push.TopicFor("x"+string(make([]byte, 40))))
}

func TestMaskToken(t *testing.T) {
	t.Parallel()
	require.Equal(t, "***(5)", push.MaskToken("short"))
	require.Equal(t, "abcd…wxyz(26)", push.MaskToken("abcdefghijklmnopqrstuvwxyz"))
}
