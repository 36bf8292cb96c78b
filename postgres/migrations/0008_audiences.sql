-- herald 8: stored audiences: members, and the upload IDs already applied.
-- {{schema}} is the schema the host names (postgres.Config.Schema); see postgres.Migrations.
CREATE TABLE {{schema}}.audience_members (
	audience text  NOT NULL,
	user_id  text  NOT NULL,
	data     jsonb NOT NULL,
	PRIMARY KEY (audience, user_id)
);
CREATE TABLE {{schema}}.audience_uploads (
	audience  text NOT NULL,
	upload_id text NOT NULL,
	PRIMARY KEY (audience, upload_id)
);
