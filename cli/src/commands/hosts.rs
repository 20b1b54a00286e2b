//! Hosts: lists, details, and the actions that queue a task (followed to its end unless
//! `--no-wait`).

use serde_json::{Value, json};

use crate::Ctx;
use crate::args::{HostsCmd, WaitArgs};
use crate::client::Role;
use crate::error::{Error, Result};
use crate::output::{self, Column};

use super::tasks;

const HOST_COLUMNS: &[Column] = &[
    ("SHORT ID", "short_id"),
    ("NAME", "name"),
    ("OWNER", "username"),
    ("STATUS", "status"),
    ("MEMORY MB", "memory_mb"),
    ("EGRESS OK", "egress_health.healthy"),
    ("LAST ERROR", "last_error"),
    ("ID", "id"),
];

pub fn hosts(ctx: &Ctx, cmd: HostsCmd) -> Result<()> {
    let api = &ctx.api;
    match cmd {
        HostsCmd::List {
            user,
            status,
            search,
            page,
        } => {
            if api.role()? == Role::User && (user.is_some() || status.is_some() || search.is_some()) {
                // `/v1/user/hosts` takes no filters; they would be dropped without a word.
                return Err(Error::usage(
                    "--user, --status and --search filter the operator's list only",
                ));
            }
            let path = api.scoped("/hosts")?;
            let user = user.map(|u| super::user_id(api, &u)).transpose()?;
            let q = super::query(page, &[("user_id", &user), ("status", &status), ("q", &search)]);
            ctx.out.page(&api.get(&path, &q)?, HOST_COLUMNS)
        }
        HostsCmd::Show { host } => {
            let host = super::host(api, &host)?;
            ctx.out.object(&host)
        }
        HostsCmd::Create {
            user,
            name,
            memory_mb,
            cpu_millis,
            pids_limit,
            wait,
        } => {
            let mut body = json!({ "user_id": super::user_id(api, &user)? });
            for (k, v) in [
                ("memory_mb", memory_mb),
                ("cpu_millis", cpu_millis),
                ("pids_limit", pids_limit),
            ] {
                if let Some(v) = v {
                    body[k] = v.into();
                }
            }
            if let Some(name) = name {
                body["name"] = name.into();
            }
            let created = api.post("/v1/admin/hosts", Some(&body))?;
            let task_id = created["task_id"].as_str().unwrap_or_default().to_owned();
            let password = created["ssh_password"].clone();
            let mut ended = None;
            if wait.wait() {
                let task = api.get(&format!("/v1/admin/tasks/{task_id}"), &[])?;
                ended = Some(tasks::follow(api, &task)?);
            }
            if ctx.out.json {
                ctx.out.json(&created)?;
            } else {
                let id = created["id"].as_str().unwrap_or_default();
                let now = match ended {
                    Some(_) => api.get(&format!("/v1/admin/hosts/{id}"), &[])?,
                    None => created.clone(),
                };
                let mut shown = now.clone();
                if let Some(obj) = shown.as_object_mut() {
                    obj.remove("ssh_password");
                }
                ctx.out.object(&shown)?;
                output::write_out(&format!(
                    "SSH password (shown only now): {}\n",
                    password.as_str().unwrap_or("-")
                ))?;
                if ended.is_none() {
                    output::note(&format!("follow it with: cloud-cli-proxy tasks watch {task_id}"));
                }
            }
            ended.as_ref().map_or(Ok(()), tasks::succeeded)
        }
        HostsCmd::Traffic {
            host,
            bucket,
            since,
            until,
        } => super::traffic::host_traffic(ctx, &host, bucket, since, until),
        HostsCmd::EntryLink {
            host,
            enable,
            disable,
            expires_at,
            no_expiry,
            rotate,
        } => {
            let path = format!("/v1/admin/hosts/{}/entry-link", super::host_id(api, &host)?);
            let mut link = if rotate {
                api.post(&format!("{path}/rotate"), None)?
            } else {
                Value::Null
            };
            let mut change = serde_json::Map::new();
            if enable || disable {
                change.insert("enabled".to_owned(), enable.into());
            }
            if let Some(t) = expires_at {
                change.insert("expires_at".to_owned(), t.into());
            } else if no_expiry {
                change.insert("expires_at".to_owned(), Value::Null);
            }
            if !change.is_empty() {
                link = api.send(reqwest::Method::PATCH, &path, Some(&Value::Object(change)))?;
            } else if link.is_null() {
                link = api.get(&path, &[])?;
            }
            ctx.out.object(&link)
        }
        HostsCmd::Start { host, wait } => action(ctx, &host, "start", None, wait),
        HostsCmd::Stop { host, wait } => action(ctx, &host, "stop", None, wait),
        HostsCmd::Rebuild { host, wipe, wait } => {
            action(ctx, &host, "rebuild", Some(json!({ "wipe": wipe })), wait)
        }
        HostsCmd::Delete { host, wait } => action(ctx, &host, "delete", None, wait),
        HostsCmd::RotatePassword { host, wait } => {
            let id = super::host_id(api, &host)?;
            let answer = api.post(&format!("/v1/admin/hosts/{id}/rotate-ssh-password"), None)?;
            let ended = match wait.wait() {
                true => Some(tasks::follow(api, &answer["task"])?),
                false => None,
            };
            if ctx.out.json {
                ctx.out.json(&answer)?;
            } else {
                output::write_out(&format!(
                    "SSH password (shown only now): {}\n",
                    answer["ssh_password"].as_str().unwrap_or("-")
                ))?;
            }
            ended.as_ref().map_or(Ok(()), tasks::succeeded)
        }
    }
}

/// Queues `action` on the host and follows its task unless told not to. Start and rebuild go
/// through the tenant's own routes for a tenant; the others are the operator's.
fn action(ctx: &Ctx, host: &str, action: &str, body: Option<Value>, wait: WaitArgs) -> Result<()> {
    let api = &ctx.api;
    let id = super::host_id(api, host)?;
    let path = match action {
        "start" | "rebuild" => api.scoped(&format!("/hosts/{id}/{action}"))?,
        "delete" => format!("/v1/admin/hosts/{id}"),
        _ => format!("/v1/admin/hosts/{id}/{action}"),
    };
    let method = if action == "delete" {
        reqwest::Method::DELETE
    } else {
        reqwest::Method::POST
    };
    let task = api.send(method, &path, body.as_ref())?;
    if !wait.wait() {
        return ctx.out.object(&task);
    }
    let ended = tasks::follow(api, &task)?;
    if ctx.out.json {
        ctx.out.json(&ended)?;
    } else if action != "delete" && ended["status"] == "succeeded" {
        let now = api.get(&api.scoped(&format!("/hosts/{id}"))?, &[])?;
        output::write_out(&format!(
            "host {} ({}) is {}\n",
            output::cell(&now["short_id"]),
            output::cell(&now["name"]),
            output::cell(&now["status"])
        ))?;
    } else if ended["status"] == "succeeded" {
        output::write_out(&format!("host {host} deleted\n"))?;
    }
    tasks::succeeded(&ended)
}
