-- herald 1: the retry queue.
-- {{schema}} is the schema the host names (postgres.Config.Schema); see postgres.Migrations.
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
