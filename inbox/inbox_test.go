package inbox_test

import (
	"testing"

	"github.com/heraldhq/herald/inbox"
	"github.com/heraldhq/herald/inbox/inboxtest"
	"github.com/heraldhq/herald/retry"
)

func TestMemoryStoreConformance(t *testing.T) {
	t.Parallel()
	inboxtest.Run(t, func(t *testing.T) (inbox.Store, retry.Store) { return inbox.NewMemoryStore(), retry.NewMemoryStore() })
}
