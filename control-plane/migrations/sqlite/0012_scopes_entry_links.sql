-- API token scopes: `read` tokens may only read (GET); `full` ones act as their owner. Tokens already
-- issued become `full`, so they keep doing what they did.
ALTER TABLE api_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'full' CHECK (scope IN ('read', 'full'));

-- Entry short links: the id in `/entry/{id}` is kept apart from the host's short id (which also names
-- its containers and its SSH login), so a link can be rotated without touching the host. Existing
-- hosts keep the link they have. A link can be switched off or given an expiry.
ALTER TABLE hosts ADD COLUMN entry_id TEXT;
UPDATE hosts SET entry_id = short_id;
CREATE UNIQUE INDEX hosts_entry_id ON hosts (entry_id);
ALTER TABLE hosts ADD COLUMN entry_disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN entry_expires_at TEXT;
