-- herald 2: capping counters and reservations.
-- {{schema}} is the schema the host names (postgres.Config.Schema); see postgres.Migrations.
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
