//! Moves every secret column onto one key: plain text left by an older version is sealed, values
//! under a key being retired are opened and sealed again. Runs in one transaction, so a crash leaves
//! either every row moved or none.

use std::collections::HashMap;

use super::envelope::{OpenError, SecretsKey, key_id_of};

/// Every column holding a secret, as `(table, column)`; the AAD of a value is `table.column`.
pub const COLUMNS: &[(&str, &str)] = &[
    ("egress_ips", "wg_private_key"),
    ("egress_ips", "wg_preshared_key"),
    ("egress_ips", "proxy_config"),
    ("bindings", "wg_private_key"),
    ("hosts", "vnc_secret"),
    ("users", "totp_secret"),
];

#[derive(Debug, thiserror::Error)]
pub enum ResealError {
    #[error(
        "{table}.{column} of row {id} is sealed under key {found}, which is neither the key file's key \
         ({current}) nor one being retired: this database belongs with another secrets key file"
    )]
    UnknownKey {
        table: &'static str,
        column: &'static str,
        id: String,
        found: String,
        current: String,
    },
    #[error("{table}.{column} of row {id} does not open: {source}")]
    Open {
        table: &'static str,
        column: &'static str,
        id: String,
        #[source]
        source: OpenError,
    },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// How many values a pass changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    /// Plain text found and sealed.
    pub sealed: u64,
    /// Sealed under a retired key, moved to the target key.
    pub moved: u64,
}

/// What to do with one stored value. Pure, so the rules are tested without a database.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'k> {
    Keep,
    SealPlain,
    Move(&'k SecretsKey),
    Unknown(String),
}

pub fn step<'k>(value: &str, target: &SecretsKey, retiring: &'k [SecretsKey]) -> Step<'k> {
    match key_id_of(value) {
        None => Step::SealPlain,
        Some(id) if id == target.id() => Step::Keep,
        Some(id) => retiring
            .iter()
            .find(|k| k.id() == id)
            .map_or_else(|| Step::Unknown(id.to_owned()), Step::Move),
    }
}

/// The key id of some sealed value in the database, if any is sealed.
pub async fn first_key_id(db: &crate::db::Pool) -> Result<Option<String>, ResealError> {
    for &(table, column) in COLUMNS {
        let value: Option<String> = crate::db::on_db!(
            db,
            &format!("SELECT {column} FROM {table} WHERE {column} LIKE 'ccp1.%' LIMIT 1"),
            |exec, sql| sqlx::query_scalar(sql).fetch_optional(exec).await
        )?;
        if let Some(id) = value.as_deref().and_then(key_id_of) {
            return Ok(Some(id.to_owned()));
        }
    }
    Ok(None)
}

/// Seals or re-seals every secret so that all of them are under `target`; `retiring` are the keys
/// values may still be under.
pub async fn reseal(
    db: &crate::db::Pool,
    target: &SecretsKey,
    retiring: &[SecretsKey],
) -> Result<Resealed, ResealError> {
    let mut tx = db.begin().await?;
    let mut done = Resealed::default();
    for &(table, column) in COLUMNS {
        let field = format!("{table}.{column}");
        let rows: Vec<(String, String)> = crate::db::on_db!(
            &mut *tx,
            &format!("SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL"),
            |exec, sql| sqlx::query_as(sql).fetch_all(exec).await
        )?;
        let mut updates = HashMap::new();
        for (id, value) in rows {
            let plain = match step(&value, target, retiring) {
                Step::Keep => continue,
                Step::SealPlain => {
                    done.sealed += 1;
                    value
                }
                Step::Move(old) => {
                    done.moved += 1;
                    old.open(&field, &value).map_err(|source| ResealError::Open {
                        table,
                        column,
                        id: id.clone(),
                        source,
                    })?
                }
                Step::Unknown(found) => {
                    return Err(ResealError::UnknownKey {
                        table,
                        column,
                        id,
                        found,
                        current: target.id().to_owned(),
                    });
                }
            };
            updates.insert(id, target.seal(&field, &plain));
        }
        for (id, sealed) in updates {
            crate::db::on_db!(
                &mut *tx,
                &format!("UPDATE {table} SET {column} = ? WHERE id = ?"),
                |exec, sql| sqlx::query(sql)
                    .bind(sealed)
                    .bind(id)
                    .execute(exec)
                    .await
                    .map(crate::db::Done::from)
            )?;
        }
    }
    tx.commit().await?;
    if done != Resealed::default() && db.backend() == crate::db::Backend::Sqlite {
        // The old values are zeroed in the pages (secure_delete) but the main file still holds
        // them until a checkpoint copies the new pages over; do it now and empty the log.
        // (PostgreSQL's old row versions go at its next vacuum.)
        crate::db::on_db!(db, "PRAGMA wal_checkpoint(TRUNCATE)", |exec, sql| sqlx::query(
            sql
        )
        .execute(exec)
        .await
        .map(crate::db::Done::from))?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_goes_to_the_target_key() {
        let target = SecretsKey::new(&[1; 32]);
        let old = SecretsKey::new(&[2; 32]);
        let stranger = SecretsKey::new(&[3; 32]);
        let retiring = [old.clone()];
        let f = "hosts.vnc_secret";
        let cases = [
            ("plain", "hunter2".to_owned(), Step::SealPlain),
            ("empty plain", String::new(), Step::SealPlain),
            ("json plain", "{\"password\":\"p\"}".to_owned(), Step::SealPlain),
            ("current", target.seal(f, "x"), Step::Keep),
            ("retiring", old.seal(f, "x"), Step::Move(&retiring[0])),
            (
                "stranger",
                stranger.seal(f, "x"),
                Step::Unknown(stranger.id().to_owned()),
            ),
        ];
        for (name, value, want) in cases {
            assert_eq!(step(&value, &target, &retiring), want, "{name}");
        }
        assert_eq!(
            step(&old.seal(f, "x"), &target, &[]),
            Step::Unknown(old.id().to_owned())
        );
    }
}
