package postgres_test

import (
	"context"
	"io/fs"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heraldhq/herald/postgres"
	"github.com/heraldhq/herald/retry"
)

// The migrations ship as .sql files a DBA can read and apply with the
// team's own tools, and the one-script form carries Migrate's
// bookkeeping.
func TestMigrationsAreSQLFiles(t *testing.T) {
	t.Parallel()
	names, err := fs.Glob(postgres.Migrations(), "*.sql")
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(names), 4)
	require.Equal(t, "0001_retry.sql", names[0])
	for _, n := range names {
		b, err := fs.ReadFile(postgres.Migrations(), n)
		require.NoError(t, err)
		require.Contains(t, string(b), "{{schema}}.", n)
	}
	script, err := postgres.MigrationScript("notify")
	require.NoError(t, err)
	require.NotContains(t, script, "{{schema}}")
	require.Contains(t, script, "CREATE TABLE notify.retry_jobs")
	require.Contains(t, script, "INSERT INTO notify.migrations (version) VALUES (4)")
	require.Contains(t, script, "skipped boolean")
	require.True(t, strings.HasPrefix(script, "BEGIN;"))
	_, err = postgres.MigrationScript("x; DROP TABLE y")
	require.Error(t, err)
}

// A schema a DBA made from MigrationScript is one Migrate accepts as
// current, and the stores work on it.
func TestMigrationScriptMatchesMigrate(t *testing.T) {
	t.Parallel()
	p := pool(t)
	ctx := context.Background()
	schema := "t_script_" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	script, err := postgres.MigrationScript(schema)
	require.NoError(t, err)
	_, err = p.Exec(ctx, script)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = p.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
	db, err := postgres.New(p, &postgres.Config{Schema: schema})
	require.NoError(t, err)
	require.NoError(t, db.Migrate(ctx), "nothing left to migrate")
	var n int
	require.NoError(t, p.QueryRow(ctx, "SELECT count(*) FROM "+schema+".migrations").Scan(&n))
	files, err := fs.Glob(postgres.Migrations(), "*.sql")
	require.NoError(t, err)
	require.Equal(t, len(files), n, "one version recorded per migration file")
	res, err := db.Retry().Enqueue(ctx, []*retry.Job{{Kind: "k", Lane: "default", State: retry.StateAvailable, MaxAttempts: 1,
		IdempotencyKey: "a", Digest: "d", RunAt: time.Now(), CreatedAt: time.Now(), UpdatedAt: time.Now()}}, time.Now().Add(-time.Hour))
	require.NoError(t, err)
	require.Len(t, res, 1)
}
