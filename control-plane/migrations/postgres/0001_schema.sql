-- The whole schema on PostgreSQL, equal to what the SQLite migrations up to 0016 build. Times are
-- fixed-width RFC 3339 text in UTC, as on SQLite, so that text order is time order and one format
-- crosses copy-database unchanged; counters are BIGINT (Rust i64); flags are BOOLEAN.

CREATE TABLE users (
    id                  TEXT PRIMARY KEY,
    username            TEXT NOT NULL,
    -- lower-cased username: uniqueness is case-insensitive on every backend
    username_key        TEXT NOT NULL UNIQUE,
    password_hash       TEXT NOT NULL,
    role                TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    status              TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    expires_at          TEXT,
    -- bumped whenever every outstanding session of the user must end
    token_version       BIGINT NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    expiry_handled_for  TEXT,
    totp_secret         TEXT,
    totp_enabled_at     TEXT,
    totp_last_step      BIGINT
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
    revoked_at      TEXT,
    token_version   BIGINT NOT NULL DEFAULT 0,
    scope           TEXT NOT NULL DEFAULT 'full' CHECK (scope IN ('read', 'full'))
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
    memory_mb           BIGINT NOT NULL,
    cpu_millis          BIGINT NOT NULL,
    pids_limit          BIGINT NOT NULL,
    ssh_password_hash   TEXT NOT NULL,
    node_id             TEXT,
    container_id        TEXT,
    last_error          TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    password_crypt      TEXT NOT NULL DEFAULT '',
    vnc_secret          TEXT NOT NULL DEFAULT '',
    address             TEXT,
    egress_health       TEXT,
    entry_id            TEXT,
    entry_disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    entry_expires_at    TEXT,
    ssh_host_key        TEXT
);
CREATE INDEX hosts_user ON hosts (user_id);
CREATE UNIQUE INDEX hosts_entry_id ON hosts (entry_id);

CREATE TABLE bindings (
    id              TEXT PRIMARY KEY,
    host_id         TEXT NOT NULL UNIQUE REFERENCES hosts (id) ON DELETE CASCADE,
    egress_ip_id    TEXT NOT NULL REFERENCES egress_ips (id) ON DELETE RESTRICT,
    created_at      TEXT NOT NULL,
    wg_private_key  TEXT,
    wg_peer_address TEXT
);
CREATE INDEX bindings_egress ON bindings (egress_ip_id);

CREATE TABLE tasks (
    id                  TEXT PRIMARY KEY,
    -- no foreign key: the history of a host outlives its row
    host_id             TEXT NOT NULL,
    kind                TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    progress            BIGINT NOT NULL DEFAULT 0,
    stage               TEXT NOT NULL DEFAULT '',
    params              TEXT NOT NULL DEFAULT '{}',
    attempts            BIGINT NOT NULL DEFAULT 0,
    max_attempts        BIGINT NOT NULL,
    error               TEXT,
    requested_by        TEXT,
    cancel_requested    BOOLEAN NOT NULL DEFAULT FALSE,
    not_before          TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    started_at          TEXT,
    finished_at         TEXT,
    lease               TEXT,
    lease_until         TEXT,
    node_id             TEXT
);
CREATE INDEX tasks_host ON tasks (host_id, created_at);
CREATE INDEX tasks_status ON tasks (status);

CREATE TABLE events (
    seq             BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
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

CREATE TABLE nodes (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    agent_version   TEXT NOT NULL,
    reach_address   TEXT,
    registered_at   TEXT NOT NULL,
    last_seen_at    TEXT NOT NULL,
    credential_hash TEXT,
    revoked_at      TEXT,
    hosts_subnet    TEXT
);
CREATE UNIQUE INDEX nodes_credential ON nodes (credential_hash);

CREATE TABLE ssh_handoffs (
    id              TEXT PRIMARY KEY,
    host_id         TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- SHA-256 (hex) of the secret: the secret is long and random, so a fast hash is enough
    secret_hash     TEXT NOT NULL UNIQUE,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    used_at         TEXT,
    purpose         TEXT NOT NULL DEFAULT 'entry',
    client_ip       TEXT,
    opened_by       TEXT
);
CREATE INDEX ssh_handoffs_host ON ssh_handoffs (host_id);

CREATE TABLE gateways (
    name            TEXT PRIMARY KEY,
    client_key      TEXT NOT NULL,
    registered_at   TEXT NOT NULL,
    last_seen_at    TEXT NOT NULL,
    host_key        TEXT,
    credential_hash TEXT
);
CREATE UNIQUE INDEX gateways_credential ON gateways (credential_hash);

CREATE TABLE bootstrap_sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    host_id         TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    -- the host task the session waits for; no foreign key, like tasks themselves
    task_id         TEXT,
    secret_hash     TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    handoff_at      TEXT
);
CREATE INDEX bootstrap_sessions_expiry ON bootstrap_sessions (expires_at);

CREATE TABLE egress_tests (
    id              TEXT PRIMARY KEY,
    egress_ip_id    TEXT NOT NULL REFERENCES egress_ips (id) ON DELETE CASCADE,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'expired')),
    node_id         TEXT,
    checks          TEXT,
    created_at      TEXT NOT NULL,
    deadline        TEXT NOT NULL,
    finished_at     TEXT
);
CREATE INDEX egress_tests_queue ON egress_tests (status, created_at);

CREATE TABLE web_sessions (
    id              TEXT PRIMARY KEY,
    secret_hash     TEXT NOT NULL UNIQUE,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_version   BIGINT NOT NULL,
    csrf_token      TEXT NOT NULL,
    ip              TEXT,
    created_at      TEXT NOT NULL,
    last_seen_at    TEXT NOT NULL,
    expires_at      TEXT NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);

CREATE TABLE enrolment_keys (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('agent', 'gateway')),
    name            TEXT NOT NULL,
    secret_hash     TEXT NOT NULL UNIQUE,
    prefix          TEXT NOT NULL,
    usage_limit     BIGINT NOT NULL CHECK (usage_limit >= 1),
    uses            BIGINT NOT NULL DEFAULT 0,
    expires_at      TEXT NOT NULL,
    revoked_at      TEXT,
    created_at      TEXT NOT NULL,
    last_used_at    TEXT
);

CREATE TABLE totp_recovery_codes (
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash       TEXT NOT NULL,
    used_at         TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);

-- SQLite's instr(), which the searches use, under its own name.
CREATE FUNCTION instr(haystack TEXT, needle TEXT) RETURNS INTEGER
    LANGUAGE SQL IMMUTABLE STRICT PARALLEL SAFE
    AS 'SELECT strpos(haystack, needle)';
