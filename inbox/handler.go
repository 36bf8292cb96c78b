package inbox

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/secret"
	"github.com/heraldhq/herald/tracking"
)

// Tokens signs and checks the short-lived user tokens a host's backend
// gives its clients (the pattern Knock and Novu use for their feeds): a
// token names one user and expires; the client sends it as
// "Authorization: Bearer <token>".
type Tokens struct {
	// Key signs the tokens (32 random bytes; keep it like a password).
	Key secret.Value
	// TTL is how long a token works. Default 1 hour.
	TTL time.Duration
}

// ErrBadToken is a token that does not check: forged, expired, malformed.
var ErrBadToken = errors.New("inbox: user token not valid")

func (t *Tokens) mac(payload string) string {
	m := hmac.New(sha256.New, t.Key.Bytes())
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Sign returns a token for user, valid from now for TTL.
func (t *Tokens) Sign(user string, now time.Time) string {
	ttl := t.TTL
	if ttl <= 0 {
		ttl = time.Hour
	}
	payload := base64.RawURLEncoding.EncodeToString([]byte(user)) + "." + strconv.FormatInt(now.Add(ttl).Unix(), 10)
	return payload + "." + t.mac(payload)
}

// Check returns the user a token names.
func (t *Tokens) Check(token string, now time.Time) (string, error) {
	i := strings.LastIndexByte(token, '.')
	if t.Key.IsZero() || i < 0 {
		return "", ErrBadToken
	}
	payload, sig := token[:i], token[i+1:]
	if !hmac.Equal([]byte(sig), []byte(t.mac(payload))) {
		return "", ErrBadToken
	}
	u64, exp, ok := strings.Cut(payload, ".")
	e, err := strconv.ParseInt(exp, 10, 64)
	user, uerr := base64.RawURLEncoding.DecodeString(u64)
	if !ok || err != nil || uerr != nil || len(user) == 0 {
		return "", ErrBadToken
	}
	if now.Unix() > e {
		return "", fmt.Errorf("%w: expired", ErrBadToken)
	}
	return string(user), nil
}

// HandlerConfig configures Handler.
type HandlerConfig struct {
	Store  Store
	Tokens *Tokens
	// AllowedOrigins are the web origins (https://app.example.com) whose
	// pages may call the API (CORS); others get no CORS headers and a 403
	// on preflight.
	AllowedOrigins []string
	// InApp, when set, serves the in-app messages to show now and the
	// user's reactions to them (a herald.Dispatcher).
	InApp InApp
	// Events, when set, takes the client's events and attribute updates
	// (tracking.IngestHandler, authenticated by the user token: every
	// event is recorded as the token's user's). Ingest tunes it; its
	// Authenticate is set here.
	Events *tracking.Outbox
	Ingest tracking.IngestConfig
	// Notifier wakes the streams of users with new items at once (the
	// Dispatcher's Config.Notifier); without it, or for items written by
	// other processes, streams see new items within PollInterval
	// (default 5 s).
	Notifier     *Notifier
	PollInterval time.Duration
	// StreamFor ends a stream after this long (default 5 min; the
	// client reconnects with a fresh token).
	StreamFor time.Duration
	Logger    *slog.Logger
	Now       func() time.Time
}

// maxBody caps a request body.
const maxBody = 64 << 10

// Handler is the Inbox's client API, for a host to mount (at /inbox/, say,
// with http.StripPrefix):
//
//	GET  feed?after=&limit=&archived=   a page of the user's feed and the next cursor
//	GET  counts                        unread and unseen counts
//	POST mark {"ids": [...], "mark": "read"|"seen"|"archived"|"unread"|"unarchived"}
//	GET  inapp                         the in-app messages to show now (InApp)
//	POST inapp/{id}/clicked            the user's reaction to a displayed one (InApp)
//	POST inapp/{id}/dismissed
//	POST events {"events": [...]}      engagement, custom and attributes events (Events)
//	GET  stream                        server-sent events: "counts" when they change,
//	                                   "inapp" when in-app messages may be due
//
// Every request carries the user's token; an item of another user is
// never read or changed (a mark of it counts nothing, a 404 when none of
// the ids is the user's). Bad bodies get 400 naming the field, oversized
// ones 413; CORS is answered for AllowedOrigins only.
func Handler(cfg *HandlerConfig) http.Handler {
	c := *cfg
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.PollInterval = cmp.Or(c.PollInterval, 5*time.Second)
	c.StreamFor = cmp.Or(c.StreamFor, 5*time.Minute)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /feed", c.feed)
	mux.HandleFunc("GET /counts", c.counts)
	mux.HandleFunc("POST /mark", c.mark)
	mux.HandleFunc("GET /stream", c.stream)
	if c.InApp != nil {
		mux.HandleFunc("GET /inapp", c.inApp)
		mux.HandleFunc("POST /inapp/{id}/{reaction}", c.react)
	}
	if c.Events != nil {
		ic := c.Ingest
		ic.Authenticate = c.userOf
		ic.Logger = cmp.Or(ic.Logger, c.Logger)
		mux.Handle("POST /events", tracking.IngestHandler(c.Events, &ic))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if origin := r.Header.Get("Origin"); origin != "" {
			if !slices.Contains(c.AllowedOrigins, origin) {
				if r.Method == http.MethodOptions {
					http.Error(w, "origin not allowed", http.StatusForbidden)
					return
				}
			} else {
				w.Header().Set("Access-Control-Allow-Origin", origin)
				w.Header().Set("Vary", "Origin")
				if r.Method == http.MethodOptions {
					w.Header().Set("Access-Control-Allow-Methods", "GET, POST")
					w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
					w.Header().Set("Access-Control-Max-Age", "600")
					w.WriteHeader(http.StatusNoContent)
					return
				}
			}
		}
		mux.ServeHTTP(w, r)
	})
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// userOf returns the user a request's token names.
func (c *HandlerConfig) userOf(r *http.Request) (string, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return "", fmt.Errorf("%w: missing (Authorization: Bearer <token>)", ErrBadToken)
	}
	return c.Tokens.Check(tok, c.Now())
}

