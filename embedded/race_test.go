//go:build race

package embedded_test

// raceEnabled shrinks the power-loss loop under the race detector (its
// child processes run ten times slower); .ci/run runs the full loop
// without it.
const raceEnabled = true
