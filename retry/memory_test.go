package retry_test

import (
	"testing"

	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/retry/storetest"
)

func TestMemoryStoreConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) retry.Store {
		s := retry.NewMemoryStore()
		t.Cleanup(func() { _ = s.Close() })
		return s
	}, nil)
}
