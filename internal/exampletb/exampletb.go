// Package exampletb gives Example functions the testing.TB that the test
// fakes (pushtest, emailtest, smstest, retrytest) take, since examples get
// no *testing.T. Only examples import it.
package exampletb

import (
	"fmt"
	"testing"
)

// TB is a testing.TB for examples: Cleanup functions run at Done, Fatalf
// panics.
type TB struct {
	testing.TB
	cleanups []func()
}

// Helper implements testing.TB.
func (*TB) Helper() {}

// Cleanup implements testing.TB.
func (tb *TB) Cleanup(f func()) { tb.cleanups = append(tb.cleanups, f) }

// Fatalf implements testing.TB.
func (*TB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

// Done runs the cleanups, last first.
func (tb *TB) Done() {
	for i := len(tb.cleanups) - 1; i >= 0; i-- {
		tb.cleanups[i]()
	}
}
