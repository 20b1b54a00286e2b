-- API tokens may have the `metrics` scope (only `GET /metrics`). SQLite cannot change a column's
-- CHECK constraint in place, so the table is made again with the same columns and indexes; no
-- other table refers to it.
CREATE TABLE api_tokens_new (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    token_hash      TEXT NOT NULL UNIQUE,
    prefix          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    last_used_at    TEXT,
    revoked_at      TEXT,
    token_version   INTEGER NOT NULL DEFAULT 0,
    scope           TEXT NOT NULL DEFAULT 'full' CHECK (scope IN ('read', 'full', 'metrics'))
);
INSERT INTO api_tokens_new (id, user_id, name, token_hash, prefix, created_at, expires_at, last_used_at,
                            revoked_at, token_version, scope)
    SELECT id, user_id, name, token_hash, prefix, created_at, expires_at, last_used_at, revoked_at,
           token_version, scope
    FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_new RENAME TO api_tokens;
CREATE INDEX api_tokens_user ON api_tokens (user_id);
