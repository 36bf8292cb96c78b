// Package postgres runs herald's stores on PostgreSQL (github.com/jackc/pgx/v5)
// so that workers on many hosts share one queue, one set of counters and
// one journal. It has the
// stores of the retry queue, the capping counters and the tracking journal.
//
//	pool, _ := pgxpool.New(ctx, "postgres://...")
//	db, _ := postgres.New(pool, &postgres.Config{Schema: "herald"})
//	if err := db.Migrate(ctx); err != nil { ... }
//	q, _ := retry.New(db.Retry(), nil)
//
// The schema is created and upgraded by versioned migrations shipped in
// the package (Migrate), in a schema the host names.
package postgres

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/capping"
	"github.com/heraldhq/herald/retry"
	"github.com/heraldhq/herald/tracking"
)

// Config configures a DB.
type Config struct {
	// Schema holds herald's tables. Default "herald".
	Schema string
}

// DB is herald's view of a PostgreSQL database.
type DB struct {
	pool   *pgxpool.Pool
	schema string
	retry  *retryStore
	caps   *cappingStore
	track  *trackingStore
}

var schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// New returns a DB on the host's pool. Call Migrate before use.
func New(pool *pgxpool.Pool, cfg *Config) (*DB, error) {
	if pool == nil {
		return nil, errors.New("postgres: New: missing pool (pgxpool.New)")
	}
	var c Config
	if cfg != nil {
		c = *cfg
	}
	c.Schema = cmp.Or(c.Schema, "herald")
	if !schemaRE.MatchString(c.Schema) {
		return nil, fmt.Errorf("postgres: Config.Schema %q must be a lower-case identifier", c.Schema)
	}
	db := &DB{pool: pool, schema: c.Schema}
	db.retry = &retryStore{db: db, t: c.Schema + ".retry_jobs", keys: c.Schema + ".retry_keys", lanes: c.Schema + ".retry_lanes"}
	db.caps = &cappingStore{db: db, slots: c.Schema + ".capping_slots", res: c.Schema + ".capping_reservations"}
	db.track = &trackingStore{db: db, p: c.Schema + ".tracking_"}
	return db, nil
}

// Retry returns the retry queue's store.
func (db *DB) Retry() retry.Store { return db.retry }

// Capping returns the capping counters' store.
func (db *DB) Capping() capping.Store { return db.caps }

// Tracking returns the tracking journal's store.
func (db *DB) Tracking() tracking.Store { return db.track }

// migrationFiles are the migrations, one .sql file each, applied in name
// order; {{schema}} in them is replaced by the schema.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

var migrations = func() []string {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		panic(err)
	}
	slices.Sort(names)
	out := make([]string, len(names))
	for i, n := range names {
		b, err := migrationFiles.ReadFile(n)
		if err != nil {
			panic(err)
		}
		out[i] = string(b)
	}
	return out
}()

// Migrations returns the schema's migrations as .sql files (0001_retry.sql,
// ...), for a DBA who applies them with the team's own tools: replace
// {{schema}} with the schema's name, apply them in name order, and record
// the highest applied version in {{schema}}.migrations (version integer
// PRIMARY KEY, applied_at timestamptz), which Migrate reads.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err)
	}
	return sub
}

// MigrationScript renders every migration for schema as one script, with
// the bookkeeping Migrate does, so `psql -f` applies it as Migrate would.
func MigrationScript(schema string) (string, error) {
	if !schemaRE.MatchString(schema) {
		return "", fmt.Errorf("postgres: schema %q is not a plain identifier", schema)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "BEGIN;\nCREATE SCHEMA IF NOT EXISTS %s;\nCREATE TABLE IF NOT EXISTS %s.migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());\n", schema, schema)
	for i, m := range migrations {
		b.WriteString(strings.ReplaceAll(m, "{{schema}}", schema))
		fmt.Fprintf(&b, "INSERT INTO %s.migrations (version) VALUES (%d) ON CONFLICT DO NOTHING;\n", schema, i+1)
	}
	b.WriteString("COMMIT;\n")
	return b.String(), nil
}

// Migrate creates the schema or upgrades it to this version of herald. It
// takes a transaction-scoped advisory lock, so hosts starting together
// migrate once.
func (db *DB) Migrate(ctx context.Context) error {
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "herald-migrate:"+db.schema); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+db.schema+`;
		CREATE TABLE IF NOT EXISTS `+db.schema+`.migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	var version int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+db.schema+`.migrations`).Scan(&version); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("postgres: schema %s is at version %d, newer than this herald knows (%d): upgrade herald", db.schema, version, len(migrations))
	}
	for v := version; v < len(migrations); v++ {
		if _, err := tx.Exec(ctx, strings.ReplaceAll(migrations[v], "{{schema}}", db.schema)); err != nil {
			return fmt.Errorf("postgres: migration %d: %w", v+1, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+db.schema+`.migrations (version) VALUES ($1)`, v+1); err != nil {
			return fmt.Errorf("postgres: migration %d: %w", v+1, err)
		}
	}
	return tx.Commit(ctx)
}
