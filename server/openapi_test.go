package server_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/heraldhq/herald/server"
)

// The OpenAPI document lists every route heraldd serves, and heraldd
// serves every route in it.
func TestOpenAPIMatchesTheRoutes(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("openapi.yaml")
	require.NoError(t, err)
	var doc struct {
		OpenAPI string                               `yaml:"openapi"`
		Paths   map[string]map[string]map[string]any `yaml:"paths"`
	}
	require.NoError(t, yaml.Unmarshal(b, &doc))
	require.True(t, strings.HasPrefix(doc.OpenAPI, "3."))
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	s := newServer(t)
	served := server.Routes(s)
	for _, r := range served {
		require.Contains(t, documented, r, "served but not documented")
	}
	// The rest are the Inbox client API's, served by inbox.Handler under
	// /v1/inbox/: each must answer (401 without a user token), not 404.
	h := s.Handler()
	for _, r := range documented {
		if slices.Contains(served, r) {
			continue
		}
		require.True(t, strings.HasPrefix(r, "GET /v1/inbox/") || strings.HasPrefix(r, "POST /v1/inbox/"), "documented but not served: %s", r)
		method, path, _ := strings.Cut(r, " ")
		path = strings.NewReplacer("{id}", "m1", "{reaction}", "clicked").Replace(path)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		require.Equal(t, http.StatusUnauthorized, rec.Code, "%s: documented but not served", r)
	}
	// And a route nobody documented is not served.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/inbox/nonesuch", nil))
	require.NotEqual(t, http.StatusUnauthorized, rec.Code)
}

// newServer builds a server on a temporary embedded store with one SMTP
// sender (never reached) and the Inbox on.
func newServer(t *testing.T) *server.Server {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "key"), []byte(strings.Repeat("k", 40)), 0o600))
	cfg, err := server.ParseConfig([]byte(`
store: {path: ` + filepath.Join(dir, "herald.db") + `}
api_keys: [{name: admin, sha256: ` + strings.Repeat("ab", 32) + `, scopes: [admin]}]
smtp: [{host: 127.0.0.1, port: 2525, tls: none}]
inbox: {token_key: file:` + filepath.Join(dir, "key") + `}
`))
	require.NoError(t, err)
	s, err := server.New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}
