package inbox_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/secret"
)

// The client API: a user's token reads and marks that user's items only;
// forged or expired tokens get 401, another user's item 404, malformed
// bodies 400 naming the field, oversized ones 413; CORS only for the
// configured origins.
func TestClientAPI(t *testing.T) {
	t.Parallel()
	store := inbox.NewMemoryStore()
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, it := range []inbox.Item{
		{ID: "m1", User: "ada", Title: "one", Created: now.Add(-2 * time.Minute)},
		{ID: "m2", User: "ada", Title: "two", Created: now.Add(-time.Minute)},
		{ID: "b1", User: "bob", Title: "bob's", Created: now},
	} {
		_, err := store.Enqueuer(retry.NewMemoryStore(), []inbox.Item{it}).Enqueue(t.Context(), nil, now)
		require.NoError(t, err)
	}
	tokens := &inbox.Tokens{Key: secret.String("k-0123456789abcdef0123456789abcdef"), TTL: time.Hour}
	srv := httptest.NewServer(inbox.Handler(&inbox.HandlerConfig{Store: store, Tokens: tokens,
		AllowedOrigins: []string{"https://app.example.com"}, Now: func() time.Time { return now }}))
	defer srv.Close()
	ada := tokens.Sign("ada", now)
	do := func(method, path, token, ctype, body, origin string) (int, map[string]any, http.Header) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out, res.Header
	}
	code, feed, _ := do("GET", "/feed?limit=10", ada, "", "", "")
	require.Equal(t, http.StatusOK, code)
	items := feed["items"].([]any)
	require.Len(t, items, 2)
	require.Equal(t, "m2", items[0].(map[string]any)["id"], "newest first")
	code, counts, _ := do("GET", "/counts", ada, "", "", "")
	require.Equal(t, http.StatusOK, code)
	require.EqualValues(t, 2, counts["unread"])

	code, out, _ := do("POST", "/mark", ada, "application/json", `{"ids":["m1","m2"],"mark":"read"}`, "")
	require.Equal(t, http.StatusOK, code)
	require.EqualValues(t, 2, out["changed"])
	_, counts, _ = do("GET", "/counts", ada, "", "", "")
	require.EqualValues(t, 0, counts["unread"])

	forgedTok := strings.Replace(ada, ada[len(ada)-5:], "AAAAA", 1)
	expired := tokens.Sign("ada", now.Add(-2*time.Hour))
	bobAsAda := tokens.Sign("bob", now)
	for name, tc := range map[string]struct {
		method, path, token, ctype, body string
		want                             int
		field                            string
	}{
		"no token":              {"GET", "/feed", "", "", "", 401, ""},
		"forged token":          {"GET", "/feed", forgedTok, "", "", 401, ""},
		"expired token":         {"GET", "/counts", expired, "", "", 401, ""},
		"another user's item":   {"POST", "/mark", ada, "application/json", `{"ids":["b1"],"mark":"read"}`, 404, ""},
		"bob cannot mark ada's": {"POST", "/mark", bobAsAda, "application/json", `{"ids":["m1"],"mark":"archived"}`, 404, ""},
		"unknown mark":          {"POST", "/mark", ada, "application/json", `{"ids":["m1"],"mark":"deleted"}`, 400, "mark"},
		"no ids":                {"POST", "/mark", ada, "application/json", `{"ids":[],"mark":"read"}`, 400, "ids"},
		"unknown field":         {"POST", "/mark", ada, "application/json", `{"ids":["m1"],"mark":"read","x":1}`, 400, ""},
		"trailing data":         {"POST", "/mark", ada, "application/json", `{"ids":["m1"],"mark":"read"} {}`, 400, ""},
		"not JSON":              {"POST", "/mark", ada, "text/plain", `ids=m1`, 415, ""},
		"oversized":             {"POST", "/mark", ada, "application/json", `{"ids":["` + strings.Repeat("x", 70<<10) + `"],"mark":"read"}`, 413, ""},
		"bad limit":             {"GET", "/feed?limit=0", ada, "", "", 400, "limit"},
		"bad cursor":            {"GET", "/feed?after=zz", ada, "", "", 400, "after"},
	} {
		code, out, _ := do(tc.method, tc.path, tc.token, tc.ctype, tc.body, "")
		require.Equal(t, tc.want, code, name)
		if tc.field != "" {
			require.Equal(t, tc.field, out["field"], name)
		}
	}
	_, bob, _ := do("GET", "/counts", bobAsAda, "", "", "")
	require.EqualValues(t, 1, bob["unread"], "bob's item untouched by ada's and by the refused marks")

	code, _, h := do("OPTIONS", "/feed", "", "", "", "https://app.example.com")
	require.Equal(t, http.StatusNoContent, code)
	require.Equal(t, "https://app.example.com", h.Get("Access-Control-Allow-Origin"))
	code, _, h = do("OPTIONS", "/feed", "", "", "", "https://evil.example.com")
	require.Equal(t, http.StatusForbidden, code, "CORS refuses an unlisted origin")
	require.Empty(t, h.Get("Access-Control-Allow-Origin"))
	_, _, h = do("GET", "/feed", ada, "", "", "https://evil.example.com")
	require.Empty(t, h.Get("Access-Control-Allow-Origin"), "no CORS grant to an unlisted origin")
}
