package retry

import (
	"cmp"
	"slices"
	"time"
)

// This file holds the helpers only store writers need: the reference
// semantics of a claim's order (SortClaimed), of an outcome (Outcome.Apply),
// of lane statistics (BuildStats), and of a key conflict (Conflicts). A
// host that uses the queue never calls them; a new Store uses them to
// agree with the conformance suite (retry/storetest). They stay in
// package retry because the in-memory store, retry.NewMemoryStore, uses
// them too, and a subpackage would import retry for the types while retry
// imported it for the helpers (see ARCHITECTURE.md, "Layering").

// SortClaimed puts jobs in claim order: Priority descending, then RunAt,
// then ID. Stores whose claim query returns rows in any order use it.
func SortClaimed(jobs []*Job) {
	slices.SortFunc(jobs, func(a, b *Job) int {
		if a.Priority != b.Priority {
			return cmp.Compare(b.Priority, a.Priority)
		}
		if c := a.RunAt.Compare(b.RunAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
}

// Apply changes j as outcome o says; it is the reference for what an
// Outcome means, for stores to use. It does not check the lease.
func (o *Outcome) Apply(j *Job) {
	j.State = o.State
	j.UpdatedAt = o.At
	j.Skipped = o.Skip && o.State == StateCompleted
	if o.Error != "" {
		j.LastError = o.Error
	}
	if o.Uncount && j.Attempt > 0 {
		j.Attempt--
	}
	switch o.State {
	case StateScheduled:
		j.RunAt = o.RunAt
	case StateAvailable:
		j.RunAt = o.At
	case StateCompleted, StateDead, StateExpired:
		j.FinishedAt = o.At
	}
	j.LeaseUntil = time.Time{}
}

// StatsRow is one aggregate row a store feeds to BuildStats: n jobs of a
// lane in a state, the oldest of which has RunAt oldestRunAt.
type StatsRow struct {
	Lane        string
	State       State
	OldestRunAt time.Time
	Count       int
}

// BuildStats assembles LaneStats from aggregate rows, so every store
// counts the same way. paused lists the paused lanes. Rows for scheduled
// jobs must be split by whether RunAt is after now.
func BuildStats(now time.Time, rows []StatsRow, paused []string) []LaneStats {
	acc := &statsAcc{now: now, byLane: map[string]*LaneStats{}}
	for _, p := range paused {
		acc.lane(p).Paused = true
	}
	for _, r := range rows {
		acc.add(r.Lane, r.State, r.OldestRunAt, r.Count)
	}
	return acc.result()
}

// Conflicts reports whether a job with digest d collides with a key
// recorded with digest recorded: both set and different. Stores use it;
// a job or key without a digest never conflicts (keys recorded before
// digests existed stay plain duplicates).
func Conflicts(recorded, d string) bool { return recorded != "" && d != "" && recorded != d }
