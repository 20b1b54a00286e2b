-- A bound host's egress as its agent last checked it from inside the host's namespace (JSON of
-- wire::EgressHealth); NULL when unbound, stopped or not checked yet.
ALTER TABLE hosts ADD COLUMN egress_health TEXT;
