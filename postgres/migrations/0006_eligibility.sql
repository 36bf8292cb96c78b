-- herald 6: eligibility at the send path: the suppression list (recipients as keyed digests) and users' preferences.
-- {{schema}} is the schema the host names (postgres.Config.Schema); see postgres.Migrations.
CREATE TABLE {{schema}}.eligibility_suppressions (
	key     text        PRIMARY KEY,
	channel text        NOT NULL,
	masked  text        NOT NULL,
	reason  text        NOT NULL,
	source  text        NOT NULL,
	at      timestamptz NOT NULL
);
CREATE TABLE {{schema}}.eligibility_preferences (
	user_id   text        NOT NULL,
	topic     text        NOT NULL,
	opted_out boolean     NOT NULL,
	at        timestamptz NOT NULL,
	PRIMARY KEY (user_id, topic)
);
