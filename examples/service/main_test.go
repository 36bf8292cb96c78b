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
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
	ctx := context.Background()
	require.NoError(t, svc.d.Start(ctx))
	defer func() {
		_ = svc.d.Stop(ctx)
		_ = svc.outbox.Close(ctx)
	}()
	srv := httptest.NewServer(svc.routes())
	defer srv.Close()

	post := func(path, body string) (int, map[string]any) {
		res, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
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
		res, err := http.Get(srv.URL + "/v1/stats")
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
