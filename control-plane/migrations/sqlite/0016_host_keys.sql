-- The host sshd's key (OpenSSH public key line) as its agent made and reported it: the gateways
-- refuse a host that presents another one. Set at the first report; changed only by a create or
-- rebuild task's result.
ALTER TABLE hosts ADD COLUMN ssh_host_key TEXT;
