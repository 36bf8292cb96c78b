package checkpoint_test

import (
	"testing"

	"github.com/heraldhq/herald/checkpoint"
	"github.com/heraldhq/herald/checkpoint/checkpointtest"
	"github.com/heraldhq/herald/retry"
)

func TestMemoryStoreConformance(t *testing.T) {
	t.Parallel()
	checkpointtest.Run(t, func(t *testing.T) (checkpoint.Store, retry.Store) {
		q := retry.NewMemoryStore()
		return checkpoint.NewMemoryStore(q), q
	})
}
