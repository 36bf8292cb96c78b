package embedded

import (
	"database/sql"
	"fmt"
)

// SetApplicationIDForTest rewrites the file's application_id, as another
// program's SQLite file would have.
func SetApplicationIDForTest(path string, id int) error {
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec(fmt.Sprintf("PRAGMA application_id=%d", id))
	return err
}

// SetSynchronousOffForTest opens later DBs with synchronous=OFF: commits
// are not synced, which the power-loss loop must catch.
func SetSynchronousOffForTest() { synchronous = "OFF" }

// SetClaimLogRotateForTest makes the claim log rotate past n bytes.
func SetClaimLogRotateForTest(n int64) { claimLogRotate = n }

// QueueWindowForTest makes Open keep n waiting jobs per lane and state in
// memory (the rest stay in the file until a refill reads them).
func QueueWindowForTest(c *Config, n int) *Config {
	c.queueWindow = n
	return c
}

// QueueMemoryForTest returns how many waiting jobs of lane the store holds
// in memory, and how many it counts in the file beyond them.
func (db *DB) QueueMemoryForTest(lane string) (inMemory, inFile int) {
	s := db.retry
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.lanes[lane]
	if l == nil {
		return 0, 0
	}
	return l.ready.len() + l.sched.len(), l.rw.off + l.sw.off
}

// CreateAtVersionForTest makes a store file with only the first n
// migrations applied, as an older herald left it.
func CreateAtVersionForTest(path string, n int) error {
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		return err
	}
	defer db.Close()
	for v := range n {
		if _, err := db.Exec(migration(v)); err != nil {
			return fmt.Errorf("migration %d: %w", v+1, err)
		}
	}
	return nil
}
