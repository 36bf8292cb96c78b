package server_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// unavailable skips a test whose service is missing on a developer's
// machine, and fails it in CI, where .ci/run must provide the service.
func unavailable(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " in CI: .ci/run must provide it")
	}
	t.Skip(why)
}
