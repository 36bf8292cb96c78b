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
