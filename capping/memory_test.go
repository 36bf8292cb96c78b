package capping_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/capping/cappingtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemoryStoreConformance(t *testing.T) {
	t.Parallel()
	cappingtest.Run(t, func(t *testing.T) capping.Store {
		s := capping.NewMemoryStore()
		t.Cleanup(func() { _ = s.Close() })
		return s
	}, nil)
}
