//! The object shapes of docs/api.md, as key lists for `assert_keys`.

pub const PAGE: &[&str] = &["data", "page", "page_size", "total_records", "total_pages"];
pub const USER: &[&str] = &[
    "id",
    "username",
    "role",
    "status",
    "expires_at",
    "expired",
    "created_at",
    "updated_at",
    "totp_enabled",
];
pub const SSH_KEY: &[&str] = &[
    "id",
    "user_id",
    "name",
    "key_type",
    "public_key",
    "fingerprint",
    "created_at",
];
pub const HOST: &[&str] = &[
    "id",
    "short_id",
    "user_id",
    "username",
    "name",
    "status",
    "memory_mb",
    "cpu_millis",
    "pids_limit",
    "egress_ip_id",
    "node_id",
    "last_error",
    "access",
    "created_at",
    "updated_at",
];
pub const HOST_ACCESS: &[&str] = &["entry_url", "entry_command", "ssh_command"];
pub const HOST_STATUSES: &[&str] = &["pending", "creating", "running", "stopped", "error", "deleting"];
pub const TASK: &[&str] = &[
    "id",
    "host_id",
    "kind",
    "status",
    "progress",
    "stage",
    "attempts",
    "max_attempts",
    "error",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
];
pub const BINDING: &[&str] = &["id", "host_id", "egress_ip_id", "created_at"];
pub const EVENT: &[&str] = &[
    "id",
    "created_at",
    "type",
    "outcome",
    "actor_id",
    "actor_name",
    "user_id",
    "host_id",
    "ip",
    "details",
];
pub const EGRESS: &[&str] = &[
    "id",
    "label",
    "ip_address",
    "tunnel_type",
    "provider",
    "observed_ip",
    "last_test",
];
/// The value every secret shows on reads.
pub const MASK: &str = "********";
