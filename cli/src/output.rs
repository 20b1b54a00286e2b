//! What a command prints on standard output: the API's JSON unchanged under `--json`, else tables
//! (comfy-table) and short lines for people. Progress and prompts go to standard error.

use std::io::Write as _;

use comfy_table::{ContentArrangement, Table, presets};
use serde_json::Value;

use crate::error::{Error, Result};

/// One column of a table: its header and the dotted path of the field it shows.
pub type Column = (&'static str, &'static str);

#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

/// Writes `text` to standard output. A closed pipe (`… | head`) ends the program quietly.
pub fn write_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Error::new(141, "broken_pipe", "")),
        Err(e) => Err(e.into()),
    }
}

/// A message for people on standard error (never data a script reads).
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

impl Output {
    /// Pretty JSON, the value unchanged.
    pub fn json(&self, value: &Value) -> Result<()> {
        let text = serde_json::to_string_pretty(value).map_err(|e| Error::local("json", e.to_string()))?;
        write_out(&format!("{text}\n"))
    }

    /// A page of a list (`{"data":[…],"page",…}`): as it came under `--json`, else a table and
    /// a line saying which page of how many.
    pub fn page(&self, page: &Value, columns: &[Column]) -> Result<()> {
        if self.json {
            return self.json(page);
        }
        let rows = page["data"].as_array().map(Vec::as_slice).unwrap_or_default();
        let total = page["total_records"].as_i64().unwrap_or(rows.len() as i64);
        if rows.is_empty() {
            return write_out(if total == 0 {
                "(none)\n"
            } else {
                "(nothing on this page)\n"
            });
        }
        write_out(&format!("{}\n", table(rows, columns)))?;
        let pages = page["total_pages"].as_i64().unwrap_or(1);
        if pages > 1 {
            let n = page["page"].as_i64().unwrap_or(1);
            note(&format!(
                "page {n} of {pages}, {total} in all (--page N for more)"
            ));
        }
        Ok(())
    }

    /// One object: as it came under `--json`, else a two-column table of its fields.
    pub fn object(&self, value: &Value) -> Result<()> {
        if self.json {
            return self.json(value);
        }
        write_out(&format!("{}\n", fields(value)))
    }

    /// A done-line for people (`--json` prints `value` instead, e.g. `null` for a 204).
    pub fn done(&self, value: &Value, text: &str) -> Result<()> {
        if self.json {
            return self.json(value);
        }
        write_out(&format!("{text}\n"))
    }
}

fn new_table() -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .apply_modifier(comfy_table::modifiers::UTF8_ROUND_CORNERS);
    // Fitted to the terminal's width when it has one worth fitting to (a pseudo-terminal nobody
    // sized says 0 columns); otherwise every cell is shown whole.
    if t.width().is_some_and(|w| w >= 40) {
        t.set_content_arrangement(ContentArrangement::Dynamic);
    }
    t
}

/// Columns of free text, which wrap when the terminal is narrow; the others keep their width.
const WRAPPING: &[&str] = &[
    "DETAILS",
    "LAST ERROR",
    "STAGE",
    "ERROR",
    "OBSERVED",
    "KEY",
    "WG PUBLIC KEY",
    // Times break at their space, still readable.
    "CREATED",
    "UPDATED",
    "EXPIRES",
    "LAST USED",
    "LAST SEEN",
];

/// Rows as a table with the given columns. A path ending in `|8` shows the first 8 characters
/// (enough for a host id prefix that `hosts show` takes).
pub fn table(rows: &[Value], columns: &[Column]) -> Table {
    let mut t = new_table();
    t.set_header(columns.iter().map(|(h, _)| *h));
    let mut widest = vec![0; columns.len()];
    for row in rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|(_, path)| match path.split_once('|') {
                Some((path, n)) => {
                    let full = cell(lookup(row, path));
                    let n = n.parse().unwrap_or(8);
                    full.chars().take(n).collect()
                }
                None => cell(lookup(row, path)),
            })
            .collect();
        for (w, c) in widest.iter_mut().zip(&cells) {
            *w = (*w).max(c.chars().count());
        }
        t.add_row(cells);
    }
    // Ids, names, statuses and times keep their width (an id cut in two cannot be copied);
    // free text and long values wrap when the terminal is narrow.
    for (i, ((header, _), w)) in columns.iter().zip(&widest).enumerate() {
        if !WRAPPING.contains(header)
            && *w <= 40
            && let Some(column) = t.column_mut(i)
        {
            column.set_constraint(comfy_table::ColumnConstraint::ContentWidth);
        }
    }
    t
}

