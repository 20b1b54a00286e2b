//! An account's second factor: the TOTP secret, the last time step accepted, and recovery codes.

use super::UtcTime;
use crate::secrets::Sealed;

/// What is stored of an account's second factor.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Enrolment {
    /// Base32, as in the otpauth URI; sealed.
    pub secret: Sealed,
    pub enabled_at: Option<UtcTime>,
    pub last_step: Option<i64>,
}

pub async fn get(db: impl crate::db::Db<'_>, user_id: &str) -> Result<Option<Enrolment>, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT totp_secret AS secret, totp_enabled_at AS enabled_at, totp_last_step AS last_step \
         FROM users WHERE id = ? AND totp_secret IS NOT NULL",
        |exec, sql| sqlx::query_as(sql).bind(user_id).fetch_optional(exec).await
    )
}

/// Starts (or restarts) an enrolment with a new secret; `false` when one is already confirmed.
pub async fn start(
    db: impl crate::db::Db<'_>,
    user_id: &str,
    secret: &Sealed,
    now: UtcTime,
) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(
        db,
        "UPDATE users SET totp_secret = ?, totp_last_step = NULL, updated_at = ? \
         WHERE id = ? AND totp_enabled_at IS NULL",
        |exec, sql| sqlx::query(sql)
            .bind(secret)
            .bind(now)
            .bind(user_id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected() == 1)
}

/// Confirms a started enrolment with the step of the code that proved it.
pub async fn confirm(
    db: impl crate::db::Db<'_>,
    user_id: &str,
    step: i64,
    now: UtcTime,
) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(
        db,
        "UPDATE users SET totp_enabled_at = ?, totp_last_step = ?, updated_at = ? \
         WHERE id = ? AND totp_secret IS NOT NULL AND totp_enabled_at IS NULL",
        |exec, sql| sqlx::query(sql)
            .bind(now)
            .bind(step)
            .bind(now)
            .bind(user_id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected() == 1)
}

/// Takes `step` as used: `false` when it (or a later one) was already taken, so a code opens at
/// most one sign-in even when two race.
pub async fn take_step(db: impl crate::db::Db<'_>, user_id: &str, step: i64) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(
        db,
        "UPDATE users SET totp_last_step = ? \
         WHERE id = ? AND totp_enabled_at IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < ?)",
        |exec, sql| sqlx::query(sql)
            .bind(step)
            .bind(user_id)
            .bind(step)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected() == 1)
}

/// Replaces the account's recovery codes with these (their hashes).
pub async fn set_recovery_codes(
    db: &mut crate::db::Connection,
    user_id: &str,
    hashes: &[String],
    now: UtcTime,
) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        &mut *db,
        "DELETE FROM totp_recovery_codes WHERE user_id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(user_id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    for hash in hashes {
        crate::db::on_db!(
            &mut *db,
            "INSERT INTO totp_recovery_codes (user_id, code_hash, created_at) VALUES (?, ?, ?)",
            |exec, sql| sqlx::query(sql)
                .bind(user_id)
                .bind(hash)
                .bind(now)
                .execute(exec)
                .await
                .map(crate::db::Done::from)
        )?;
    }
    Ok(())
}

/// Uses a recovery code once: `true` when it was the account's and unused.
pub async fn use_recovery_code(
    db: impl crate::db::Db<'_>,
    user_id: &str,
    hash: &str,
    now: UtcTime,
) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(
        db,
        "UPDATE totp_recovery_codes SET used_at = ? WHERE user_id = ? AND code_hash = ? AND used_at IS NULL",
        |exec, sql| sqlx::query(sql)
            .bind(now)
            .bind(user_id)
            .bind(hash)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected() == 1)
}

pub async fn recovery_codes_left(db: impl crate::db::Db<'_>, user_id: &str) -> Result<i64, sqlx::Error> {
    crate::db::on_db!(
        db,
        "SELECT COUNT(*) FROM totp_recovery_codes WHERE user_id = ? AND used_at IS NULL",
        |exec, sql| sqlx::query_scalar(sql).bind(user_id).fetch_one(exec).await
    )
}

/// Removes the second factor and its recovery codes.
pub async fn remove(
    db: &mut crate::db::Connection,
    user_id: &str,
    now: UtcTime,
) -> Result<bool, sqlx::Error> {
    let done = crate::db::on_db!(
        &mut *db,
        "UPDATE users SET totp_secret = NULL, totp_enabled_at = NULL, totp_last_step = NULL, updated_at = ? \
         WHERE id = ? AND totp_secret IS NOT NULL",
        |exec, sql| sqlx::query(sql)
            .bind(now)
            .bind(user_id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    crate::db::on_db!(
        &mut *db,
        "DELETE FROM totp_recovery_codes WHERE user_id = ?",
        |exec, sql| sqlx::query(sql)
            .bind(user_id)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(done.rows_affected() == 1)
}
