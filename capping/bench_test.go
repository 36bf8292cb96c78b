package capping_test

import (
	"testing"

	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/internal/bench"
)

// go test -run '^$' -bench ReserveCommit -benchtime 2s -count 5 ./capping/ ./embedded/
func BenchmarkReserveCommit(b *testing.B) {
	bench.ReserveCommit(b, func(b *testing.B) capping.Store { return capping.NewMemoryStore() })
}
