-- Bootstrap sessions: what `POST /v1/bootstrap/sessions` and `POST /v1/entry/{short_id}/auth` create
-- after a right password. The row's id is the `task_id` the seed's bootstrap routes take; it follows
-- the host task that brings the host up (none when the host was already running).

CREATE TABLE bootstrap_sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    host_id         TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    -- the host task the session waits for; no foreign key, like tasks themselves
    task_id         TEXT,
    -- SHA-256 (hex) of the session secret the handoff asks for; long and random, so a fast hash
    secret_hash     TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    -- when the single-use SSH secret was handed out (once per session)
    handoff_at      TEXT
);
CREATE INDEX bootstrap_sessions_expiry ON bootstrap_sessions (expires_at);
