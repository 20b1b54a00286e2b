-- Portable on purpose: TEXT ids (UUIDs), TEXT timestamps in UTC, JSON kept as TEXT, no SQLite-only
-- functions, so a PostgreSQL backend can run the same shape.

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    username        TEXT NOT NULL,
    -- lower-cased username: uniqueness is case-insensitive on every backend
    username_key    TEXT NOT NULL UNIQUE,
    password_hash   TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    status          TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    expires_at      TEXT,
    -- bumped whenever every outstanding session of the user must end
    token_version   INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    token_hash      TEXT NOT NULL UNIQUE,
    prefix          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    last_used_at    TEXT,
    revoked_at      TEXT
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE TABLE ssh_keys (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    key_type        TEXT NOT NULL,
    public_key      TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    UNIQUE (user_id, fingerprint)
);

CREATE TABLE egress_ips (
    id                  TEXT PRIMARY KEY,
    label               TEXT NOT NULL UNIQUE,
    -- the declared exit address; never overwritten by what a test observes
    ip_address          TEXT NOT NULL,
    tunnel_type         TEXT NOT NULL CHECK (tunnel_type IN ('wireguard', 'proxy')),
    provider            TEXT NOT NULL,
    wg_endpoint         TEXT,
    wg_public_key       TEXT,
    wg_preshared_key    TEXT,
    wg_allowed_ips      TEXT,
    wg_dns_server       TEXT,
    wg_peer_address     TEXT,
    wg_private_key      TEXT,
    proxy_config        TEXT,
    dns_server          TEXT,
    observed_ip         TEXT,
    last_test_at        TEXT,
    last_test_result    TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

CREATE TABLE hosts (
    id                  TEXT PRIMARY KEY,
    short_id            TEXT NOT NULL UNIQUE,
    -- NULL once the owner is deleted and the host is on its way out
    user_id             TEXT REFERENCES users (id) ON DELETE SET NULL,
    name                TEXT NOT NULL,
    status              TEXT NOT NULL,
    memory_mb           INTEGER NOT NULL,
    cpu_millis          INTEGER NOT NULL,
    pids_limit          INTEGER NOT NULL,
    ssh_password_hash   TEXT NOT NULL,
    node_id             TEXT,
    container_id        TEXT,
    last_error          TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX hosts_user ON hosts (user_id);

CREATE TABLE bindings (
    id              TEXT PRIMARY KEY,
    host_id         TEXT NOT NULL UNIQUE REFERENCES hosts (id) ON DELETE CASCADE,
    egress_ip_id    TEXT NOT NULL REFERENCES egress_ips (id) ON DELETE RESTRICT,
    created_at      TEXT NOT NULL
);
CREATE INDEX bindings_egress ON bindings (egress_ip_id);

CREATE TABLE tasks (
    id                  TEXT PRIMARY KEY,
    -- no foreign key: the history of a host outlives its row
    host_id             TEXT NOT NULL,
    kind                TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    progress            INTEGER NOT NULL DEFAULT 0,
    stage               TEXT NOT NULL DEFAULT '',
    params              TEXT NOT NULL DEFAULT '{}',
    attempts            INTEGER NOT NULL DEFAULT 0,
    max_attempts        INTEGER NOT NULL,
    error               TEXT,
    requested_by        TEXT,
    cancel_requested    INTEGER NOT NULL DEFAULT 0,
    not_before          TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    started_at          TEXT,
    finished_at         TEXT
);
CREATE INDEX tasks_host ON tasks (host_id, created_at);
CREATE INDEX tasks_status ON tasks (status);

CREATE TABLE events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    created_at      TEXT NOT NULL,
    type            TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    actor_id        TEXT,
    actor_name      TEXT,
    user_id         TEXT,
    host_id         TEXT,
    ip              TEXT,
    details         TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_time ON events (created_at);
CREATE INDEX events_user ON events (user_id);
CREATE INDEX events_host ON events (host_id);
CREATE INDEX events_type ON events (type);
