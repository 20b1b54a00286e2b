-- The dashboard's terminal logs in through an SSH gateway with a single-use secret, like the entry
-- flow. The secret says what it is for, and for a terminal, which browser asked and who opened it,
-- so the gateway's login and session events name the browser's address and are marked as web.
ALTER TABLE ssh_handoffs ADD COLUMN purpose TEXT NOT NULL DEFAULT 'entry';
ALTER TABLE ssh_handoffs ADD COLUMN client_ip TEXT;
ALTER TABLE ssh_handoffs ADD COLUMN opened_by TEXT;

-- The key a gateway answers SSH clients with (OpenSSH line): the control plane's terminal accepts a
-- gateway only when it presents one of these.
ALTER TABLE gateways ADD COLUMN host_key TEXT;
