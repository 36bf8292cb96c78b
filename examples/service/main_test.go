package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/embedded"
	"github.com/heraldhq/herald/internal/exampletb"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/secret"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testKeys = keys{API: secret.String("api-key-for-tests"), Events: secret.String("events-key-for-tests")}

// newTestService runs the service on a fresh store behind httptest.
func newTestService(t *testing.T) (*service, *httptest.Server) {
	t.Helper()
	tb := &exampletb.TB{}
	t.Cleanup(tb.Done)
	db, err := embedded.Open(filepath.Join(t.TempDir(), "herald.db"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	svc, err := newService(tb, db, nil)
	require.NoError(t, err)
	svc.keys = testKeys
	t.Cleanup(func() { _ = svc.outbox.Close(context.Background()) })
	srv := httptest.NewServer(svc.routes())
	t.Cleanup(srv.Close)
	return svc, srv
}

// Every route wants its key; bodies must be declared JSON, small, one
// object of known fields and nothing after it; a reused key with another
// message is a 409. Each refusal names what is wrong.
func TestServiceRefusesHostileRequests(t *testing.T) {
	_, srv := newTestService(t)
	msg := `{"IdempotencyKey":"order-1","User":"u1","Transactional":true,"Email":{"From":"shop@example.com","To":["ada@example.com"],"Subject":"Shipped","Text":"On its way"}}`
	do := func(method, path, ctype, key, body string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out
	}
	api, events := testKeys.API.Reveal(), testKeys.Events.Reveal()
	cases := []struct {
		name, method, path, ctype, key, body string
		want                                 int
		field                                string
	}{
		{"no key", "POST", "/v1/messages", "application/json", "", msg, 401, ""},
		{"wrong key", "POST", "/v1/messages", "application/json", "guess", msg, 401, ""},
		{"events key on the API", "POST", "/v1/messages", "application/json", events, msg, 401, ""},
		{"stats without a key", "GET", "/v1/stats", "", "", "", 401, ""},
		{"events without a key", "POST", "/v1/events", "application/json", "", `{"events":[]}`, 401, ""},
		{"text/plain (a cross-origin form post)", "POST", "/v1/messages", "text/plain", api, msg, 415, ""},
		{"form", "POST", "/v1/messages", "application/x-www-form-urlencoded", api, msg, 415, ""},
		{"no content type", "POST", "/v1/messages", "", api, msg, 415, ""},
		{"10 MB body", "POST", "/v1/messages", "application/json", api, `{"IdempotencyKey":"` + strings.Repeat("x", 10<<20) + `"}`, 413, ""},
		{"unknown field", "POST", "/v1/messages", "application/json", api, `{"IdempotencyKey":"k","Sneaky":1}`, 400, "Sneaky"},
		{"trailing data", "POST", "/v1/messages", "application/json", api, msg + `{"IdempotencyKey":"again"}`, 400, ""},
		{"trailing garbage", "POST", "/v1/messages", "application/json", api, msg + ` x`, 400, ""},
		{"malformed", "POST", "/v1/messages", "application/json", api, `{"IdempotencyKey":`, 400, ""},
		{"wrong type", "POST", "/v1/messages", "application/json", api, `{"IdempotencyKey":42}`, 400, "IdempotencyKey"},
		{"empty", "POST", "/v1/messages", "application/json", api, ``, 400, ""},
	}
	for _, tc := range cases {
		code, out := do(tc.method, tc.path, tc.ctype, tc.key, tc.body)
		require.Equal(t, tc.want, code, "%s: %v", tc.name, out)
		if tc.field != "" {
			require.Equal(t, tc.field, out["field"], tc.name)
		}
		if code != 401 {
			require.NotEmpty(t, out["error"], "%s: the answer says what is wrong", tc.name)
		}
	}
	code, _ := do("POST", "/v1/messages", "application/json; charset=utf-8", api, msg)
	require.Equal(t, http.StatusAccepted, code)
	code, out := do("POST", "/v1/messages", "application/json", api, strings.Replace(msg, "On its way", "Something else", 1))
	require.Equal(t, http.StatusConflict, code, "same key, another message: %v", out)
	require.Equal(t, "IdempotencyKey", out["field"])
	code, _ = do("POST", "/v1/events", "application/json", events, `{"events":[]}`)
	require.NotEqual(t, http.StatusUnauthorized, code, "the events key opens the events route")
}

// The server bounds every phase of a connection.
func TestServerTimeouts(t *testing.T) {
	s := newServer("127.0.0.1:0", http.NotFoundHandler())
	require.NotZero(t, s.ReadHeaderTimeout)
	require.NotZero(t, s.ReadTimeout, "a slow body holds a connection forever without it")
	require.NotZero(t, s.WriteTimeout)
	require.NotZero(t, s.IdleTimeout, "an idle keep-alive connection is held forever without it")
}

// The service's API: 202 once durable (and the same answer, marked
// duplicate, for a retried key), 400 naming the field of a bad message,
// engagement events ingested, stats that show the message sent.
func TestServiceAPI(t *testing.T) {
	tb := &exampletb.TB{}
	defer tb.Done()
	db, err := embedded.Open(filepath.Join(t.TempDir(), "herald.db"), nil)
	require.NoError(t, err)
	defer db.Close()
	svc, err := newService(tb, db, nil)
	require.NoError(t, err)
	svc.keys = testKeys
	ctx := context.Background()
	require.NoError(t, svc.d.Start(ctx))
	defer func() {
		_ = svc.d.Stop(ctx)
		_ = svc.outbox.Close(ctx)
	}()
	srv := httptest.NewServer(svc.routes())
	defer srv.Close()

	post := func(path, body string) (int, map[string]any) {
		req, err := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+testKeys.API.Reveal())
		if path == "/v1/events" {
			req.Header.Set("Authorization", "Bearer "+testKeys.Events.Reveal())
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out
	}
	msg := `{"IdempotencyKey":"order-42","User":"u1","Transactional":true,
		"Email":{"From":"shop@example.com","To":["ada@example.com"],"Subject":"Shipped","Text":"On its way"}}`
	code, first := post("/v1/messages", msg)
	require.Equal(t, http.StatusAccepted, code)
	code, again := post("/v1/messages", msg)
	require.Equal(t, http.StatusAccepted, code)
	require.Equal(t, first["ID"], again["ID"])
	require.Equal(t, true, again["Duplicate"])

	code, bad := post("/v1/messages", `{"IdempotencyKey":"x","User":"u1","SMS":{"To":"0612","From":"Shop","Body":"hi"}}`)
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "SMS", bad["field"])
	code, _ = post("/v1/messages", `{"Nope":1}`)
	require.Equal(t, http.StatusBadRequest, code)

	code, _ = post("/v1/events", `{"events":[{"id":"c1","message_id":"order-42","type":"opened","at":"`+time.Now().UTC().Format(time.RFC3339)+`"}]}`)
	require.Equal(t, http.StatusAccepted, code)

	require.Eventually(t, func() bool {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/stats", nil)
		req.Header.Set("Authorization", "Bearer "+testKeys.API.Reveal())
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		var st struct {
			Lanes []retry.LaneStats
		}
		require.NoError(t, json.NewDecoder(res.Body).Decode(&st))
		for _, l := range st.Lanes {
			if l.Lane == "transactional.email" && l.Completed == 1 {
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond)
}
