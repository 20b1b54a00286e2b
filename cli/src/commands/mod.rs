//! One module per API group; the lookups they share (a user by name, a host by prefix, an egress
//! IP by label) live here.

pub mod account;
pub mod audit;
pub mod egress;
pub mod hosts;
pub mod ssh;
pub mod tasks;
pub mod traffic;
pub mod users;

use serde_json::Value;

use crate::args::PageArgs;
use crate::client::Api;
use crate::error::{Error, Result, exit};

/// Whether `s` is a UUID as the API writes them (what a path id must be).
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// `page` and `page_size` for a list request, with the filters that are set.
pub fn query(page: PageArgs, filters: &[(&'static str, &Option<String>)]) -> Vec<(&'static str, String)> {
    let mut q = vec![
        ("page", page.page.to_string()),
        ("page_size", page.page_size.to_string()),
    ];
    for (k, v) in filters {
        if let Some(v) = v {
            q.push((*k, v.clone()));
        }
    }
    q
}

fn not_found(what: &str, name: &str) -> Error {
    Error::new(
        exit::NOT_FOUND,
        "not_found",
        format!("no {what} matches `{name}`"),
    )
}

/// A user's id from its id or username (operator).
pub fn user_id(api: &Api, user: &str) -> Result<String> {
    if is_uuid(user) {
        return Ok(user.to_owned());
    }
    let found = api.all("/v1/admin/users", &[("q", user.to_owned())])?;
    found
        .iter()
        .find(|u| {
            u["username"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(user))
        })
        .and_then(|u| u["id"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| not_found("user", user))
}

/// An egress IP's id from its id, label, or a unique prefix of its id.
pub fn egress_id(api: &Api, egress: &str) -> Result<String> {
    if is_uuid(egress) {
        return Ok(egress.to_owned());
    }
    let found = api.all("/v1/admin/egress-ips", &[])?;
    let id_of = |e: &Value| e["id"].as_str().unwrap_or_default().to_owned();
    if let Some(e) = found.iter().find(|e| e["label"].as_str() == Some(egress)) {
        return Ok(id_of(e));
    }
    let prefixed: Vec<&Value> = found
        .iter()
        .filter(|e| e["id"].as_str().is_some_and(|id| id.starts_with(egress)))
        .collect();
    match prefixed.as_slice() {
        [one] => Ok(id_of(one)),
        [] => Err(not_found("egress IP", egress)),
        _ => Err(Error::new(
            exit::INVALID,
            "ambiguous_egress_ip",
            format!("`{egress}` is the start of several egress IPs' ids"),
        )),
    }
}

/// The hosts the caller sees (all of them for the operator, its own for a tenant).
pub fn visible_hosts(api: &Api) -> Result<Vec<Value>> {
    api.all(&api.scoped("/hosts")?, &[])
}

/// Picks the host `wanted` names among `hosts`: an exact id, short id or name first, then a
/// unique prefix of an id or short id.
pub fn pick_host<'a>(hosts: &'a [Value], wanted: &str) -> Result<&'a Value> {
    let field = |h: &'a Value, k: &str| h[k].as_str().unwrap_or_default();
    let exact: Vec<&Value> = hosts
        .iter()
        .filter(|h| field(h, "id") == wanted || field(h, "short_id") == wanted)
        .collect();
    let named: Vec<&Value> = hosts.iter().filter(|h| field(h, "name") == wanted).collect();
    let prefixed: Vec<&Value> = hosts
        .iter()
        .filter(|h| field(h, "id").starts_with(wanted) || field(h, "short_id").starts_with(wanted))
        .collect();
    let candidates = [exact, named, prefixed]
        .into_iter()
        .find(|c| !c.is_empty())
        .ok_or_else(|| not_found("host", wanted))?;
    match candidates.as_slice() {
        [one] => Ok(*one),
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|h| format!("{} ({})", field(h, "short_id"), field(h, "name")))
                .collect();
            Err(Error::new(
                exit::INVALID,
                "ambiguous_host",
                format!("`{wanted}` matches {} hosts: {}", many.len(), names.join(", ")),
            ))
        }
    }
}

/// The host `wanted` names, as the API shows it.
pub fn host(api: &Api, wanted: &str) -> Result<Value> {
    if is_uuid(wanted) {
        return api.get(&api.scoped(&format!("/hosts/{wanted}"))?, &[]);
    }
    if wanted.is_empty() {
        return Err(Error::usage("the host is empty"));
    }
    let hosts = visible_hosts(api)?;
    pick_host(&hosts, wanted).cloned()
}

/// The host's id from its id, prefix or name.
pub fn host_id(api: &Api, wanted: &str) -> Result<String> {
    if is_uuid(wanted) {
        return Ok(wanted.to_owned());
    }
    let h = host(api, wanted)?;
    Ok(h["id"].as_str().unwrap_or_default().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hosts() -> Vec<Value> {
        vec![
            json!({"id": "3f2a0000-0000-4000-8000-000000000001", "short_id": "ab12cd34", "name": "dev"}),
            json!({"id": "3f2b0000-0000-4000-8000-000000000002", "short_id": "ab99zz88", "name": "ab12cd34x"}),
        ]
    }

    #[test]
    fn hosts_are_picked_by_id_short_id_name_or_unique_prefix() {
        let hosts = hosts();
        assert_eq!(pick_host(&hosts, "ab12cd34").unwrap()["name"], "dev");
        assert_eq!(pick_host(&hosts, "dev").unwrap()["short_id"], "ab12cd34");
        assert_eq!(pick_host(&hosts, "3f2b").unwrap()["name"], "ab12cd34x");
        assert_eq!(pick_host(&hosts, "ab99").unwrap()["name"], "ab12cd34x");
        let e = pick_host(&hosts, "ab").unwrap_err();
        assert_eq!((e.code.as_str(), e.exit), ("ambiguous_host", exit::INVALID));
        let e = pick_host(&hosts, "zz").unwrap_err();
        assert_eq!(e.exit, exit::NOT_FOUND);
    }

    #[test]
    fn uuids_are_told_from_names() {
        assert!(is_uuid("3f2a0000-0000-4000-8000-000000000001"));
        assert!(!is_uuid("3f2a0000"));
        assert!(!is_uuid("3f2a0000-0000-4000-8000-00000000000g"));
    }
}