func (c *HandlerConfig) user(w http.ResponseWriter, r *http.Request) (string, bool) {
	u, err := c.userOf(r)
	if err != nil {
		reply(w, http.StatusUnauthorized, map[string]string{"error": "user token missing, not valid or expired (Authorization: Bearer <token>)"})
		return "", false
	}
	return u, true
}

func (c *HandlerConfig) feed(w http.ResponseWriter, r *http.Request) {
	u, ok := c.user(w, r)
	if !ok {
		return
	}
	q := Query{After: r.URL.Query().Get("after"), Now: c.Now(), Archived: r.URL.Query().Get("archived") == "true"}
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 200 {
			reply(w, http.StatusBadRequest, map[string]string{"error": "limit must be 1 to 200", "field": "limit"})
			return
		}
		q.Limit = n
	}
	items, next, err := c.Store.Feed(r.Context(), u, q)
	switch {
	case errors.Is(err, ErrBadCursor):
		reply(w, http.StatusBadRequest, map[string]string{"error": "malformed cursor", "field": "after"})
		return
	case err != nil:
		c.Logger.Warn("inbox: feed", "err", err)
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "try again"})
		return
	}
	if items == nil {
		items = []Item{}
	}
	reply(w, http.StatusOK, map[string]any{"items": items, "next": next})
}

func (c *HandlerConfig) counts(w http.ResponseWriter, r *http.Request) {
	u, ok := c.user(w, r)
	if !ok {
		return
	}
	n, err := c.Store.Counts(r.Context(), u, c.Now())
	if err != nil {
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "try again"})
		return
	}
	reply(w, http.StatusOK, map[string]int{"unread": n.Unread, "unseen": n.Unseen})
}

func (c *HandlerConfig) mark(w http.ResponseWriter, r *http.Request) {
	u, ok := c.user(w, r)
	if !ok {
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		reply(w, http.StatusUnsupportedMediaType, map[string]string{"error": "Content-Type must be application/json"})
		return
	}
	var body struct {
		IDs  []string `json:"ids"`
		Mark Mark     `json:"mark"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			reply(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("body over %d bytes", mbe.Limit)})
			return
		}
		reply(w, http.StatusBadRequest, map[string]string{"error": "body is not {\"ids\": [...], \"mark\": ...}"})
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		reply(w, http.StatusBadRequest, map[string]string{"error": "trailing data after the JSON object"})
		return
	}
	switch {
	case len(body.IDs) == 0 || len(body.IDs) > 500:
		reply(w, http.StatusBadRequest, map[string]string{"error": "ids: 1 to 500 item IDs", "field": "ids"})
		return
	case !slices.Contains([]Mark{Read, Seen, Archived, Unread, Unarchived}, body.Mark):
		reply(w, http.StatusBadRequest, map[string]string{"error": "mark: read, seen, archived, unread or unarchived", "field": "mark"})
		return
	}
	n, err := c.Store.Mark(r.Context(), u, body.IDs, body.Mark, c.Now())
	if err != nil {
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "try again"})
		return
	}
	if n == 0 {
		// None of them changed: say whether they exist for this user.
		items, _, err := c.Store.Feed(r.Context(), u, Query{Now: c.Now(), Limit: 200})
		archived, _, aerr := c.Store.Feed(r.Context(), u, Query{Now: c.Now(), Limit: 200, Archived: true})
		if err == nil && aerr == nil && !anyOf(append(items, archived...), body.IDs) {
			reply(w, http.StatusNotFound, map[string]string{"error": "no such item"})
			return
		}
	}
	reply(w, http.StatusOK, map[string]int{"changed": n})
}

func anyOf(items []Item, ids []string) bool {
	for _, it := range items {
		if slices.Contains(ids, it.ID) {
			return true
		}
	}
	return false
}
