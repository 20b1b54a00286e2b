-- Node agents, task leases, and what an agent needs to build a host.

CREATE TABLE nodes (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    agent_version   TEXT NOT NULL,
    reach_address   TEXT,
    registered_at   TEXT NOT NULL,
    last_seen_at    TEXT NOT NULL
);

-- The lease names one attempt of a task on one node; reports carrying another lease are ignored.
ALTER TABLE tasks ADD COLUMN lease TEXT;
ALTER TABLE tasks ADD COLUMN lease_until TEXT;
ALTER TABLE tasks ADD COLUMN node_id TEXT;

-- crypt(3) SHA-512 hash of the host's SSH password, applied inside the container.
ALTER TABLE hosts ADD COLUMN password_crypt TEXT NOT NULL DEFAULT '';
ALTER TABLE hosts ADD COLUMN vnc_secret TEXT NOT NULL DEFAULT '';
-- Where the gateways reach the host's sshd and VNC (reported by the agent).
ALTER TABLE hosts ADD COLUMN address TEXT;

-- The expiry this account's hosts were last stopped for; a new expiry triggers the scanner again.
ALTER TABLE users ADD COLUMN expiry_handled_for TEXT;
