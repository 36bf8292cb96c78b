package postgres_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/postgres"
	"github.com/heraldhq/herald/retry"
)

// Open the stores in a schema of the host's database and migrate it
// (Migrate takes an advisory lock: hosts starting together migrate once).
// A DBA who applies migrations with the team's own tools takes the .sql
// files from postgres.Migrations() or one script from MigrationScript.
// (Not run by go test: it needs a server.)
func ExampleNew() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()
	db, err := postgres.New(pool, &postgres.Config{Schema: "herald"})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := db.Migrate(ctx); err != nil {
		fmt.Println(err)
		return
	}
	q, _ := retry.New(db.Retry(), nil)
	_, _ = q.Enqueue(ctx, retry.EnqueueParams{Kind: "welcome", IdempotencyKey: "signup-42"})
}

// The migrations as a script for psql.
func ExampleMigrationScript() {
	script, _ := postgres.MigrationScript("herald")
	lines := strings.SplitN(script, "\n", 3)
	fmt.Println(lines[0])
	fmt.Println(lines[1])
	// Output:
	// BEGIN;
	// CREATE SCHEMA IF NOT EXISTS herald;
}
