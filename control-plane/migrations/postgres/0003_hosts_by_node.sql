-- A heartbeat reads the hosts placed on its node: without this, every heartbeat read every host.
CREATE INDEX hosts_node ON hosts (node_id);
