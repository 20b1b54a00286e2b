//! Leases: work one control-plane process at a time must do, held by renewing before `until` and
//! taken over by another once it has passed (its holder stopped or died).

use super::UtcTime;

/// Takes the lease `name` for `holder` until `until`, or renews it if `holder` has it; `true`
/// when `holder` holds it afterwards. One statement, so two replicas can never both get it.
pub async fn hold(
    db: impl crate::db::Db<'_>,
    name: &str,
    holder: &str,
    now: UtcTime,
    until: UtcTime,
) -> Result<bool, sqlx::Error> {
    let held: Option<String> = crate::db::on_db!(
        db,
        "INSERT INTO leases (name, holder, until) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
         WHERE leases.holder = excluded.holder OR leases.until < ?4 \
         RETURNING holder",
        |exec, sql| sqlx::query_scalar(sql)
            .bind(name)
            .bind(holder)
            .bind(until)
            .bind(now)
            .fetch_optional(exec)
            .await
    )?;
    Ok(held.is_some())
}

/// Gives the lease up at once (a clean stop), so another process need not wait for it to run out.
pub async fn release(db: impl crate::db::Db<'_>, name: &str, holder: &str) -> Result<(), sqlx::Error> {
    crate::db::on_db!(
        db,
        "DELETE FROM leases WHERE name = ? AND holder = ?",
        |exec, sql| sqlx::query(sql)
            .bind(name)
            .bind(holder)
            .execute(exec)
            .await
            .map(crate::db::Done::from)
    )?;
    Ok(())
}
