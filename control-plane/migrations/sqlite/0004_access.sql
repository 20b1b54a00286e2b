-- Short-lived, single-use SSH secrets handed out by the bootstrap and entry flows, and the keys of
-- the SSH gateways that log in to hosts.

CREATE TABLE ssh_handoffs (
    id              TEXT PRIMARY KEY,
    host_id         TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- SHA-256 (hex) of the secret: the secret is long and random, so a fast hash is enough
    secret_hash     TEXT NOT NULL UNIQUE,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    used_at         TEXT
);
CREATE INDEX ssh_handoffs_host ON ssh_handoffs (host_id);

-- One row per SSH gateway: its name and the public key it presents to hosts' sshd.
CREATE TABLE gateways (
    name            TEXT PRIMARY KEY,
    client_key      TEXT NOT NULL,
    registered_at   TEXT NOT NULL,
    last_seen_at    TEXT NOT NULL
);
