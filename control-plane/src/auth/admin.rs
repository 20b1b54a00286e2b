//! The operator account, kept in line with `ADMIN_USERNAME` / `ADMIN_PASSWORD` at every start.

use crate::config::Secret;
use crate::db::events::{Actor, NewEvent};
use crate::db::users::Role;
use crate::db::{self, Pool, UtcTime};

use super::password;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("ADMIN_PASSWORD is not set and no operator account `{0}` exists yet: set it for the first start")]
    MissingPassword(String),
    #[error("ADMIN_PASSWORD must be 8 to 256 characters long")]
    WeakPassword,
    #[error("ADMIN_USERNAME `{0}` is not a valid username (3-50 letters, digits, `.`, `_`, `-`)")]
    BadUsername(String),
    #[error("ADMIN_USERNAME `{0}` already names a tenant account")]
    TenantName(String),
    #[error("cannot set up the operator account: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot set up the operator account: {0}")]
    Hash(#[from] password::HashError),
}

/// Creates the operator account on first start; later, a changed `ADMIN_PASSWORD` replaces the stored
/// password and ends the operator's sessions.
pub async fn ensure(db: &Pool, username: &str, password: Option<&Secret>) -> Result<(), AdminError> {
    if crate::api::users::validate_username(username).is_err() {
        return Err(AdminError::BadUsername(username.to_owned()));
    }
    if let Some(p) = password
        && crate::api::users::validate_password("ADMIN_PASSWORD", p.expose()).is_err()
    {
        return Err(AdminError::WeakPassword);
    }
    let now = UtcTime::now();
    let system = Actor {
        id: None,
        name: Some("system".into()),
        ip: None,
    };
    match db::users::get_by_username(db, username).await? {
        None => {
            let password = password.ok_or_else(|| AdminError::MissingPassword(username.to_owned()))?;
            let hash = password::hash_async(password.expose().to_owned()).await?;
            let mut tx = db.begin().await?;
            let user = db::users::insert(&mut *tx, username, &hash, Role::Admin, None, now).await?;
            db::events::record(
                &mut *tx,
                &system,
                NewEvent::success("admin.created").user(&user.id),
                now,
            )
            .await?;
            tx.commit().await?;
            tracing::info!(username, "operator account created");
        }
        Some(user) if user.role != Role::Admin => return Err(AdminError::TenantName(username.to_owned())),
        Some(user) => {
            let Some(password) = password else { return Ok(()) };
            let (given, stored) = (password.expose().to_owned(), user.password_hash.clone());
            if tokio::task::spawn_blocking(move || password::verify(&given, &stored))
                .await
                .unwrap_or(false)
            {
                return Ok(());
            }
            let hash = password::hash_async(password.expose().to_owned()).await?;
            let mut tx = db.begin().await?;
            db::users::set_password(&mut *tx, &user.id, &hash, now).await?;
            db::events::record(
                &mut *tx,
                &system,
                NewEvent::success("admin.password_reset").user(&user.id),
                now,
            )
            .await?;
            tx.commit().await?;
            tracing::info!(username, "operator password replaced from ADMIN_PASSWORD");
        }
    }
    Ok(())
}
