-- Egress tests: `POST /v1/admin/egress-ips/{id}/test` queues one, an agent claims it, runs the checks
-- through the real tunnel and reports them. Kept in the database (not in one replica's memory) so
-- any replica can hand it to any agent; rows are short-lived and purged once old.

CREATE TABLE egress_tests (
    id              TEXT PRIMARY KEY,
    egress_ip_id    TEXT NOT NULL REFERENCES egress_ips (id) ON DELETE CASCADE,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'expired')),
    node_id         TEXT,
    -- the checks as the agent reported them (JSON array)
    checks          TEXT,
    created_at      TEXT NOT NULL,
    -- no agent may claim or report it after this
    deadline        TEXT NOT NULL,
    finished_at     TEXT
);
CREATE INDEX egress_tests_queue ON egress_tests (status, created_at);
