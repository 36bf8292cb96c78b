package audience_test

import (
	"testing"

	"github.com/heraldhq/herald/audience"
	"github.com/heraldhq/herald/audience/audiencetest"
)

func TestMemoryStoreConformance(t *testing.T) {
	t.Parallel()
	audiencetest.Run(t, func(t *testing.T) audience.Store { return audience.NewMemoryStore() }, nil)
}
