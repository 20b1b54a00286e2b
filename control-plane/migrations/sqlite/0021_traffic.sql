-- Traffic accounting. Per host: its namespace's counters as last read (to fold a restart of them
-- into the totals) and the totals they added up to.
CREATE TABLE traffic_counters (
    host_id     TEXT PRIMARY KEY REFERENCES hosts (id) ON DELETE CASCADE,
    epoch       TEXT NOT NULL,
    rx_counter  BIGINT NOT NULL,
    tx_counter  BIGINT NOT NULL,
    rx_total    BIGINT NOT NULL,
    tx_total    BIGINT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- Bytes per host and UTC hour. Kept after the host is deleted (its owner's quotas and reports
-- still count them) until TRAFFIC_RETENTION_DAYS.
CREATE TABLE traffic_hours (
    host_id     TEXT NOT NULL,
    user_id     TEXT,
    hour        TEXT NOT NULL,
    rx_bytes    BIGINT NOT NULL,
    tx_bytes    BIGINT NOT NULL,
    PRIMARY KEY (host_id, hour)
);
CREATE INDEX traffic_hours_user ON traffic_hours (user_id, hour);
CREATE INDEX traffic_hours_hour ON traffic_hours (hour);

-- Rules on a host's or a user's traffic per period, and what they did in the current period.
CREATE TABLE traffic_quotas (
    id            TEXT PRIMARY KEY,
    host_id       TEXT REFERENCES hosts (id) ON DELETE CASCADE,
    user_id       TEXT REFERENCES users (id) ON DELETE CASCADE,
    limit_bytes   BIGINT NOT NULL CHECK (limit_bytes > 0),
    direction     TEXT NOT NULL CHECK (direction IN ('in', 'out', 'total')),
    period        TEXT NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly')),
    action        TEXT NOT NULL CHECK (action IN ('event', 'stop', 'cut_egress')),
    created_at    TEXT NOT NULL,
    -- The start of the period it fired in, and when; NULL: not fired in the current period.
    fired_period  TEXT,
    fired_at      TEXT,
    CHECK ((host_id IS NULL) <> (user_id IS NULL))
);
CREATE INDEX traffic_quotas_host ON traffic_quotas (host_id);
CREATE INDEX traffic_quotas_user ON traffic_quotas (user_id);

-- The quota that cut the host's egress; NULL: not cut. No foreign key (traffic_quotas refers to
-- hosts already): the quota check lifts a cut whose quota is gone.
ALTER TABLE hosts ADD COLUMN egress_cut_by TEXT;
