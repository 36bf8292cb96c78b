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
	"errors"
	"fmt"
	"regexp"
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

// migrations are applied in order; {{schema}} is replaced by the schema.
var migrations = []string{
	`
CREATE TABLE {{schema}}.retry_jobs (
	id           bigserial   PRIMARY KEY,
	kind         text        NOT NULL,
	lane         text        NOT NULL,
	state        smallint    NOT NULL,
	priority     integer     NOT NULL,
	run_at       timestamptz NOT NULL,
	expires_at   timestamptz,
	max_attempts integer     NOT NULL,
	attempt      integer     NOT NULL DEFAULT 0,
	lease_token  bigint      NOT NULL DEFAULT 0,
	lease_until  timestamptz,
	idem_key     text        NOT NULL DEFAULT '',
	last_error   text        NOT NULL DEFAULT '',
	created_at   timestamptz NOT NULL,
	updated_at   timestamptz NOT NULL,
	finished_at  timestamptz,
	payload      bytea       NOT NULL
);
CREATE INDEX retry_jobs_ready    ON {{schema}}.retry_jobs (lane, priority DESC, run_at, id) WHERE state = 1;
CREATE INDEX retry_jobs_sched    ON {{schema}}.retry_jobs (lane, run_at) WHERE state = 2;
CREATE INDEX retry_jobs_running  ON {{schema}}.retry_jobs (lease_until) WHERE state = 3;
CREATE INDEX retry_jobs_finished ON {{schema}}.retry_jobs (finished_at) WHERE state IN (4, 6);
CREATE TABLE {{schema}}.retry_keys (
	key        text        PRIMARY KEY,
	job_id     bigint      NOT NULL,
	created_at timestamptz NOT NULL
);
CREATE INDEX retry_keys_created ON {{schema}}.retry_keys (created_at);
CREATE TABLE {{schema}}.retry_lanes (
	lane   text    PRIMARY KEY,
	paused boolean NOT NULL
);
`,
	`
CREATE TABLE {{schema}}.capping_slots (
	key     text        NOT NULL,
	id      text        NOT NULL,
	at      timestamptz NOT NULL,
	pending boolean     NOT NULL,
	PRIMARY KEY (key, id)
);
CREATE INDEX capping_slots_at ON {{schema}}.capping_slots (key, at);
CREATE TABLE {{schema}}.capping_reservations (
	id          text        PRIMARY KEY,
	at          timestamptz NOT NULL,
	lease_until timestamptz NOT NULL,
	keys        text[]      NOT NULL
);
`,
	`
CREATE TABLE {{schema}}.tracking_events (
	seq        bigserial   PRIMARY KEY,
	id         text        NOT NULL UNIQUE,
	message_id text        NOT NULL,
	type       text        NOT NULL,
	at         timestamptz NOT NULL,
	campaign   text        NOT NULL,
	automation text        NOT NULL,
	data       jsonb       NOT NULL
);
CREATE INDEX tracking_events_campaign   ON {{schema}}.tracking_events (campaign, at) WHERE campaign <> '';
CREATE INDEX tracking_events_automation ON {{schema}}.tracking_events (automation, at) WHERE automation <> '';
CREATE INDEX tracking_events_message    ON {{schema}}.tracking_events (message_id, type);
CREATE TABLE {{schema}}.tracking_cursors (
	sink text   PRIMARY KEY,
	seq  bigint NOT NULL
);
CREATE TABLE {{schema}}.tracking_gaps (
	id       bigserial   PRIMARY KEY,
	from_at  timestamptz NOT NULL,
	to_at    timestamptz NOT NULL,
	reason   text        NOT NULL,
	declared boolean     NOT NULL
);
`,
	// 4: a digest kept with each idempotency key (a reused key with other
	// content is a conflict, not a duplicate).
	`
ALTER TABLE {{schema}}.retry_keys ADD COLUMN digest text NOT NULL DEFAULT '';
`,
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
