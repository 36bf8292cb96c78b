package embedded_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(powerChildEnv) != "" {
		os.Exit(powerChild()) // re-executed by the power-loss tests
	}
	if os.Getenv(crashChildEnv) != "" {
		// Re-executed by TestCrash: run only the child's work.
		os.Exit(crashChild())
	}
	goleak.VerifyTestMain(m)
}
