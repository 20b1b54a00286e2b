//! `copy-database`: an SQLite installation's rows moved into an empty PostgreSQL database, in one
//! target transaction that commits only after the copy was checked (row counts per table, and a
//! sample of rows column by column). The tables and columns come from the databases themselves, so a
//! table added later is either copied or named in a refusal, never skipped.

pub mod plan;

use std::collections::BTreeMap;
use std::str::FromStr;

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row as _, Sqlite, SqliteConnection, SqlitePool};

use self::plan::{Kind, PlanError, SourceTable, TablePlan, TargetColumn, TargetTable};
use super::{Backend, Pool, backend_of, redact_url};

/// What to copy, from where to where.
#[derive(Debug, Clone)]
pub struct Options {
    /// `sqlite://PATH` of an existing database.
    pub from: String,
    /// `postgres://…` of a database with none of our rows.
    pub to: String,
    /// Rows read and written per statement (fewer for very wide tables).
    pub batch_rows: u32,
    /// Rows per table compared column by column after the copy.
    pub samples: u64,
}

/// What the copy reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress<'a> {
    /// The source is on the latest schema and the target's schema is in place.
    Schemas { tables: usize },
    /// `copied` of `total` rows of a table are in the target transaction.
    Rows { table: &'a str, copied: u64, total: u64 },
    /// An identity column's sequence moved past the copied values.
    Sequence { table: &'a str, next_after: i64 },
    /// A table's count matched and its sampled rows are equal.
    Checked { table: &'a str, rows: u64, sampled: u64 },
}

/// What was copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub tables: usize,
    pub rows: u64,
    pub sampled: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--from must be an SQLite database (sqlite://PATH), not `{0}`")]
    NotSqlite(String),
    #[error("--to must be a PostgreSQL database (postgres://…), not `{0}`")]
    NotPostgres(String),
    #[error("the source database {0} does not exist")]
    SourceMissing(String),
    #[error("source: {0}")]
    Source(#[source] super::Error),
    #[error("target: {0}")]
    Target(#[source] super::Error),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(
        "the target already holds rows (in {}): copy-database only fills an empty database",
        .0.join(", ")
    )]
    TargetNotEmpty(Vec<String>),
    #[error("{what}: {source}")]
    Sql {
        what: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("table `{table}`, column `{column}`: {message}")]
    Value {
        table: String,
        column: String,
        message: String,
    },
    #[error("check failed, nothing was committed: {0}")]
    Check(String),
}

impl Error {
    /// The exit status of `copy-database` for this error (documented with the command): 2 bad
    /// arguments, 3 a target that already holds rows, 4 schemas that differ, 1 anything else.
    pub fn exit_status(&self) -> u8 {
        match self {
            Self::NotSqlite(_) | Self::NotPostgres(_) | Self::SourceMissing(_) => 2,
            Self::TargetNotEmpty(_) => 3,
            Self::Plan(_) => 4,
            Self::Source(_) | Self::Target(_) | Self::Sql { .. } | Self::Value { .. } | Self::Check(_) => 1,
        }
    }
}

fn sql(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Error {
    let what = what.into();
    move |source| Error::Sql { what, source }
}

/// One value on its way, typed as the target column wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Text(String),
    Integer(i64),
    Boolean(bool),
    Bytes(Vec<u8>),
}

/// Copies every row of `options.from` into `options.to`; see the module's documentation.
pub async fn run(options: &Options, progress: &mut dyn FnMut(Progress<'_>)) -> Result<Summary, Error> {
    if backend_of(&options.from) != Some(Backend::Sqlite) {
        return Err(Error::NotSqlite(redact_url(&options.from)));
    }
    if backend_of(&options.to) != Some(Backend::Postgres) {
        return Err(Error::NotPostgres(redact_url(&options.to)));
    }
    // `db::open` creates a missing SQLite file: a mistyped path must not copy an empty database.
    let file = SqliteConnectOptions::from_str(&options.from)
        .map_err(|e| Error::Source(super::Error::Open(e)))?
        .get_filename()
        .to_owned();
    if !file.is_file() {
        return Err(Error::SourceMissing(file.display().to_string()));
    }
    let source = super::connect(&options.from).await.map_err(Error::Source)?;
    let target = super::open(&options.to).await.map_err(Error::Target)?;
    let result = match (&source, &target) {
        (Pool::Sqlite(s), Pool::Postgres(t)) => copy(s, t, options, progress).await,
        _ => Err(Error::NotPostgres(redact_url(&options.to))),
    };
    source.close().await;
    target.close().await;
    result
}

async fn copy(
    source: &SqlitePool,
    target: &PgPool,
    options: &Options,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Summary, Error> {
    // Refused before the migrations run, so a database of something else is left as it was.
    {
        let mut conn = target.acquire().await.map_err(sql("target: connect"))?;
        let tables: Vec<String> = target_schema(&mut conn).await?.into_keys().collect();
        let filled = filled_tables(&mut conn, &tables).await?;
        if !filled.is_empty() {
            return Err(Error::TargetNotEmpty(filled));
        }
    }
    super::migrate(&Pool::Postgres(target.clone()))
        .await
        .map_err(Error::Target)?;

    // One read transaction: every batch and every check sees the same snapshot of the file.
    let mut src = source.begin().await.map_err(sql("source: begin"))?;
    let mut dst = target.begin().await.map_err(sql("target: begin"))?;
    let source_tables = source_schema(&mut src).await?;
    let target_tables = target_schema(&mut dst).await?;
    let tables = plan::plan(&source_tables, &target_tables)?;
    progress(Progress::Schemas { tables: tables.len() });

    // Nobody else writes (or reads half a copy) until the commit; and the target is still empty.
    let names: Vec<String> = tables.iter().map(|t| plan::quote(&t.name)).collect();
    if !names.is_empty() {
        sqlx::query(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            names.join(", ")
        ))
        .execute(&mut *dst)
        .await
        .map_err(sql("target: lock the tables"))?;
    }
    let all: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
    let filled = filled_tables(&mut dst, &all).await?;
    if !filled.is_empty() {
        return Err(Error::TargetNotEmpty(filled));
    }

    let mut summary = Summary {
        tables: tables.len(),
        rows: 0,
        sampled: 0,
    };
    let mut checks = Vec::with_capacity(tables.len());
    for table in &tables {
        let copied = copy_table(&mut src, &mut dst, table, options, progress).await?;
        summary.rows += copied.rows;
        if let Some(column) = &table.identity
            && let Some(next_after) = move_sequence(&mut src, &mut dst, table, column).await?
        {
            progress(Progress::Sequence {
                table: &table.name,
                next_after,
            });
        }
        checks.push(copied);
    }
    for (table, copied) in tables.iter().zip(&checks) {
        check_table(&mut dst, table, copied).await?;
        summary.sampled += copied.samples.len() as u64;
        progress(Progress::Checked {
            table: &table.name,
            rows: copied.rows,
            sampled: copied.samples.len() as u64,
        });
    }
    dst.commit().await.map_err(sql("target: commit"))?;
    src.rollback().await.map_err(sql("source: end the read"))?;
    Ok(summary)
}

/// Tables of our schema in the SQLite file, with their columns and keys.
async fn source_schema(conn: &mut SqliteConnection) -> Result<BTreeMap<String, SourceTable>, Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(sql("source: list the tables"))?;
    let mut out = BTreeMap::new();
    for name in names {
        let rows = sqlx::query("SELECT name, type, pk FROM pragma_table_info(?) ORDER BY cid")
            .bind(&name)
            .fetch_all(&mut *conn)
            .await
            .map_err(sql(format!("source: columns of `{name}`")))?;
        let mut columns = Vec::with_capacity(rows.len());
        let mut key = Vec::new();
        for row in rows {
            let column: String = row.try_get(0).map_err(sql("source: a column's name"))?;
            let declared: String = row.try_get(1).map_err(sql("source: a column's type"))?;
            let position: i64 = row.try_get(2).map_err(sql("source: a column's key"))?;
            if position > 0 {
                key.push((position, column.clone()));
            }
            columns.push((column, declared));
        }
        key.sort();
        let key = key.into_iter().map(|(_, c)| c).collect();
        out.insert(name, SourceTable { columns, key });
    }
    Ok(out)
}

/// Tables of the PostgreSQL schema in use, with their columns and what their foreign keys point to.
async fn target_schema(conn: &mut PgConnection) -> Result<BTreeMap<String, TargetTable>, Error> {
    let rows = sqlx::query(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text, c.is_identity::text \
         FROM information_schema.columns c \
         JOIN information_schema.tables t \
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
         WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' \
           AND c.table_name <> '_sqlx_migrations' \
         ORDER BY c.table_name, c.ordinal_position",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(sql("target: list the columns"))?;
    let mut out: BTreeMap<String, TargetTable> = BTreeMap::new();
    for row in rows {
        let table: String = row.try_get(0).map_err(sql("target: a table's name"))?;
        let name: String = row.try_get(1).map_err(sql("target: a column's name"))?;
        let data_type: String = row.try_get(2).map_err(sql("target: a column's type"))?;
        let identity: String = row.try_get(3).map_err(sql("target: a column's identity"))?;
        out.entry(table).or_default().columns.push(TargetColumn {
            name,
            data_type,
            identity: identity == "YES",
        });
    }
    let references = sqlx::query(
        "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint \
         WHERE contype = 'f' AND connamespace = current_schema()::regnamespace",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(sql("target: list the foreign keys"))?;
    for row in references {
        let from: String = row.try_get(0).map_err(sql("target: a foreign key"))?;
        let to: String = row.try_get(1).map_err(sql("target: a foreign key"))?;
        if let Some(t) = out.get_mut(&from) {
            t.references.insert(to);
        }
    }
    Ok(out)
}

/// The tables among `tables` that hold at least one row.
async fn filled_tables(conn: &mut PgConnection, tables: &[String]) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for table in tables {
        let any: bool = sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM {})", plan::quote(table)))
            .fetch_one(&mut *conn)
            .await
            .map_err(sql(format!("target: look into `{table}`")))?;
        if any {
            out.push(table.clone());
        }
    }
    Ok(out)
}

/// What was copied of one table: its row count and the rows kept for the check.
struct Copied {
    rows: u64,
    samples: Vec<Vec<Value>>,
}

async fn copy_table(
    src: &mut SqliteConnection,
    dst: &mut PgConnection,
    table: &TablePlan,
    options: &Options,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Copied, Error> {
    let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", plan::quote(&table.name)))
        .fetch_one(&mut *src)
        .await
        .map_err(sql(format!("source: count `{}`", table.name)))?;
    let total = u64::try_from(total).unwrap_or_default();
    let stride = plan::sample_stride(total, options.samples);
    let limit = plan::batch_rows(options.batch_rows, table.columns.len());
    let mut copied = Copied {
        rows: 0,
        samples: Vec::new(),
    };
    let mut last_key: Option<Vec<Value>> = None;
    let mut reported = 0;
    if total == 0 {
        progress(Progress::Rows {
            table: &table.name,
            copied: 0,
            total,
        });
    }
    loop {
        let statement = table.select_batch(last_key.is_none());
        let mut query = sqlx::query(&statement);
        for value in last_key.iter().flatten() {
            query = bind_sqlite(query, value);
        }
        let rows = query
            .bind(i64::from(limit))
            .fetch_all(&mut *src)
            .await
            .map_err(sql(format!("source: read `{}`", table.name)))?;
        if rows.is_empty() {
            break;
        }
        let mut batch = Vec::with_capacity(rows.len());
        for row in &rows {
            batch.push(read_sqlite(row, table)?);
        }
        insert(dst, table, &batch).await?;
        for row in batch {
            if copied.rows.is_multiple_of(stride) && (copied.samples.len() as u64) < options.samples {
                copied.samples.push(row.clone());
            }
            copied.rows += 1;
            last_key = Some(table.key.iter().map(|&i| row[i].clone()).collect());
        }
        let step = plan::progress_step(copied.rows, total);
        if step > reported || copied.rows >= total {
            reported = step;
            progress(Progress::Rows {
                table: &table.name,
                copied: copied.rows,
                total,
            });
        }
    }
    Ok(copied)
}

fn bind_sqlite<'q>(
    query: Query<'q, Sqlite, SqliteArguments<'q>>,
    value: &Value,
) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    match value {
        Value::Null => query.bind(None::<String>),
        Value::Text(t) => query.bind(t.clone()),
        Value::Integer(i) => query.bind(*i),
        Value::Boolean(b) => query.bind(i64::from(*b)),
        Value::Bytes(b) => query.bind(b.clone()),
    }
}

fn bind_postgres<'q>(
    query: Query<'q, Postgres, PgArguments>,
    value: &Value,
) -> Query<'q, Postgres, PgArguments> {
    match value {
        Value::Null => query.bind(None::<String>),
        Value::Text(t) => query.bind(t.clone()),
        Value::Integer(i) => query.bind(*i),
        Value::Boolean(b) => query.bind(*b),
        Value::Bytes(b) => query.bind(b.clone()),
    }
}

