package server_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/server"
)

// The sample config in deploy/ is well-formed: with its files and
// environment in place, check-config finds nothing wrong.
func TestTheSampleConfigChecks(t *testing.T) {
	b, err := os.ReadFile("../deploy/herald.yaml")
	require.NoError(t, err)
	dir := t.TempDir()
	sample := strings.ReplaceAll(string(b), "/etc/herald/", dir+"/")
	for _, f := range regexp.MustCompile(dir+`/[\w.-]+`).FindAllString(sample, -1) {
		require.NoError(t, os.WriteFile(f, []byte(strings.Repeat("x", 40)), 0o600))
	}
	for _, env := range regexp.MustCompile(`env:(\w+)`).FindAllStringSubmatch(sample, -1) {
		t.Setenv(env[1], "set")
	}
	sample = strings.ReplaceAll(sample, "/var/lib/herald/", filepath.Join(dir, "data")+"/")
	_, err = server.ParseConfig([]byte(sample))
	require.NoError(t, err)
}
