-- Roles and groups live in the session record, not in the access token (a token stays
-- small whatever the user belongs to). Live sessions take their user's current access.
ALTER TABLE sessions ADD COLUMN roles TEXT NOT NULL DEFAULT '[]';
ALTER TABLE sessions ADD COLUMN groups_ TEXT NOT NULL DEFAULT '[]';
UPDATE sessions SET
    roles = COALESCE((SELECT roles FROM users WHERE users.id = sessions.user_id), '[]'),
    groups_ = COALESCE((SELECT groups_ FROM users WHERE users.id = sessions.user_id), '[]');
