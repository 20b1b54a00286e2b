//! What `copy-database` copies, decided from the two schemas as the databases describe them: the
//! tables in an order their foreign keys accept, each column's type on the way, and the statements
//! that read, write and look up a table. No I/O here.

use std::collections::{BTreeMap, BTreeSet};

/// One SQLite table as `sqlite_master` and `pragma_table_info` describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTable {
    /// Column name and declared type (`TEXT`, `INTEGER`, …), in the table's order.
    pub columns: Vec<(String, String)>,
    /// The primary key's columns, in the key's order.
    pub key: Vec<String>,
}

/// One PostgreSQL column as `information_schema.columns` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetColumn {
    pub name: String,
    /// `information_schema.columns.data_type`: `text`, `bigint`, `boolean`, …
    pub data_type: String,
    /// Filled from a sequence (`GENERATED … AS IDENTITY`): moved past the copied values.
    pub identity: bool,
}

/// One PostgreSQL table: its columns and the tables its foreign keys point to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TargetTable {
    pub columns: Vec<TargetColumn>,
    pub references: BTreeSet<String>,
}

/// How a value travels: SQLite's INTEGER flags become booleans, counters stay 64-bit integers,
/// BLOBs (compressed recordings) become `bytea`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Integer,
    Boolean,
    Bytes,
}

impl Kind {
    /// The kind of a PostgreSQL column type; `None` for a type the copy does not know.
    pub fn of_postgres(data_type: &str) -> Option<Self> {
        match data_type {
            "text" | "character varying" => Some(Self::Text),
            // Counters are 64-bit everywhere (Rust i64); a narrower column is a schema change
            // this copy should not paper over.
            "bigint" => Some(Self::Integer),
            "boolean" => Some(Self::Boolean),
            "bytea" => Some(Self::Bytes),
            _ => None,
        }
    }

    /// Whether an SQLite declared type holds this kind, by SQLite's affinity rules (a type naming
    /// `INT` is an integer, one naming `CHAR`, `CLOB` or `TEXT` is text).
    pub fn accepts_sqlite(self, declared: &str) -> bool {
        let declared = declared.to_ascii_uppercase();
        match self {
            Self::Integer | Self::Boolean => declared.contains("INT"),
            Self::Text => {
                !declared.contains("INT") && ["CHAR", "CLOB", "TEXT"].iter().any(|t| declared.contains(t))
            }
            Self::Bytes => declared.contains("BLOB"),
        }
    }
}

/// One table to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    pub name: String,
    /// Every column, by name, with its kind, in the PostgreSQL table's order.
    pub columns: Vec<(String, Kind)>,
    /// Positions in `columns` of the primary key's columns: batches are read in key order.
    pub key: Vec<usize>,
    /// The identity column whose sequence must go past the copied values.
    pub identity: Option<String>,
}

/// Why the two databases cannot be copied one into the other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the two schemas differ: {}", .0.join("; "))]
    Differs(Vec<String>),
    #[error("table `{0}` has no primary key, so it cannot be read in batches")]
    NoKey(String),
    #[error("the foreign keys of {} form a cycle", .0.join(", "))]
    Cycle(Vec<String>),
}

/// The copy of every table, parents before children. Refuses when the table or column sets differ
/// (naming each difference), when a column's type has no counterpart, or when the order cannot
/// satisfy the foreign keys.
pub fn plan(
    source: &BTreeMap<String, SourceTable>,
    target: &BTreeMap<String, TargetTable>,
) -> Result<Vec<TablePlan>, PlanError> {
    let differences = differences(source, target);
    if !differences.is_empty() {
        return Err(PlanError::Differs(differences));
    }
    let mut out = Vec::with_capacity(target.len());
    for name in order(target)? {
        let (Some(src), Some(dst)) = (source.get(&name), target.get(&name)) else {
            continue;
        };
        let columns: Vec<(String, Kind)> = dst
            .columns
            .iter()
            .filter_map(|c| Some((c.name.clone(), Kind::of_postgres(&c.data_type)?)))
            .collect();
        let key: Vec<usize> = src
            .key
            .iter()
            .filter_map(|k| columns.iter().position(|(c, _)| c == k))
            .collect();
        if key.is_empty() || key.len() != src.key.len() {
            return Err(PlanError::NoKey(name));
        }
        let identity = dst.columns.iter().find(|c| c.identity).map(|c| c.name.clone());
        out.push(TablePlan {
            name,
            columns,
            key,
            identity,
        });
    }
    Ok(out)
}

