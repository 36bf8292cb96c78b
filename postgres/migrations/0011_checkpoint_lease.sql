-- herald 11: a fan-out's runner holds a lease on it (one process runs a campaign at a time).
-- {{schema}} is the schema the host names (postgres.Config.Schema); see postgres.Migrations.
ALTER TABLE {{schema}}.checkpoints
	ADD COLUMN owner       text        NOT NULL DEFAULT '',
	ADD COLUMN lease_until timestamptz NOT NULL DEFAULT '-infinity';
