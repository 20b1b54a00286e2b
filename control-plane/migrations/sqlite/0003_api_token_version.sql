-- An API token lives only as long as the password it was created under: it records the account's
-- token_version, which a password change bumps.
ALTER TABLE api_tokens ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;