/// Every table or column present on one side only, and every column whose types do not match,
/// as one phrase each.
pub fn differences(
    source: &BTreeMap<String, SourceTable>,
    target: &BTreeMap<String, TargetTable>,
) -> Vec<String> {
    let mut out = Vec::new();
    for name in source.keys().filter(|t| !target.contains_key(*t)) {
        out.push(format!("table `{name}` is only in the SQLite database"));
    }
    for name in target.keys().filter(|t| !source.contains_key(*t)) {
        out.push(format!("table `{name}` is only in the PostgreSQL database"));
    }
    for (name, src) in source {
        let Some(dst) = target.get(name) else {
            continue;
        };
        for (column, declared) in &src.columns {
            match dst.columns.iter().find(|c| &c.name == column) {
                None => out.push(format!("column `{name}.{column}` is only in the SQLite database")),
                Some(c) => match Kind::of_postgres(&c.data_type) {
                    None => out.push(format!(
                        "column `{name}.{column}` has a PostgreSQL type the copy does not know ({})",
                        c.data_type
                    )),
                    Some(kind) if !kind.accepts_sqlite(declared) => out.push(format!(
                        "column `{name}.{column}` is {declared} in SQLite but {} in PostgreSQL",
                        c.data_type
                    )),
                    Some(_) => {}
                },
            }
        }
        for c in &dst.columns {
            if !src.columns.iter().any(|(s, _)| s == &c.name) {
                out.push(format!(
                    "column `{name}.{}` is only in the PostgreSQL database",
                    c.name
                ));
            }
        }
    }
    out
}

/// The tables, each after every table it references (a table referencing itself is fine: its rows
/// come in key order, and no table of ours does); among tables free to go, by name.
pub fn order(target: &BTreeMap<String, TargetTable>) -> Result<Vec<String>, PlanError> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::with_capacity(target.len());
    while out.len() < target.len() {
        let ready: Vec<&String> = target
            .iter()
            .filter(|(name, t)| {
                !done.contains(name.as_str())
                    && t.references
                        .iter()
                        .all(|r| r == *name || done.contains(r.as_str()) || !target.contains_key(r))
            })
            .map(|(name, _)| name)
            .collect();
        if ready.is_empty() {
            let stuck = target
                .keys()
                .filter(|n| !done.contains(n.as_str()))
                .cloned()
                .collect();
            return Err(PlanError::Cycle(stuck));
        }
        for name in ready {
            done.insert(name);
            out.push(name.clone());
        }
    }
    Ok(out)
}

/// Every how many rows one is kept for the check, so that at most `max` of `count` rows are kept,
/// spread over the whole table.
pub fn sample_stride(count: u64, max: u64) -> u64 {
    if max == 0 {
        return u64::MAX;
    }
    count.div_ceil(max).max(1)
}

/// Which twentieth of a table `copied` rows reach: progress is reported when it grows, so a large
/// table writes about twenty lines, not one per batch.
pub fn progress_step(copied: u64, total: u64) -> u64 {
    copied.saturating_mul(20) / total.max(1)
}

/// Rows per batch: `wanted`, fewer when the columns would pass PostgreSQL's 65535 parameters of
/// one statement.
pub fn batch_rows(wanted: u32, columns: usize) -> u32 {
    const MAX_PARAMETERS: usize = 65_535;
    let fit = MAX_PARAMETERS / columns.max(1);
    u32::try_from(fit).unwrap_or(u32::MAX).min(wanted).max(1)
}

