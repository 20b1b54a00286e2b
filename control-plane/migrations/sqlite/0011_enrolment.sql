-- Nodes and SSH gateways each hold a credential of their own, obtained once with an enrolment key
-- the operator made. Only hashes are stored.

CREATE TABLE enrolment_keys (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('agent', 'gateway')),
    name            TEXT NOT NULL,
    -- SHA-256 of the secret, hex.
    secret_hash     TEXT NOT NULL UNIQUE,
    -- The secret's first characters, so the operator can tell keys apart.
    prefix          TEXT NOT NULL,
    -- How many enrolments the key allows (1: single-use).
    usage_limit     INTEGER NOT NULL CHECK (usage_limit >= 1),
    uses            INTEGER NOT NULL DEFAULT 0,
    expires_at      TEXT NOT NULL,
    revoked_at      TEXT,
    created_at      TEXT NOT NULL,
    last_used_at    TEXT
);

-- NULL: not enrolled (a node from before enrolment keys, or revoked); its name may be enrolled again.
ALTER TABLE nodes ADD COLUMN credential_hash TEXT;
ALTER TABLE nodes ADD COLUMN revoked_at TEXT;
-- The node's hosts network, fixed at its first registration after enrolment; host addresses the
-- agent reports must lie inside it.
ALTER TABLE nodes ADD COLUMN hosts_subnet TEXT;
CREATE UNIQUE INDEX nodes_credential ON nodes (credential_hash);

-- A gateway without a credential (one from before enrolment keys) gets no key into hosts.
ALTER TABLE gateways ADD COLUMN credential_hash TEXT;
CREATE UNIQUE INDEX gateways_credential ON gateways (credential_hash);
