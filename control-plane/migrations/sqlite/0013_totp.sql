-- A second factor: TOTP (RFC 6238). The secret is set when enrolment starts and counts only once
-- confirmed with a code (`totp_enabled_at`); `totp_last_step` is the time step of the last code
-- accepted, so a code opens at most one sign-in.
ALTER TABLE users ADD COLUMN totp_secret TEXT;
ALTER TABLE users ADD COLUMN totp_enabled_at TEXT;
ALTER TABLE users ADD COLUMN totp_last_step INTEGER;

-- Recovery codes, shown once at enrolment; stored as SHA-256, each used at most once.
CREATE TABLE totp_recovery_codes (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);
