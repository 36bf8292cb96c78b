-- herald 3: the tracking journal.
-- {{schema}} is the schema the host names (postgres.Config.Schema); see postgres.Migrations.
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
