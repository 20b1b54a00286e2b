-- Leases on work that one control-plane process at a time must do (the periodic jobs), taken over
-- when their holder stops renewing them; and the state of the sign-in limiter shared by replicas.
CREATE TABLE leases (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    until   TEXT NOT NULL
);

-- Sign-in failures and known clients, for a limiter that every replica shares (PostgreSQL); a
-- single process (SQLite) keeps them in memory and leaves these empty.
CREATE TABLE login_failures (
    id      TEXT PRIMARY KEY,
    -- 'ip', 'pair' (account and address) or 'account'
    kind    TEXT NOT NULL,
    key     TEXT NOT NULL,
    at      TEXT NOT NULL
);
CREATE INDEX login_failures_key ON login_failures (kind, key, at);
CREATE TABLE login_clients (
    account TEXT NOT NULL,
    client  TEXT NOT NULL,
    at      TEXT NOT NULL,
    PRIMARY KEY (account, client)
);
