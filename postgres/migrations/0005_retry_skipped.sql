-- herald 5: a job completed by retry.Skip says so in a column of its own, not in its last error's text.
-- {{schema}} is the schema the host names (postgres.Config.Schema); see postgres.Migrations.
ALTER TABLE {{schema}}.retry_jobs ADD COLUMN skipped boolean NOT NULL DEFAULT false;
