package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/server"
)

// The suppression list and preferences through the API, on every store
// kind: bad input is refused naming the field, recipients never appear in
// a reply or the log, and removing a suppression takes the admin scope.
func TestSuppressionsAndPreferencesAPI(t *testing.T) {
	const admin, sender = "hk_eligibility_admin_0123456789", "hk_eligibility_sender_012345678"
	hash := func(k string) string { s := sha256.Sum256([]byte(k)); return hex.EncodeToString(s[:]) }
	for _, tc := range []struct{ name, store, env string }{
		{"embedded", "", ""},
		{"postgres", "kind: postgres, url: 'env:HERALD_POSTGRES_URL', schema: heraldd_eligibility_test, ", "HERALD_POSTGRES_URL"},
		{"redis", "kind: redis, addr: '" + os.Getenv("HERALD_REDIS_ADDR") + "', ", "HERALD_REDIS_ADDR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" && os.Getenv(tc.env) == "" {
				unavailable(t, tc.env+" is not set")
			}
			dir := t.TempDir()
			cfg, err := server.ParseConfig([]byte(`
store: {` + tc.store + `path: ` + filepath.Join(dir, "herald.db") + `}
api_keys:
  - {name: admin, sha256: ` + hash(admin) + `, scopes: [admin]}
  - {name: sender, sha256: ` + hash(sender) + `, scopes: [send, read]}
smtp: [{host: 127.0.0.1, port: 2525, tls: none}]
`))
			require.NoError(t, err)
			var logs bytes.Buffer
			s, err := server.New(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
			require.NoError(t, err)
			t.Cleanup(func() { _ = s.Close(context.Background()) })
			var replies strings.Builder
			do := func(method, path, key, body string) (int, map[string]any) {
				t.Helper()
				req := httptest.NewRequest(method, path, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+key)
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				s.Handler().ServeHTTP(rec, req)
				replies.WriteString(rec.Body.String())
				var v map[string]any
				_ = json.Unmarshal(rec.Body.Bytes(), &v)
				return rec.Code, v
			}
			// A unique address per run: PostgreSQL's and Redis's lists outlive the test.
			addr := "Rosa." + strings.ReplaceAll(t.Name(), "/", "-") + "@Example.com"
			body := `{"channel": "email", "recipient": "` + addr + `", "reason": "asked by phone"}`
			for _, bad := range []struct{ body, field string }{
				{`{"channel": "fax", "recipient": "x"}`, "channel"},
				{`{"channel": "email", "recipient": " "}`, "recipient"},
				{`{"channel": "email", "recipient": "a@b.c", "reason": "` + strings.Repeat("r", 201) + `"}`, "reason"},
			} {
				code, v := do("POST", "/v1/suppressions", sender, bad.body)
				require.Equal(t, 400, code, "%s: %v", bad.body, v)
				require.Equal(t, bad.field, v["field"])
			}
			code, v := do("POST", "/v1/suppressions", sender, body)
			require.Equal(t, 200, code, "%v", v)
			require.Equal(t, "host", v["source"])
			// The same address in another case is the same recipient.
			code, v = do("POST", "/v1/suppressions/check", sender, strings.Replace(body, addr, strings.ToLower(addr), 1))
			require.Equal(t, 200, code, "%v", v)
			require.Equal(t, true, v["suppressed"])
			require.Equal(t, "asked by phone", v["reason"])
			code, _ = do("POST", "/v1/suppressions/remove", sender, body)
			require.Equal(t, 403, code)
			code, v = do("POST", "/v1/suppressions/remove", admin, body)
			require.Equal(t, 200, code, "%v", v)
			require.Equal(t, "asked by phone", v["reason"], "the reply says what was removed")
			_, v = do("POST", "/v1/suppressions/check", sender, body)
			require.Equal(t, false, v["suppressed"])

			for _, bad := range []struct{ body, field string }{
				{`{"topic": "category:", "opted_out": true}`, "topic"},
				{`{"topic": "channel:fax", "opted_out": true}`, "topic"},
				{`{"topic": "promotions", "opted_out": true}`, "topic"},
				{`{"topic": "category:promotions"}`, "opted_out"},
			} {
				code, v := do("PUT", "/v1/users/rosa/preferences", sender, bad.body)
				require.Equal(t, 400, code, "%s: %v", bad.body, v)
				require.Equal(t, bad.field, v["field"])
			}
			code, v = do("PUT", "/v1/users/rosa/preferences", sender, `{"topic": "category:promotions", "opted_out": true}`)
			require.Equal(t, 200, code, "%v", v)
			require.NotContains(t, strings.ToLower(replies.String()+logs.String()), strings.ToLower(addr), "a recipient in a reply or the log")
		})
	}
}

// heraldd passes the store's secrets themselves to the drivers, not their
// redacted rendering: a Redis that requires a password accepts it.
func TestRedisPasswordReachesRedis(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		unavailable(t, "redis-server is not installed")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	const password = "s3cret-redis-password"
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--requirepass", password, "--save", "", "--appendonly", "no", "--dir", dir)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pw"), []byte(password), 0o600))
	cfg, err := server.ParseConfig([]byte(`
store: {kind: redis, addr: '` + addr + `', password: 'file:` + filepath.Join(dir, "pw") + `', path: ` + filepath.Join(dir, "journal.db") + `}
api_keys: [{name: admin, sha256: ` + strings.Repeat("ab", 32) + `, scopes: [admin]}]
smtp: [{host: 127.0.0.1, port: 2525, tls: none}]
`))
	require.NoError(t, err)
	s, err := server.New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.NoError(t, s.Close(context.Background()))
}
