package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/server"
)

// The admin API says what the sampled file holds: the whole store, or
// the tracking journal beside Redis.
func TestAdminStoreSaysWhatTheFileHolds(t *testing.T) {
	const key = "hk_load_test_key_0123456789abcdef"
	sum := sha256.Sum256([]byte(key))
	for _, tc := range []struct{ name, store, holds string }{
		{"embedded", "", "store"},
		{"redis", "kind: redis, addr: " + os.Getenv("HERALD_REDIS_ADDR") + ", ", "journal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "redis" && os.Getenv("HERALD_REDIS_ADDR") == "" {
				unavailable(t, "HERALD_REDIS_ADDR is not set")
			}
			dir := t.TempDir()
			cfg, err := server.ParseConfig([]byte(`
store: {` + tc.store + `path: ` + filepath.Join(dir, "herald.db") + `}
api_keys: [{name: admin, sha256: ` + hex.EncodeToString(sum[:]) + `, scopes: [admin]}]
smtp: [{host: 127.0.0.1, port: 2525, tls: none}]
`))
			require.NoError(t, err)
			s, err := server.New(context.Background(), cfg, slog.New(slog.DiscardHandler))
			require.NoError(t, err)
			t.Cleanup(func() { _ = s.Close(context.Background()) })
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", "/v1/admin/store", nil)
			req.Header.Set("Authorization", "Bearer "+key)
			s.Handler().ServeHTTP(rec, req)
			require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
			var v struct {
				Load      server.StoreLoad
				Saturated bool
			}
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &v))
			require.Equal(t, tc.holds, v.Load.Holds)
			require.Greater(t, v.Load.Window, 0.0)
			require.False(t, v.Saturated)
		})
	}
}