/// One SQLite row as the target's columns want it: a flag becomes a boolean (only 0 and 1 are
/// flags; anything else stops the copy rather than guess).
fn read_sqlite(row: &sqlx::sqlite::SqliteRow, table: &TablePlan) -> Result<Vec<Value>, Error> {
    let mut out = Vec::with_capacity(table.columns.len());
    for (i, (column, kind)) in table.columns.iter().enumerate() {
        let bad = |message: String| Error::Value {
            table: table.name.clone(),
            column: column.clone(),
            message,
        };
        let value = match kind {
            Kind::Text => row
                .try_get::<Option<String>, _>(i)
                .map_err(|e| bad(e.to_string()))?
                .map_or(Value::Null, Value::Text),
            Kind::Integer => row
                .try_get::<Option<i64>, _>(i)
                .map_err(|e| bad(e.to_string()))?
                .map_or(Value::Null, Value::Integer),
            Kind::Boolean => match row.try_get::<Option<i64>, _>(i).map_err(|e| bad(e.to_string()))? {
                None => Value::Null,
                Some(n) => Value::Boolean(flag(n).ok_or_else(|| bad(format!("{n} is not a flag (0 or 1)")))?),
            },
            Kind::Bytes => row
                .try_get::<Option<Vec<u8>>, _>(i)
                .map_err(|e| bad(e.to_string()))?
                .map_or(Value::Null, Value::Bytes),
        };
        out.push(value);
    }
    Ok(out)
}

