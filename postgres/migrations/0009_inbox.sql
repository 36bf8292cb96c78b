-- herald 9: the Inbox: items by user, newest first.
-- {{schema}} is the schema the host names (postgres.Config.Schema); see postgres.Migrations.
CREATE TABLE {{schema}}.inbox_items (
	user_id     text        NOT NULL,
	id          text        NOT NULL,
	created     timestamptz NOT NULL,
	expires     timestamptz,
	read_at     timestamptz,
	seen_at     timestamptz,
	archived_at timestamptz,
	content     jsonb       NOT NULL,
	PRIMARY KEY (user_id, id)
);
CREATE INDEX inbox_items_feed ON {{schema}}.inbox_items (user_id, created DESC, id DESC);
