package herald_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/secret"
	"github.com/heraldhq/herald/tracking"
)

// attributeSink is the host's side of attribute updates: the outbox
// hands them over, and the host's targeting reads them.
type attributeSink struct {
	attrs *attributes
	mu    sync.Mutex
	seen  map[string]bool
}

func (s *attributeSink) Name() string { return "attributes" }

func (s *attributeSink) Write(_ context.Context, events []tracking.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range events {
		if s.seen[e.ID] {
			continue
		}
		s.seen[e.ID] = true
		if e.Type == tracking.Attributes {
			for k, v := range e.Props {
				s.attrs.set(e.User, k, v)
			}
		}
	}
	return nil
}

type clientAPI struct {
	*inAppKit
	srv      *httptest.Server
	tokens   *inbox.Tokens
	journal  *tracking.MemoryStore
	outbox   *tracking.Outbox
	notifier *inbox.Notifier
}

func newClientAPI(t *testing.T) *clientAPI {
	notifier := &inbox.Notifier{}
	st := inbox.NewMemoryStore()
	k := &inAppKit{inbox: st, attrs: &attributes{m: map[string]map[string]any{}}}
	base := newInAppKitWith(t, k, func(c *herald.Config) { c.Notifier = notifier })
	c := &clientAPI{inAppKit: base, notifier: notifier, journal: tracking.NewMemoryStore(),
		tokens: &inbox.Tokens{Key: secret.String("k-0123456789abcdef0123456789abcdef"), TTL: time.Minute}}
	var err error
	c.outbox, err = tracking.NewOutbox(c.journal, &tracking.OutboxConfig{PollInterval: time.Millisecond,
		Sinks: []tracking.Sink{&attributeSink{attrs: k.attrs, seen: map[string]bool{}}}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.outbox.Close(context.Background()) })
	c.srv = httptest.NewServer(http.StripPrefix("/inbox", inbox.Handler(&inbox.HandlerConfig{Store: st, Tokens: c.tokens,
		InApp: c.Dispatcher, Events: c.outbox, Notifier: notifier, PollInterval: time.Hour})))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *clientAPI) do(t *testing.T, method, path, user, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, c.srv.URL+"/inbox"+path, strings.NewReader(body))
	require.NoError(t, err)
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+c.tokens.Sign(user, time.Now()))
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	var sb strings.Builder
	_, _ = bufio.NewReader(res.Body).WriteTo(&sb)
	return res.StatusCode, sb.String()
}

// Through the client API as a browser uses it: the in-app message to show
// now, a reaction, and an attribute update that reaches the host's
// targeting through the journal and its sink, so the next in-app message
// is refused at display time.
func TestClientAPIInAppAndAttributes(t *testing.T) {
	t.Parallel()
	c := newClientAPI(t)
	c.Send(t, inApp("upsell-1", "ada", "Go Pro"))

	code, body := c.do(t, "GET", "/inapp", "ada", "")
	require.Equal(t, http.StatusOK, code, body)
	var got struct{ Messages []inbox.Shown }
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	require.Len(t, got.Messages, 1)
	require.Equal(t, "Go Pro", got.Messages[0].Title)
	require.NotContains(t, body, "IdempotencyKey", "the stored message is not the client's")

	code, _ = c.do(t, "POST", "/inapp/upsell-1/dismissed", "bob", "")
	require.Equal(t, http.StatusNotFound, code, "another user's message")
	code, _ = c.do(t, "POST", "/inapp/upsell-1/exploded", "ada", "")
	require.Equal(t, http.StatusNotFound, code)
	code, _ = c.do(t, "POST", "/inapp/upsell-1/dismissed", "ada", "")
	require.Equal(t, http.StatusNoContent, code)
	require.Contains(t, c.Types("upsell-1"), tracking.Dismissed)

	// ada upgrades; her page says so; the host's predicate sees it.
	ev := `{"events":[{"id":"e1","type":"attributes","props":{"plan":"pro"},"user":"bob","at":"` + time.Now().UTC().Format(time.RFC3339) + `"}]}`
	code, body = c.do(t, "POST", "/events", "ada", ev)
	require.Equal(t, http.StatusAccepted, code, body)
	code, _ = c.do(t, "POST", "/events", "ada", ev)
	require.Equal(t, http.StatusAccepted, code, "a retried batch is deduplicated")
	require.Eventually(t, func() bool { return c.attrs.get("ada", "plan") == "pro" }, 5*time.Second, time.Millisecond,
		"the update reaches the host as ada's, whatever its user field said")
	require.Nil(t, c.attrs.get("bob", "plan"), "a client cannot write as another user")
	require.NoError(t, c.outbox.Flush(context.Background()))
	recs, err := c.journal.Read(context.Background(), 0, 100)
	require.NoError(t, err)
	require.Len(t, recs, 1, "journaled once")

	c.Send(t, inApp("upsell-2", "ada", "Go Pro, really"))
	code, body = c.do(t, "GET", "/inapp", "ada", "")
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"messages":[]}`, body)
	require.Equal(t, "already on the pro plan", c.reasonOf("upsell-2", tracking.Ineligible))

	// Bad input at the door.
	code, _ = c.do(t, "GET", "/inapp", "", "")
	require.Equal(t, http.StatusUnauthorized, code)
	expired := c.tokens.Sign("ada", time.Now().Add(-2*time.Minute))
	req, _ := http.NewRequest("POST", c.srv.URL+"/inbox/events", strings.NewReader(ev))
	req.Header.Set("Authorization", "Bearer "+expired)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusUnauthorized, res.StatusCode, "an expired token")
	code, body = c.do(t, "POST", "/events", "ada", `{"events":[{"id":"e2","type":"custom","at":"2030-01-01T00:00:00Z"}]}`)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, body, "name")
	code, _ = c.do(t, "POST", "/events", "ada", `{"events":[{"id":"e3","type":"sent","message_id":"m","at":"2030-01-01T00:00:00Z"}]}`)
	require.Equal(t, http.StatusBadRequest, code, "a client cannot claim a delivery")
	code, _ = c.do(t, "POST", "/events", "ada", `{"events":[`+strings.Repeat(`{"id":"x","type":"custom","name":"n","at":"2030-01-01T00:00:00Z"},`, 30000)+`{}]}`)
	require.Equal(t, http.StatusRequestEntityTooLarge, code)
}

// The stream: counts at once, then again as soon as an Inbox message for
// the user is accepted (woken by the Dispatcher's Notifier, not a poll:
// the poll interval here is an hour), and an "inapp" hint.
func TestClientAPIStream(t *testing.T) {
	t.Parallel()
	c := newClientAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", c.srv.URL+"/inbox/stream", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+c.tokens.Sign("ada", time.Now()))
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
	lines := bufio.NewScanner(res.Body)
	next := func(prefix string) string {
		for lines.Scan() {
			if s, ok := strings.CutPrefix(lines.Text(), prefix); ok {
				return s
			}
		}
		t.Fatalf("stream ended looking for %q: %v", prefix, lines.Err())
		return ""
	}
	require.Equal(t, `{"unread":0,"unseen":0}`, next("data: "))
	c.Send(t, herald.Message{IdempotencyKey: "n1", User: "ada", Inbox: &herald.InboxItem{Title: "Hello"}})
	require.Equal(t, "inapp", next("event: "))
	require.Equal(t, "counts", next("event: "))
	require.Equal(t, `{"unread":1,"unseen":1}`, next("data: "))
}
