-- herald 7: fan-out checkpoints (campaigns): the cursor moves in the same transaction as the jobs of its page.
-- {{schema}} is the schema the host names (postgres.Config.Schema); see postgres.Migrations.
CREATE TABLE {{schema}}.checkpoints (
	key        text        PRIMARY KEY,
	spec       bytea       NOT NULL,
	state      text        NOT NULL,
	cursor     text        NOT NULL,
	recipients bigint      NOT NULL,
	enqueued   bigint      NOT NULL,
	invalid    bigint      NOT NULL,
	done       boolean     NOT NULL,
	created    timestamptz NOT NULL
);