/// Fields a person looks for first in an object's table; the others follow in name order.
const FIRST: &[&str] = &[
    "id", "short_id", "name", "username", "label", "role", "status", "kind",
];

/// An object's fields, one a row: the usual identifying fields first, and a nested object's
/// fields under dotted names (`access.ssh_command`).
pub fn fields(value: &Value) -> Table {
    let mut t = new_table();
    let Some(map) = value.as_object() else {
        t.add_row([cell(value)]);
        return t;
    };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_by_key(|k| {
        (
            FIRST.iter().position(|f| f == k).unwrap_or(FIRST.len()),
            k.as_str(),
        )
    });
    for k in keys {
        match &map[k] {
            Value::Object(inner) if !inner.is_empty() => {
                for (ik, iv) in inner {
                    t.add_row([format!("{k}.{ik}"), cell(iv)]);
                }
            }
            v => {
                t.add_row([k.clone(), cell(v)]);
            }
        }
    }
    t
}

/// The field at a dotted path (`access.ssh_command`), `Null` when absent.
pub fn lookup<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(value, |v, key| v.get(key).unwrap_or(&Value::Null))
}

/// A value as a table shows it: `-` for null, times without their fraction, nested values as
/// compact JSON.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => short_time(s).unwrap_or_else(|| s.clone()),
        Value::Array(a) if a.is_empty() => "-".to_owned(),
        // `{"a":1,"b":"x"}` → `a=1 b=x`: the audit log's details read as a line.
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// `2026-12-06T19:43:23.123456Z` → `2026-12-06 19:43:23Z`; `None` for anything else.
fn short_time(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let looks = s.len() >= 20
        && s.ends_with('Z')
        && b.get(10) == Some(&b'T')
        && b.get(4) == Some(&b'-')
        && b.get(13) == Some(&b':')
        && s[..10].bytes().all(|c| c.is_ascii_digit() || c == b'-');
    looks.then(|| format!("{} {}Z", &s[..10], &s[11..19]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_read_well() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!(true)), "yes");
        assert_eq!(cell(&json!(42)), "42");
        assert_eq!(
            cell(&json!("2026-12-06T19:43:23.123456Z")),
            "2026-12-06 19:43:23Z"
        );
        assert_eq!(cell(&json!("alice")), "alice");
        assert_eq!(cell(&json!({"a": 1, "b": "x"})), "a=1 b=x");
    }

    #[test]
    fn objects_show_identity_first_and_nested_fields_dotted() {
        let v = json!({"updated_at": "x", "name": "dev", "id": "1", "access": {"ssh_command": "ssh"}});
        let text = fields(&v).to_string();
        let order: Vec<usize> = ["id", "name", "access.ssh_command", "updated_at"]
            .iter()
            .map(|k| text.find(k).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn dotted_paths_reach_nested_fields() {
        let v = json!({"access": {"ssh_command": "ssh -p 2222 a+b@h"}});
        assert_eq!(lookup(&v, "access.ssh_command"), "ssh -p 2222 a+b@h");
        assert_eq!(lookup(&v, "access.nothing"), &Value::Null);
    }

    #[test]
    fn tables_have_a_row_per_object() {
        let rows = [json!({"id": "1", "name": "a"}), json!({"id": "2", "name": null})];
        let text = table(&rows, &[("ID", "id"), ("NAME", "name")]).to_string();
        assert!(
            text.contains("NAME") && text.contains('a') && text.contains('-'),
            "{text}"
        );
        assert_eq!(text.lines().count(), 6, "{text}");
    }
}
