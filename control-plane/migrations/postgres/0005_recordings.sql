-- Session recordings (asciicast v2): the header's facts here, the events in gzip chunks the
-- gateway uploads as the session goes. Overrides of SESSION_RECORDING per user and per host:
-- NULL follows the next level ('on' / 'off' decide).
CREATE TABLE recordings (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    host_id         TEXT NOT NULL,
    connection_id   TEXT NOT NULL,
    gateway         TEXT NOT NULL,
    via             TEXT NOT NULL CHECK (via IN ('ssh', 'web')),
    opened_by       TEXT,
    width           BIGINT NOT NULL,
    height          BIGINT NOT NULL,
    term            TEXT NOT NULL,
    started_at      TEXT NOT NULL,
    ended_at        TEXT,
    duration_ms     BIGINT,
    error           TEXT,
    chunks          BIGINT NOT NULL DEFAULT 0,
    size_bytes      BIGINT NOT NULL DEFAULT 0,
    stored_bytes    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX recordings_started ON recordings (started_at);
CREATE INDEX recordings_user ON recordings (user_id, started_at);
CREATE INDEX recordings_host ON recordings (host_id, started_at);

CREATE TABLE recording_chunks (
    recording_id    TEXT NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    seq             BIGINT NOT NULL,
    size_bytes      BIGINT NOT NULL,
    data            BYTEA NOT NULL,
    PRIMARY KEY (recording_id, seq)
);

ALTER TABLE users ADD COLUMN session_recording TEXT CHECK (session_recording IN ('on', 'off'));
ALTER TABLE hosts ADD COLUMN session_recording TEXT CHECK (session_recording IN ('on', 'off'));