/// An SQLite flag as a boolean.
fn flag(n: i64) -> Option<bool> {
    match n {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

fn read_postgres(row: &sqlx::postgres::PgRow, table: &TablePlan) -> Result<Vec<Value>, Error> {
    let mut out = Vec::with_capacity(table.columns.len());
    for (i, (column, kind)) in table.columns.iter().enumerate() {
        let what = format!("target: read `{}.{column}`", table.name);
        let value = match kind {
            Kind::Text => row
                .try_get::<Option<String>, _>(i)
                .map_err(sql(what))?
                .map_or(Value::Null, Value::Text),
            Kind::Integer => row
                .try_get::<Option<i64>, _>(i)
                .map_err(sql(what))?
                .map_or(Value::Null, Value::Integer),
            Kind::Boolean => row
                .try_get::<Option<bool>, _>(i)
                .map_err(sql(what))?
                .map_or(Value::Null, Value::Boolean),
            Kind::Bytes => row
                .try_get::<Option<Vec<u8>>, _>(i)
                .map_err(sql(what))?
                .map_or(Value::Null, Value::Bytes),
        };
        out.push(value);
    }
    Ok(out)
}

/// One multi-row `INSERT` of a batch.
async fn insert(dst: &mut PgConnection, table: &TablePlan, rows: &[Vec<Value>]) -> Result<(), Error> {
    let mut builder = QueryBuilder::<Postgres>::new(table.insert_head());
    builder.push_values(rows, |mut b, row| {
        for (value, (_, kind)) in row.iter().zip(&table.columns) {
            match (value, kind) {
                (Value::Null, Kind::Text) => b.push_bind(None::<String>),
                (Value::Null, Kind::Integer) => b.push_bind(None::<i64>),
                (Value::Null, Kind::Boolean) => b.push_bind(None::<bool>),
                (Value::Null, Kind::Bytes) => b.push_bind(None::<Vec<u8>>),
                (Value::Bytes(v), _) => b.push_bind(v.clone()),
                (Value::Text(t), _) => b.push_bind(t.clone()),
                (Value::Integer(i), _) => b.push_bind(*i),
                (Value::Boolean(v), _) => b.push_bind(*v),
            };
        }
    });
    builder
        .build()
        .execute(&mut *dst)
        .await
        .map_err(sql(format!("target: write `{}`", table.name)))?;
    Ok(())
}

/// Moves the identity sequence past the highest value copied, and past the highest SQLite ever
/// handed out (`sqlite_sequence`, which remembers values of deleted rows), so no number is reused.
async fn move_sequence(
    src: &mut SqliteConnection,
    dst: &mut PgConnection,
    table: &TablePlan,
    column: &str,
) -> Result<Option<i64>, Error> {
    let has_sequence_table: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence')",
    )
    .fetch_one(&mut *src)
    .await
    .map_err(sql("source: look for sqlite_sequence"))?;
    let handed_out: i64 = if has_sequence_table {
        sqlx::query_scalar("SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = ?), 0)")
            .bind(&table.name)
            .fetch_one(&mut *src)
            .await
            .map_err(sql("source: read sqlite_sequence"))?
    } else {
        0
    };
    let highest: i64 = sqlx::query_scalar(&format!(
        "SELECT COALESCE(MAX({}), 0) FROM {}",
        plan::quote(column),
        plan::quote(&table.name)
    ))
    .fetch_one(&mut *dst)
    .await
    .map_err(sql(format!("target: highest `{}.{column}`", table.name)))?;
    let next_after = highest.max(handed_out);
    if next_after < 1 {
        return Ok(None);
    }
    sqlx::query("SELECT setval(pg_get_serial_sequence($1, $2), $3)")
        .bind(plan::quote(&table.name))
        .bind(column)
        .bind(next_after)
        .execute(&mut *dst)
        .await
        .map_err(sql(format!("target: move the sequence of `{}`", table.name)))?;
    Ok(Some(next_after))
}

/// The target (inside the transaction) holds as many rows as were read, and the sampled rows
/// equal, column by column, what was read.
async fn check_table(dst: &mut PgConnection, table: &TablePlan, copied: &Copied) -> Result<(), Error> {
    let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", plan::quote(&table.name)))
        .fetch_one(&mut *dst)
        .await
        .map_err(sql(format!("target: count `{}`", table.name)))?;
    if u64::try_from(count).ok() != Some(copied.rows) {
        return Err(Error::Check(format!(
            "table `{}` has {count} rows in PostgreSQL but {} in SQLite",
            table.name, copied.rows
        )));
    }
    let lookup = table.lookup();
    for wanted in &copied.samples {
        let mut query = sqlx::query(&lookup);
        for &i in &table.key {
            query = bind_postgres(query, &wanted[i]);
        }
        let key = describe_key(table, wanted);
        let found = query
            .fetch_optional(&mut *dst)
            .await
            .map_err(sql(format!("target: look up `{}` {key}", table.name)))?;
        let Some(found) = found else {
            return Err(Error::Check(format!(
                "table `{}`: the row {key} is missing",
                table.name
            )));
        };
        let found = read_postgres(&found, table)?;
        if let Some(column) = first_difference(table, wanted, &found) {
            return Err(Error::Check(format!(
                "table `{}`, row {key}: column `{column}` differs",
                table.name
            )));
        }
    }
    Ok(())
}

/// The row's first key column, to name it in a failure (the values themselves may be secret).
fn describe_key(table: &TablePlan, row: &[Value]) -> String {
    let Some(&i) = table.key.first() else {
        return String::new();
    };
    let value = match &row[i] {
        Value::Null => "NULL".to_owned(),
        Value::Text(t) => t.clone(),
        Value::Integer(n) => n.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Bytes(b) => format!("{} bytes", b.len()),
    };
    format!("{} = {value}", table.columns[i].0)
}

/// The first column whose values differ.
fn first_difference<'t>(table: &'t TablePlan, a: &[Value], b: &[Value]) -> Option<&'t str> {
    if a.len() != b.len() {
        return table.columns.first().map(|(c, _)| c.as_str());
    }
    table
        .columns
        .iter()
        .zip(a.iter().zip(b))
        .find(|(_, (x, y))| x != y)
        .map(|((c, _), _)| c.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TablePlan {
        TablePlan {
            name: "hosts".to_owned(),
            columns: vec![
                ("id".to_owned(), Kind::Text),
                ("entry_disabled".to_owned(), Kind::Boolean),
                ("memory_mb".to_owned(), Kind::Integer),
            ],
            key: vec![0],
            identity: None,
        }
    }

    #[test]
    fn flags_are_zero_or_one() {
        assert_eq!(flag(0), Some(false));
        assert_eq!(flag(1), Some(true));
        assert_eq!(flag(2), None);
        assert_eq!(flag(-1), None);
    }

    #[test]
    fn the_first_differing_column_is_named_not_its_values() {
        let t = table();
        let a = vec![
            Value::Text("h1".to_owned()),
            Value::Boolean(false),
            Value::Integer(512),
        ];
        assert_eq!(first_difference(&t, &a, &a.clone()), None);
        let mut b = a.clone();
        b[2] = Value::Integer(513);
        assert_eq!(first_difference(&t, &a, &b), Some("memory_mb"));
        b[1] = Value::Null;
        assert_eq!(first_difference(&t, &a, &b), Some("entry_disabled"));
        assert_eq!(describe_key(&t, &a), "id = h1");
    }

    #[test]
    fn each_refusal_has_its_exit_status() {
        assert_eq!(Error::NotSqlite("x".into()).exit_status(), 2);
        assert_eq!(Error::TargetNotEmpty(vec!["users".into()]).exit_status(), 3);
        assert_eq!(Error::Plan(PlanError::Differs(vec!["d".into()])).exit_status(), 4);
        assert_eq!(Error::Check("c".into()).exit_status(), 1);
        let line = Error::TargetNotEmpty(vec!["users".into(), "events".into()]).to_string();
        assert_eq!(
            line,
            "the target already holds rows (in users, events): copy-database only fills an empty database"
        );
    }
}
