-- herald 4: a digest kept with each idempotency key (a reused key with other content is a conflict, not a duplicate).
-- {{schema}} is the schema the host names (postgres.Config.Schema); see postgres.Migrations.
ALTER TABLE {{schema}}.retry_keys ADD COLUMN digest text NOT NULL DEFAULT '';
