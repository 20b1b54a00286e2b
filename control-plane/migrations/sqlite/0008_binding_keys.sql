-- Per-host WireGuard identity: a binding to a WireGuard egress IP gets its own key pair (the host's
-- peer at the provider) and, optionally, its own tunnel address; NULL for proxy egress IPs, and for
-- bindings made before this (they use the egress IP's key pair and address).
ALTER TABLE bindings ADD COLUMN wg_private_key TEXT;
ALTER TABLE bindings ADD COLUMN wg_peer_address TEXT;
