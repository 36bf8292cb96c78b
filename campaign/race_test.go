//go:build race

package campaign_test

// raceEnabled shrinks the crash test's audience under the race detector
// (ten times slower); .ci/run runs the full 200,000 without it.
const raceEnabled = true
