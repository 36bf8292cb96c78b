package secret_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/secret"
)

func TestNothingPrintsTheSecret(t *testing.T) {
	t.Parallel()
	const canary = "canary-7f3a9c-secret-value"
	v := secret.String(canary)
	type cfg struct {
		Key  secret.Value
		Name string
	}
	c := cfg{Key: v, Name: "apns"}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X"} {
		out = append(out, fmt.Sprintf(verb, v), fmt.Sprintf(verb, c), fmt.Sprintf(verb, &c))
	}
	j, err := json.Marshal(c)
	require.NoError(t, err)
	out = append(out, string(j))
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "cfg", c, "key", v)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "cfg", c, "key", v)
	out = append(out, buf.String())
	for _, s := range out {
		require.NotContains(t, s, canary)
		require.NotContains(t, s, canary[:16])
		require.NotContains(t, s, fmt.Sprintf("%x", canary)[:16])
	}
	require.Equal(t, canary, v.Reveal())
	require.False(t, v.IsZero())
	require.True(t, secret.Value{}.IsZero())
}
