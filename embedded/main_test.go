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
	if os.Getenv(eligibilityChildEnv) != "" {
		os.Exit(eligibilityChild()) // one of the processes sharing an eligibility file
	}
	goleak.VerifyTestMain(m)
}
