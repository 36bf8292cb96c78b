package server_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/server"
)

// check-config names every bad field of a config, each on its own line,
// and never echoes a secret.
func TestCheckConfigNamesEveryBadField(t *testing.T) {
	t.Parallel()
	bad := `
listen: nowhere
store: {kind: mongo}
api_keys:
  - {name: a, sha256: abc, scopes: [send, root]}
  - {name: a, sha256: 0000000000000000000000000000000000000000000000000000000000000000, scopes: []}
apns:
  - {topic: "", key_file: /does/not/exist, key_id: short, team_id: TEAMTEST01, environment: staging}
  - {app: "x@y", topic: com.example, certificate_file: /nope.pem}
fcm:
  - {app: one, service_account_file: /nope.json}
webpush:
  - {vapid_public_key: "", vapid_private_key: "literal-secret-value", subscriber: ops}
smtp:
  - {host: smtp.example.com, port: 70000, tls: sometimes, username: u, password: env:HERALD_TEST_UNSET_VAR}
  - {host: smtp.example.com, tls: none}
twilio:
  - {account_sid: XX, auth_token: env:HERALD_TEST_UNSET_TOKEN}
capping:
  rules:
    - {name: daily, kind: everything, limit: 0, window: fortnight}
  quiet_hours: {start: "25:00", end: "08:00"}
lanes:
  transactional: {concurrency: -1, rate: -5}
tracking:
  sinks: [{kind: kafka}, {kind: webhook, url: "http://example.com/hook"}]
inbox: {token_key: env:HERALD_TEST_UNSET_VAR, origins: ["http://evil.example"]}
log: {level: loud}
`
	_, err := server.ParseConfig([]byte(bad))
	var ce *server.ConfigError
	require.ErrorAs(t, err, &ce)
	fields := map[string]bool{}
	for _, p := range ce.Problems {
		fields[p.Field] = true
	}
	for _, f := range []string{"listen", "store.kind", "api_keys[0].sha256", "api_keys[0].scopes[1]", "api_keys[1].name",
		"api_keys[1].scopes", "apns[0].topic", "apns[0].key_file", "apns[0].key_id", "apns[0].environment", "apns[1].app",
		"apns[1].certificate_file", "fcm[0].service_account_file", "webpush[0].vapid_public_key", "webpush[0].vapid_private_key",
		"webpush[0].subscriber", "smtp[0].port", "smtp[0].tls", "smtp[0].password", "smtp[1].tls", "smtp[1].app",
		"twilio[0].account_sid", "twilio[0].auth_token", "capping.rules[0].kind", "capping.rules[0].limit",
		"capping.rules[0].window", "capping.quiet_hours.start", "lanes.transactional.concurrency", "lanes.transactional.rate",
		"tracking.sinks[0].kind", "tracking.sinks[1].url", "tracking.sinks[1].key", "inbox.token_key", "inbox.origins[0]", "log.level"} {
		require.True(t, fields[f], "%s not named in:\n%v", f, err)
	}
	require.NotContains(t, err.Error(), "literal-secret-value", "a secret written in the file is refused, not echoed")

	// Unknown fields are named with their line.
	_, err = server.ParseConfig([]byte("listen: 127.0.0.1:1\nlisten_address: x\nstore: {knd: embedded}\n"))
	require.ErrorAs(t, err, &ce)
	require.Contains(t, err.Error(), "listen_address")
	require.Contains(t, err.Error(), "knd")

	// Through the binary: exit 2, each problem on its own line.
	if testing.Short() {
		return
	}
	bin, err := heraldd()
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(path, []byte(bad), 0o600))
	out, err := exec.Command(bin, "check-config", "-config", path).CombinedOutput()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 2, ee.ExitCode())
	require.GreaterOrEqual(t, strings.Count(string(out), "\n  "), 35, "%s", out)
}

// A split deployment on the embedded store is refused where it would
// lose something: no shared eligibility file, a cap that both instances'
// files would each count part of, an Inbox split in two.
func TestConfigSplitRoles(t *testing.T) {
	t.Parallel()
	const keys = "api_keys: [{name: a, sha256: 0000000000000000000000000000000000000000000000000000000000000000, scopes: [send]}]\n" +
		"smtp: [{host: 127.0.0.1, port: 2525, tls: none}]\n"
	problems := func(yaml string) map[string]string {
		t.Helper()
		_, err := server.ParseConfig([]byte(keys + yaml))
		if err == nil {
			return nil
		}
		var ce *server.ConfigError
		require.ErrorAs(t, err, &ce)
		m := map[string]string{}
		for _, p := range ce.Problems {
			m[p.Field] = p.Problem
		}
		return m
	}
	require.Contains(t, problems("role: billing\n"), "role")
	p := problems("role: transactional\ncapping: {rules: [{name: all, kind: global, limit: 5, window: day, include_transactional: true}]}\n" +
		"inbox: {token_key: env:HOME}\n")
	require.Contains(t, p["store.eligibility_path"], "share")
	require.Contains(t, p, "capping.rules[0].include_transactional")
	require.Contains(t, p, "inbox.token_key")
	require.Nil(t, problems("role: marketing\nstore: {eligibility_path: eligibility.db}\n"))
	require.Nil(t, problems("role: transactional\nstore: {kind: redis, addr: '127.0.0.1:6379'}\ncapping: {rules: [{name: all, kind: global, limit: 5, window: day, include_transactional: true}]}\n"), "Redis is one store both share")
	require.Contains(t, problems("store: {kind: redis, addr: '127.0.0.1:6379', eligibility_path: e.db}\n"), "store.eligibility_path")
	require.Contains(t, problems("store: {path: h.db, eligibility_path: h.db}\n"), "store.eligibility_path")
	c, err := server.ParseConfig([]byte(keys))
	require.NoError(t, err)
	require.Equal(t, server.RoleAll, c.Role)
}
