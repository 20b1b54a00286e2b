//! Single-use SSH secrets: the bootstrap and entry flows, and the dashboard's terminal, create one
//! for a host; the SSH gateway redeems it once as the password of a login to that host, before it
//! expires.

use sha2::{Digest as _, Sha256};

use super::UtcTime;

/// SHA-256 of a secret, hex: what is stored and looked up.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Who a secret is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// The bootstrap and entry scripts: handed to the user, typed into `ssh`.
    Entry,
    /// The dashboard's terminal: never leaves the control plane, which logs in with it on behalf
    /// of a browser.
    WebTerminal {
        /// The browser's address.
        client_ip: Option<String>,
        /// The account that opened the terminal (the host's owner, or an operator).
        opened_by: String,
    },
    /// `POST /v1/{admin,user}/hosts/{id}/ssh-session` (the `cloud-cli-proxy ssh` command): handed
    /// to a signed-in account, typed into `ssh` on its machine.
    Cli {
        /// The account that asked for it (the host's owner, or an operator).
        opened_by: String,
    },
}

/// Stores the hash of `secret` for a login to `host_id` until `expires_at`.
pub async fn create(
    db: impl crate::db::Db<'_>,
    host_id: &str,
    user_id: &str,
    secret: &str,
    purpose: &Purpose,
    expires_at: UtcTime,
    now: UtcTime,
) -> Result<String, sqlx::Error> {
    let id = super::new_id();
    let (kind, client_ip, opened_by) = match purpose {
        Purpose::Entry => ("entry", None, None),
        Purpose::WebTerminal { client_ip, opened_by } => {
            ("web_terminal", client_ip.as_deref(), Some(opened_by.as_str()))
        }
        Purpose::Cli { opened_by } => ("cli", None, Some(opened_by.as_str())),
    };
    crate::db::on_db!(
        db,
        "INSERT INTO ssh_handoffs (id, host_id, user_id, secret_hash, created_at, expires_at, purpose, \
         client_ip, opened_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        |exec, sql| sqlx::query(sql)
            .bind(&id)
            .bind(host_id)
            .bind(user_id)
            .bind(hash(secret))
            .bind(now)
            .bind(expires_at)
            .bind(kind)
            .bind(client_ip)
            .bind(opened_by)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(id)
}

/// Marks the secret used if it is a live, unused secret for `host_id`, and answers what it was
/// for. One statement, so two gateways racing with the same secret cannot both succeed.
pub async fn redeem(
    db: impl crate::db::Db<'_>,
    host_id: &str,
    secret: &str,
    now: UtcTime,
) -> Result<Option<Purpose>, sqlx::Error> {
    let row: Option<(String, Option<String>, Option<String>)> = crate::db::on_db!(
        db,
        "UPDATE ssh_handoffs SET used_at = ? \
         WHERE host_id = ? AND secret_hash = ? AND used_at IS NULL AND expires_at > ? \
         RETURNING purpose, client_ip, opened_by",
        |exec, sql| sqlx::query_as(sql)
            .bind(now)
            .bind(host_id)
            .bind(hash(secret))
            .bind(now)
            .fetch_optional(exec)
            .await
    )?;
    Ok(row.map(|(kind, client_ip, opened_by)| match kind.as_str() {
        "web_terminal" => Purpose::WebTerminal {
            client_ip,
            opened_by: opened_by.unwrap_or_default(),
        },
        "cli" => Purpose::Cli {
            opened_by: opened_by.unwrap_or_default(),
        },
        _ => Purpose::Entry,
    }))
}

/// Deletes secrets that expired before `before` (used or not); they can never be redeemed again.
pub async fn purge_expired(db: impl crate::db::Db<'_>, before: UtcTime) -> Result<u64, sqlx::Error> {
    let done = crate::db::on_db!(
        db,
        "DELETE FROM ssh_handoffs WHERE expires_at < ?",
        |exec, sql| sqlx::query(sql)
            .bind(before)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected())
}
