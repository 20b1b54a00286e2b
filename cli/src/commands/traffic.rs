//! A host's traffic (`hosts traffic`) and the quotas on it (`quotas`).

use serde_json::{Value, json};

use crate::Ctx;
use crate::args::QuotasCmd;
use crate::client::Role;
use crate::error::{Error, Result};
use crate::output::{self, Column};

const QUOTA_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("HOST", "host_id|8"),
    ("USER", "user_id|8"),
    ("LIMIT", "limit"),
    ("USED", "used"),
    ("DIRECTION", "direction"),
    ("PERIOD", "period"),
    ("ACTION", "action"),
    ("EXCEEDED", "exceeded"),
];

const BUCKET_COLUMNS: &[Column] = &[("START", "start"), ("RECEIVED", "received"), ("SENT", "sent")];

/// `1610612736` → `1.5 GiB`.
pub fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut x = n as f64;
    let mut unit = 0;
    while x >= 1024.0 && unit < UNITS.len() - 1 {
        x /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", UNITS[unit])
    }
}

/// `100GiB`, `1.5 TB`, `4096` → bytes.
pub fn parse_bytes(text: &str) -> Option<i64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0_f64.powi(2),
        "gib" | "g" => 1024.0_f64.powi(3),
        "tib" | "t" => 1024.0_f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => return None,
    };
    let bytes = (number * scale).round();
    (1.0..9.0e15).contains(&bytes).then_some(bytes as i64)
}

/// `hosts traffic HOST`: the series as a table with its totals, or the API's object with --json.
pub fn host_traffic(
    ctx: &Ctx,
    host: &str,
    bucket: String,
    since: Option<String>,
    until: Option<String>,
) -> Result<()> {
    let api = &ctx.api;
    let id = super::host_id(api, host)?;
    let mut q = vec![("bucket", bucket)];
    q.extend(since.map(|s| ("since", s)));
    q.extend(until.map(|u| ("until", u)));
    let series = api.get(&api.scoped(&format!("/hosts/{id}/traffic"))?, &q)?;
    if ctx.out.json {
        return ctx.out.json(&series);
    }
    let rows: Vec<Value> = series["buckets"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|b| {
            json!({
                "start": b["start"],
                "received": human_bytes(b["rx_bytes"].as_i64().unwrap_or(0)),
                "sent": human_bytes(b["tx_bytes"].as_i64().unwrap_or(0)),
            })
        })
        .collect();
    output::write_out(&format!("{}\n", output::table(&rows, BUCKET_COLUMNS)))?;
    output::write_out(&format!(
        "{} received, {} sent from {} to {}\n",
        human_bytes(series["rx_bytes"].as_i64().unwrap_or(0)),
        human_bytes(series["tx_bytes"].as_i64().unwrap_or(0)),
        output::cell(&series["since"]),
        output::cell(&series["until"]),
    ))
}

/// A quota with its limit and use readable by people (the table's columns).
fn readable(q: &Value) -> Value {
    let mut q = q.clone();
    q["limit"] = human_bytes(q["limit_bytes"].as_i64().unwrap_or(0)).into();
    q["used"] = human_bytes(q["used_bytes"].as_i64().unwrap_or(0)).into();
    q
}

pub fn quotas(ctx: &Ctx, cmd: QuotasCmd) -> Result<()> {
    let api = &ctx.api;
    match cmd {
        QuotasCmd::List { host, user, page } => {
            if api.role()? == Role::User {
                if host.is_some() || user.is_some() {
                    return Err(Error::usage("--host and --user filter the operator's list only"));
                }
                let list = api.get("/v1/user/traffic-quotas", &[])?;
                if ctx.out.json {
                    return ctx.out.json(&list);
                }
                let rows: Vec<Value> = list
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(readable)
                    .collect();
                if rows.is_empty() {
                    return output::write_out("(none)\n");
                }
                return output::write_out(&format!("{}\n", output::table(&rows, QUOTA_COLUMNS)));
            }
            let host = host.map(|h| super::host_id(api, &h)).transpose()?;
            let user = user.map(|u| super::user_id(api, &u)).transpose()?;
            let q = super::query(page, &[("host_id", &host), ("user_id", &user)]);
            let mut list = api.get("/v1/admin/traffic-quotas", &q)?;
            if !ctx.out.json
                && let Some(rows) = list["data"].as_array_mut()
            {
                for row in rows.iter_mut() {
                    *row = readable(row);
                }
            }
            ctx.out.page(&list, QUOTA_COLUMNS)
        }
        QuotasCmd::Show { quota_id } => ctx
            .out
            .object(&api.get(&format!("/v1/admin/traffic-quotas/{quota_id}"), &[])?),
        QuotasCmd::Create {
            host,
            user,
            limit,
            direction,
            period,
            action,
        } => {
            let limit_bytes = parse_bytes(&limit).ok_or_else(|| {
                Error::usage(format!(
                    "--limit `{limit}`: give bytes, or a number and a unit such as 100GiB"
                ))
            })?;
            let mut body = json!({
                "limit_bytes": limit_bytes, "direction": direction, "period": period, "action": action,
            });
            match (host, user) {
                (Some(h), _) => body["host_id"] = super::host_id(api, &h)?.into(),
                (None, Some(u)) => body["user_id"] = super::user_id(api, &u)?.into(),
                (None, None) => return Err(Error::usage("give --host or --user")),
            }
            let made = api.post("/v1/admin/traffic-quotas", Some(&body))?;
            ctx.out.object(&made)
        }
        QuotasCmd::Delete { quota_id } => {
            api.delete(&format!("/v1/admin/traffic-quotas/{quota_id}"))?;
            ctx.out.done(&Value::Null, &format!("quota {quota_id} deleted"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_and_print_both_ways() {
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("100GiB"), Some(100 * 1024 * 1024 * 1024));
        assert_eq!(parse_bytes("1.5 TB"), Some(1_500_000_000_000));
        assert_eq!(parse_bytes("2 mib"), Some(2 * 1024 * 1024));
        assert_eq!(parse_bytes("0"), None);
        assert_eq!(parse_bytes("ten"), None);
        assert_eq!(parse_bytes("5 parsecs"), None);
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
