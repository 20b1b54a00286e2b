-- Browser sessions of the dashboard: the cookie carries a random secret, the row only its SHA-256,
-- so a copy of the database opens no session. Signing out deletes the row; a password change or a
-- disabled account ends the session through token_version, as for session tokens.
CREATE TABLE web_sessions (
    id              TEXT PRIMARY KEY,
    secret_hash     TEXT NOT NULL UNIQUE,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_version   INTEGER NOT NULL,
    -- sent back by the page in X-CSRF-Token on every change; not secret from the page itself
    csrf_token      TEXT NOT NULL,
    ip              TEXT,
    created_at      TEXT NOT NULL,
    last_seen_at    TEXT NOT NULL,
    expires_at      TEXT NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);