/// An identifier as both backends take it, quoted.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl TablePlan {
    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(c, _)| quote(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn key_list(&self) -> String {
        self.key
            .iter()
            .map(|&i| quote(&self.columns[i].0))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The next batch from SQLite in key order: after the key given as the first parameters (all
    /// but the first batch), at most the last parameter's rows.
    pub fn select_batch(&self, first: bool) -> String {
        let after = if first {
            String::new()
        } else {
            let marks = vec!["?"; self.key.len()].join(", ");
            format!(" WHERE ({}) > ({marks})", self.key_list())
        };
        format!(
            "SELECT {} FROM {}{after} ORDER BY {} LIMIT ?",
            self.column_list(),
            quote(&self.name),
            self.key_list()
        )
    }

    /// The start of the multi-row insert into PostgreSQL; the `VALUES` follow.
    pub fn insert_head(&self) -> String {
        format!("INSERT INTO {} ({}) ", quote(&self.name), self.column_list())
    }

    /// One row by its key (`$1`, `$2`, … in key order), on PostgreSQL.
    pub fn lookup(&self) -> String {
        let condition = self
            .key
            .iter()
            .enumerate()
            .map(|(n, &i)| format!("{} = ${}", quote(&self.columns[i].0), n + 1))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!(
            "SELECT {} FROM {} WHERE {condition}",
            self.column_list(),
            quote(&self.name)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(columns: &[(&str, &str)], key: &[&str]) -> SourceTable {
        SourceTable {
            columns: columns
                .iter()
                .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
                .collect(),
            key: key.iter().map(|k| (*k).to_owned()).collect(),
        }
    }

    fn dst(columns: &[(&str, &str)], references: &[&str]) -> TargetTable {
        TargetTable {
            columns: columns
                .iter()
                .map(|(n, t)| TargetColumn {
                    name: (*n).to_owned(),
                    data_type: (*t).to_owned(),
                    identity: *n == "seq",
                })
                .collect(),
            references: references.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    fn schemas() -> (BTreeMap<String, SourceTable>, BTreeMap<String, TargetTable>) {
        let source = BTreeMap::from([
            (
                "users".to_owned(),
                src(&[("id", "TEXT"), ("token_version", "INTEGER")], &["id"]),
            ),
            (
                // Columns added by ALTER TABLE come last in SQLite.
                "hosts".to_owned(),
                src(
                    &[("id", "TEXT"), ("user_id", "TEXT"), ("entry_disabled", "INTEGER")],
                    &["id"],
                ),
            ),
            (
                "bindings".to_owned(),
                src(&[("id", "TEXT"), ("host_id", "TEXT")], &["id"]),
            ),
            (
                "events".to_owned(),
                src(&[("seq", "INTEGER"), ("id", "TEXT")], &["seq"]),
            ),
            (
                "codes".to_owned(),
                src(&[("user_id", "TEXT"), ("code", "TEXT")], &["user_id", "code"]),
            ),
        ]);
        let target = BTreeMap::from([
            (
                "users".to_owned(),
                dst(&[("id", "text"), ("token_version", "bigint")], &[]),
            ),
            (
                "hosts".to_owned(),
                dst(
                    &[("id", "text"), ("entry_disabled", "boolean"), ("user_id", "text")],
                    &["users"],
                ),
            ),
            (
                "bindings".to_owned(),
                dst(&[("id", "text"), ("host_id", "text")], &["hosts"]),
            ),
            (
                "events".to_owned(),
                dst(&[("seq", "bigint"), ("id", "text")], &[]),
            ),
            (
                "codes".to_owned(),
                dst(&[("code", "text"), ("user_id", "text")], &["users"]),
            ),
        ]);
        (source, target)
    }

    #[test]
    fn tables_come_after_what_they_reference_and_columns_go_by_name() {
        let (source, target) = schemas();
        let plan = plan(&source, &target).unwrap();
        let names: Vec<&str> = plan.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["events", "users", "codes", "hosts", "bindings"]);
        let hosts = &plan[3];
        assert_eq!(
            hosts.columns,
            [
                ("id".to_owned(), Kind::Text),
                ("entry_disabled".to_owned(), Kind::Boolean),
                ("user_id".to_owned(), Kind::Text),
            ]
        );
        assert_eq!(hosts.key, [0]);
        assert_eq!(hosts.identity, None);
        assert_eq!(plan[0].identity.as_deref(), Some("seq"));
        // A composite key, in the key's order, not the columns'.
        assert_eq!(plan[2].key, [1, 0]);
    }

    #[test]
    fn every_difference_is_named() {
        let (mut source, mut target) = schemas();
        source.insert("extra".to_owned(), src(&[("id", "TEXT")], &["id"]));
        target.insert("later".to_owned(), dst(&[("id", "text")], &[]));
        source
            .get_mut("users")
            .unwrap()
            .columns
            .push(("nickname".to_owned(), "TEXT".to_owned()));
        target.get_mut("hosts").unwrap().columns.push(TargetColumn {
            name: "zone".to_owned(),
            data_type: "text".to_owned(),
            identity: false,
        });
        target.get_mut("events").unwrap().columns[1].data_type = "bigint".to_owned();
        target.get_mut("bindings").unwrap().columns[1].data_type = "jsonb".to_owned();
        let found = differences(&source, &target);
        assert_eq!(
            found,
            [
                "table `extra` is only in the SQLite database",
                "table `later` is only in the PostgreSQL database",
                "column `bindings.host_id` has a PostgreSQL type the copy does not know (jsonb)",
                "column `events.id` is TEXT in SQLite but bigint in PostgreSQL",
                "column `hosts.zone` is only in the PostgreSQL database",
                "column `users.nickname` is only in the SQLite database",
            ]
        );
        assert!(matches!(plan(&source, &target), Err(PlanError::Differs(d)) if d == found));
        let (source, target) = schemas();
        assert!(differences(&source, &target).is_empty());
    }

    #[test]
    fn a_cycle_or_a_missing_key_is_refused() {
        let (mut source, mut target) = schemas();
        target
            .get_mut("users")
            .unwrap()
            .references
            .insert("bindings".to_owned());
        assert_eq!(
            order(&target),
            Err(PlanError::Cycle(vec![
                "bindings".to_owned(),
                "codes".to_owned(),
                "hosts".to_owned(),
                "users".to_owned()
            ]))
        );
        let (_, target) = schemas();
        source.get_mut("bindings").unwrap().key.clear();
        assert_eq!(
            plan(&source, &target),
            Err(PlanError::NoKey("bindings".to_owned()))
        );
    }

    #[test]
    fn sqlite_types_match_by_affinity() {
        assert!(Kind::Integer.accepts_sqlite("INTEGER"));
        assert!(Kind::Boolean.accepts_sqlite("integer"));
        assert!(Kind::Integer.accepts_sqlite("BIGINT"));
        assert!(Kind::Text.accepts_sqlite("TEXT"));
        assert!(Kind::Text.accepts_sqlite("VARCHAR(20)"));
        assert!(!Kind::Text.accepts_sqlite("INTEGER"));
        assert!(!Kind::Integer.accepts_sqlite("TEXT"));
        assert!(!Kind::Text.accepts_sqlite("BLOB"));
        assert_eq!(Kind::of_postgres("bigint"), Some(Kind::Integer));
        assert_eq!(Kind::of_postgres("boolean"), Some(Kind::Boolean));
        assert_eq!(Kind::of_postgres("bytea"), Some(Kind::Bytes));
        assert!(Kind::Bytes.accepts_sqlite("BLOB"));
        assert!(!Kind::Bytes.accepts_sqlite("TEXT"));
        assert_eq!(Kind::of_postgres("integer"), None);
    }

    #[test]
    fn statements_read_in_key_order_and_look_up_by_key() {
        let (source, target) = schemas();
        let plan = plan(&source, &target).unwrap();
        let codes = &plan[2];
        assert_eq!(
            codes.select_batch(true),
            r#"SELECT "code", "user_id" FROM "codes" ORDER BY "user_id", "code" LIMIT ?"#
        );
        assert_eq!(
            codes.select_batch(false),
            r#"SELECT "code", "user_id" FROM "codes" WHERE ("user_id", "code") > (?, ?) ORDER BY "user_id", "code" LIMIT ?"#
        );
        assert_eq!(
            codes.lookup(),
            r#"SELECT "code", "user_id" FROM "codes" WHERE "user_id" = $1 AND "code" = $2"#
        );
        assert_eq!(codes.insert_head(), r#"INSERT INTO "codes" ("code", "user_id") "#);
        assert_eq!(quote(r#"a"b"#), r#""a""b""#);
    }

    #[test]
    fn samples_spread_and_batches_fit_one_statement() {
        assert_eq!(sample_stride(0, 100), 1);
        assert_eq!(sample_stride(100, 100), 1);
        assert_eq!(sample_stride(101, 100), 2);
        assert_eq!(sample_stride(10_000, 100), 100);
        assert_eq!(sample_stride(5, 0), u64::MAX);
        assert_eq!(progress_step(0, 0), 0);
        assert_eq!(progress_step(499, 10_000), 0);
        assert_eq!(progress_step(500, 10_000), 1);
        assert_eq!(progress_step(10_000, 10_000), 20);
        assert_eq!(batch_rows(500, 20), 500);
        assert_eq!(batch_rows(500, 1000), 65);
        assert_eq!(batch_rows(0, 3), 1);
    }
}
