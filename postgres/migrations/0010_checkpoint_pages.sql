-- herald 10: a fan-out's pages: an audience is staged a page per row as fast as it is read, and drained into the queue at the campaign's rate.
-- {{schema}} is the schema the host names (postgres.Config.Schema); see postgres.Migrations.
ALTER TABLE {{schema}}.checkpoints
	ADD COLUMN staged    bigint NOT NULL DEFAULT 0,
	ADD COLUMN drained   bigint NOT NULL DEFAULT 0,
	ADD COLUMN cancelled bigint NOT NULL DEFAULT 0,
	ADD COLUMN pages     bigint NOT NULL DEFAULT 0;
CREATE TABLE {{schema}}.checkpoint_pages (
	key   text   NOT NULL,
	seq   bigint NOT NULL,
	count bigint NOT NULL,
	off   bigint NOT NULL,
	data  bytea  NOT NULL,
	PRIMARY KEY (key, seq)
);
